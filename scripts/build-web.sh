#!/usr/bin/env bash
# Builds the dashboard (web/ → web/dist), which the `atelier` binary embeds and serves at /.
# Does nothing when web/dist is newer than every input. Needs Node.js 20+ and npm.
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null; then
  echo "npm is needed to build the dashboard (apt-get install nodejs npm)" >&2
  exit 1
fi
inputs=(src index.html package.json package-lock.json vite.config.ts tsconfig.json openapi.json)
if [ -f dist/index.html ] && [ -z "$(find "${inputs[@]}" -newer dist/index.html -print -quit)" ]; then
  echo "dashboard: web/dist is up to date"
  exit 0
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build
# Release builds embed the files; a new set of hashed names must make cargo embed again.
touch ../crates/server/src/web.rs
echo "dashboard: built web/dist"
