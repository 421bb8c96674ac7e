#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the unit and end-to-end tests (CTest),
# then the curl walk through the API against a started demo.
#   scripts/test.sh              Release build in build/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

BUILD_DIR=build scripts/build.sh
echo "== unit and end-to-end tests"
(cd build && ctest -j2 --output-on-failure --timeout 300)

echo "== curl walk through the API (scripts/test_async_api.sh) against the demo"
tmp=$(mktemp -d)
demo=""
trap '[ -n "$demo" ] && kill "$demo" 2>/dev/null; [ -n "$demo" ] && wait "$demo" 2>/dev/null; rm -rf "$tmp"' EXIT
./build/taskserver demo --listen 127.0.0.1:0 --data-dir "$tmp/data" --mock-latency-ms 200 \
  >"$tmp/demo.out" 2>"$tmp/demo.err" &
demo=$!
for _ in $(seq 100); do grep -q "listening on" "$tmp/demo.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$tmp/demo.out" | head -1)
[ -n "$url" ] || { cat "$tmp/demo.err"; echo "demo did not start" >&2; exit 1; }
scripts/test_async_api.sh "$url"
echo "== all tests passed"
