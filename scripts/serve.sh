#!/usr/bin/env bash
# Builds Atelier and starts the manager with embedded defaults (SQLite in the data dir,
# the best available driver, the API and its docs on http://127.0.0.1:4000).
# Extra arguments go to `atelier serve`, e.g. --listen 0.0.0.0:4000 or --data-dir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo is needed: install Rust (https://rustup.rs)" >&2; exit 1; }
# The dashboard is embedded in the binary; without npm the API still works.
scripts/build-web.sh || echo "warning: the dashboard was not built; http://127.0.0.1:4000/ says how" >&2
cargo build --release --quiet -p atelier-agent -p atelier-cli
# The static agent goes into VM images (used when QEMU or Firecracker is available).
scripts/build-agent.sh >/dev/null
exec cargo run --release --quiet -p atelier-cli --bin atelier -- serve "$@"
