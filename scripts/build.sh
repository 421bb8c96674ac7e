#!/usr/bin/env bash
# Configures and builds into build/ (or $BUILD_DIR) with the given extra CMake arguments.
# Prints only warnings and errors.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${BUILD_DIR:-build}"
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@" >/dev/null
mkdir -p "$dir"
if ! cmake --build "$dir" -j"$(nproc)" >"$dir/build.log" 2>&1; then
  grep -Ev '^\[ *[0-9]+%\]|^g?make\[[0-9]\]: (Entering|Leaving)' "$dir/build.log" | tail -60 >&2
  echo "build failed (full log: $dir/build.log)" >&2
  exit 1
fi
grep -E 'warning:' "$dir/build.log" >&2 || true
