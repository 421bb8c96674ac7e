#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test. This is the README's test command and
# what CI runs (.ci/run).
#
#   scripts/test.sh              everything: the format and layout checks, the Release suite
#                                (unit + end-to-end), the curl walk
#                                through the API against a demo, the package and unit checks,
#                                the dashboard's browser test, a short fuzz run, and the whole
#                                suite again under ASan+UBSan and under ThreadSanitizer
#   scripts/test.sh --quick      the checks, the Release suite and the curl walk (development)
#   scripts/test.sh --no-tsan    everything but the TSan suite (saves ~4 min on 2 cores)
#   scripts/test.sh --sanitize   only the suite under ASan+UBSan (build-asan/)
#   scripts/test.sh --tsan       only the suite under ThreadSanitizer (build-tsan/)
#
# Any test failure or any sanitizer report (also from the server processes the end-to-end tests
# start) fails the run. Timings of each stage are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-all}"
case "$mode" in
  all|--quick|--no-tsan|--sanitize|--tsan) ;;
  --with-tsan) mode=all ;;  # the old name of the default
  *) echo "usage: scripts/test.sh [--quick|--no-tsan|--sanitize|--tsan]" >&2; exit 2 ;;
esac

timings=()
stage() {  # stage NAME COMMAND...: runs it, records how long it took
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name"
  "$@"
  timings+=("$(printf '%-44s %4d s' "$name" $((SECONDS - t0)))")
}

extras=()
case "$mode" in
  all|--no-tsan) extras=(metrics package browser fuzz) ;;
  --quick) extras=(metrics) ;;
esac
stage "install packages" scripts/install-deps.sh "${extras[@]}"

# clang-format (.clang-format: Google, 100 columns) over the sources, and the layout rules of
# the README's Development section (scripts/check_layout.sh).
style_checks() {
  clang-format --dry-run -Werror $(git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'tests/*.h' main.cpp)
  scripts/check_layout.sh
}

release_suite() {
  BUILD_DIR=build scripts/build.sh
  (cd build && ctest -j2 --output-on-failure --timeout 300)
}

api_walk() {
  local tmp demo=""
  tmp=$(mktemp -d)
  trap '[ -n "$demo" ] && kill "$demo" 2>/dev/null; [ -n "$demo" ] && wait "$demo" 2>/dev/null; rm -rf "$tmp"; trap - RETURN' RETURN
  ./build/taskserver demo --listen 127.0.0.1:0 --data-dir "$tmp/data" --mock-latency-ms 200 \
    >"$tmp/demo.out" 2>"$tmp/demo.err" &
  demo=$!
  for _ in $(seq 100); do grep -q "listening on" "$tmp/demo.out" && break; sleep 0.1; done
  local url
  url=$(sed -n 's/^listening on //p' "$tmp/demo.out" | head -1)
  [ -n "$url" ] || { cat "$tmp/demo.err"; echo "demo did not start" >&2; return 1; }
  scripts/test_async_api.sh "$url"
}

# sanitized_suite DIR SANITIZERS: builds with the sanitizers and runs the whole suite; every
# report goes to a file under DIR/sanitizer-reports, and any file there fails the run.
sanitized_suite() {
  local dir=$1 sanitizers=$2
  BUILD_DIR="$dir" BUILD_TYPE=RelWithDebInfo scripts/build.sh -DTASKSERVER_SANITIZE="$sanitizers"
  local reports="$PWD/$dir/sanitizer-reports"
  rm -rf "$reports" && mkdir -p "$reports"
  local common="log_path=$reports/report:halt_on_error=1"
  local rc=0
  (
    cd "$dir"
    export ASAN_OPTIONS="$common:detect_leaks=1:detect_stack_use_after_return=1"
    export UBSAN_OPTIONS="$common:print_stacktrace=1"
    export TSAN_OPTIONS="$common:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$PWD/../tests/tsan.supp"
    # Sanitized binaries are slower: fewer tests at once, longer timeouts.
    ctest -j2 --output-on-failure --timeout 900
  ) || rc=$?
  # Also when a test failed: a report is often why (a server that aborted on it).
  if compgen -G "$reports/report*" >/dev/null; then
    echo "sanitizer reports ($sanitizers):" >&2
    head -n 60 "$reports"/report* >&2
    return 1
  fi
  [ "$rc" -eq 0 ] || return "$rc"
  echo "no $sanitizers reports"
}

case "$mode" in
  --sanitize) stage "suite under ASan+UBSan" sanitized_suite build-asan address,undefined ;;
  --tsan) stage "suite under TSan" sanitized_suite build-tsan thread ;;
  --quick)
    stage "format and layout" style_checks
    stage "Release build + unit and e2e tests" release_suite
    stage "curl walk through the API" api_walk
    ;;
  all|--no-tsan)
    stage "format and layout" style_checks
    stage "Release build + unit and e2e tests" release_suite
    stage "curl walk through the API" api_walk
    stage "Debian package and systemd unit" env BUILD_DIR=build scripts/test_package.sh
    stage "dashboard in Chromium" env BUILD_DIR=build scripts/test_browser.sh
    stage "fuzz targets, 10 s each" scripts/fuzz.sh 10
    stage "suite under ASan+UBSan" sanitized_suite build-asan address,undefined
    if [ "$mode" = all ]; then
      stage "suite under TSan" sanitized_suite build-tsan thread
    fi
    ;;
esac

echo "== all tests passed"
printf '%s\n' "${timings[@]}"
