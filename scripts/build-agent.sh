#!/usr/bin/env bash
# Builds the static `atelier-agent` for guests (glibc statically linked, no loader).
# --print-path prints where the binary is instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
target="x86_64-unknown-linux-gnu"
dir="${CARGO_TARGET_DIR:-$PWD/target}/$target/agent"
if [ "${1:-}" = "--print-path" ]; then
  echo "$dir/atelier-agent"
  exit 0
fi
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet -p atelier-agent --bin atelier-agent \
  --profile agent --target "$target"
echo "$dir/atelier-agent"
