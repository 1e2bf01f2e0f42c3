#!/usr/bin/env bash
# Runs every test of Atelier: unit tests, the agent over each transport, black-box API
# and CLI tests against real manager processes and real microVMs, the static-build check
# of the agent, and the dashboard (vitest, then end to end in Chromium).
#
# A test whose real part is missing (QEMU, Chromium, mmdebstrap, …) prints
# `skipped: <reason>`; the run lists every such test at the end. Under CI=true (or with
# ATELIER_REQUIRE_REAL=1) a missing part fails its test instead: in CI, what the README
# promises is tested. Only what this kind of machine cannot have (Firecracker, device-mapper)
# is skipped there, and listed as documented.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" = "true" ]; then
  export ATELIER_REQUIRE_REAL="${ATELIER_REQUIRE_REAL:-1}"
fi
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
export ATELIER_SKIP_LOG="$PWD/$target/test-skips.log"
case "$target" in /*) ATELIER_SKIP_LOG="$target/test-skips.log" ;; esac
: > "$ATELIER_SKIP_LOG"
rust_log="$target/test-output.log"

failed=()
if command -v npm >/dev/null; then
  scripts/build-web.sh
elif [ "${ATELIER_REQUIRE_REAL:-}" = "1" ]; then
  echo "FAIL: npm is missing: the dashboard cannot be built or tested" >&2
  exit 1
else
  echo "skipped: dashboard build and tests (npm not found)"
  printf 'web\tskipped\tnpm not found (apt-get install nodejs npm)\n' >> "$ATELIER_SKIP_LOG"
fi
cargo build --workspace --bins

# The workspace's lint policy ([workspace.lints] in Cargo.toml): any warning fails.
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --quiet -- -D warnings || failed+=("clippy")
elif [ "${ATELIER_REQUIRE_REAL:-}" = "1" ]; then
  echo "FAIL: cargo clippy is missing (rustup component add clippy)" >&2
  exit 1
else
  echo "skipped: clippy (cargo clippy not found)"
fi

# The agent must be a static binary: it runs on bare guests with whatever libc (or none).
scripts/build-agent.sh >/dev/null
agent="$(scripts/build-agent.sh --print-path)"
if readelf -l "$agent" | grep -q INTERP; then
  echo "FAIL: $agent is dynamically linked" >&2
  exit 1
fi
echo "static agent: $agent ($(stat -c %s "$agent") bytes)"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast 2>&1 | tee "$rust_log" || failed+=("rust tests")
else
  cargo test --workspace --no-fail-fast 2>&1 | tee "$rust_log" || failed+=("rust tests")
fi

# The dashboard: unit tests (vitest), then end to end in Chromium against a real manager.
web_log="$target/test-web.log"
: > "$web_log"
if command -v npm >/dev/null; then
  (cd web && npm test --silent) 2>&1 | tee -a "$web_log" || failed+=("dashboard unit tests")
  (cd web && node e2e/run.mjs) 2>&1 | tee -a "$web_log" || failed+=("dashboard e2e")
  (cd web && node e2e/previews.mjs) 2>&1 | tee -a "$web_log" || failed+=("preview e2e")
fi

# The summary: every skipped test with its reason, then the counts. A skipped test
# returned early, so its runner counted it as passed.
last_number() { # <what> <file> <line pattern>: the sum of "<n> <what>" on the last matching line
  sed 's/\x1b\[[0-9;]*m//g' "$2" | awk -v line="$3" -v what="$1" '
    $0 ~ line { last = $0 }
    END { n = 0; s = last
          while (match(s, "[0-9]+ " what)) { n += substr(s, RSTART) + 0; s = substr(s, RSTART + RLENGTH) }
          print n }'
}
rust_passed=$(last_number passed "$rust_log" 'tests run:|test result:')
rust_failed=$(last_number '(failed|timed out)' "$rust_log" 'tests run:|test result:')
web_passed=$(last_number passed "$web_log" '^ *Tests ')
web_failed=$(last_number failed "$web_log" '^ *Tests ')
e2e_passed=$(grep -cE '^ok: (dashboard|preview) flow' "$web_log" || true)
skipped=$(grep -c . "$ATELIER_SKIP_LOG" || true)
rust_skipped=$(grep -vcE '^(web|preview) e2e' "$ATELIER_SKIP_LOG" || true)
documented=$(grep -c $'\tdocumented\t' "$ATELIER_SKIP_LOG" || true)
passed=$(( rust_passed - rust_skipped + web_passed + e2e_passed ))
failed_count=$(( rust_failed + web_failed + (${#failed[@]} > 0 && rust_failed + web_failed == 0 ? 1 : 0) ))

echo
if [ "$skipped" -gt 0 ]; then
  echo "skipped (test: reason):"
  sort "$ATELIER_SKIP_LOG" | awk -F'\t' '{ printf "  %s: %s%s\n", $1, $3, ($2 == "documented" ? " [cannot run on this kind of host]" : "") }'
fi
echo "$passed passed, $failed_count failed, $skipped skipped ($documented cannot run on this kind of host)"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAIL: ${failed[*]}" >&2
  exit 1
fi
