#!/usr/bin/env bash
# Runs every test of Atelier: unit tests, the agent over each transport, black-box API
# and CLI tests against real manager processes, and the static-build check of the agent.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v npm >/dev/null; then
  scripts/build-web.sh
else
  echo "skipped: dashboard build and tests (npm not found)"
fi
cargo build --workspace --bins

# The agent must be a static binary: it runs on bare guests with whatever libc (or none).
scripts/build-agent.sh >/dev/null
agent="$(scripts/build-agent.sh --print-path)"
if readelf -l "$agent" | grep -q INTERP; then
  echo "FAIL: $agent is dynamically linked" >&2
  exit 1
fi
echo "static agent: $agent ($(stat -c %s "$agent") bytes)"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

# The dashboard: unit tests (vitest), then end to end in Chromium against a real manager.
if command -v npm >/dev/null; then
  (cd web && npm test --silent)
  if [ -x /usr/bin/chromium ]; then
    (cd web && node e2e/run.mjs)
  else
    echo "skipped: dashboard e2e (chromium is missing: apt-get install chromium)"
  fi
fi
