#!/usr/bin/env bash
# The first command for a newcomer: installs what is missing, builds, and starts the demo on
# 127.0.0.1:8080 with three built-in mock image backends (no GPU needed). Ctrl-C stops it.
# Extra arguments go to `taskserver demo` (e.g. --listen 127.0.0.1:9090).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec ./build/taskserver demo --listen 127.0.0.1:8080 --data-dir ./data "$@"
