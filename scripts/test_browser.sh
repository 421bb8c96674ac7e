#!/usr/bin/env bash
# Browser test of the dashboard (web/): starts `taskserver demo` on a free port with a temp data
# dir, drives Debian's chromium through playwright-core (tests/browser/dashboard.test.mjs), then
# does it again with --api-token to check the token prompt. Needs an existing build:
#   BUILD_DIR=build scripts/build.sh && BUILD_DIR=build scripts/test_browser.sh
# Screenshots go to $BUILD_DIR/screenshots/. Network: 127.0.0.1 only (plus, the first time,
# Debian's and npm's registries to install chromium and playwright-core).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build="${BUILD_DIR:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
bin="$build/taskserver"
shots="$build/screenshots"
[ -x "$bin" ] || { echo "test_browser.sh: no $bin; build first (BUILD_DIR=... scripts/build.sh)" >&2; exit 1; }

# Browser, node and npm. nodejs from another source may bundle npm (then Debian's npm package
# conflicts with it), so what is already on PATH counts.
if ! { [ -x /usr/bin/chromium ] && command -v node >/dev/null && command -v npm >/dev/null; }; then
  if ! timeout 900 scripts/install-deps.sh browser; then
    if command -v node >/dev/null && command -v npm >/dev/null && [ ! -x /usr/bin/chromium ]; then
      echo "test_browser.sh: installing chromium alone" >&2
      sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
      DEBIAN_FRONTEND=noninteractive timeout 900 $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
  fi
fi
[ -x /usr/bin/chromium ] || { echo "test_browser.sh: /usr/bin/chromium is missing" >&2; exit 1; }
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  (cd tests/browser && timeout 300 npm install --no-audit --no-fund --loglevel=error)
fi

# Scratch space (data dirs, logs) beside the build rather than in a shared /tmp.
tmp=$(mktemp -d "$build/browser-test.XXXXXX")
demo_pid=""
stop_demo() {
  [ -n "$demo_pid" ] || return 0
  kill -TERM "$demo_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$demo_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$demo_pid" 2>/dev/null || true
  wait "$demo_pid" 2>/dev/null || true
  demo_pid=""
}
trap 'stop_demo; rm -rf "$tmp"' EXIT

# start_demo NAME [extra flags]: starts the demo, sets $url.
start_demo() {
  local name=$1; shift
  mkdir -p "$tmp/$name"
  "$bin" demo --listen 127.0.0.1:0 --data-dir "$tmp/$name/data" --mock-latency-ms 2500 \
    --health-interval 300 --shutdown-grace 2 "$@" >"$tmp/$name/out" 2>"$tmp/$name/err" &
  demo_pid=$!
  url=""
  for _ in $(seq 200); do
    url=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$tmp/$name/out" 2>/dev/null | head -1 || true)
    [ -n "$url" ] && return 0
    kill -0 "$demo_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "test_browser.sh: the demo did not start:" >&2
  tail -20 "$tmp/$name/err" >&2
  exit 1
}

# run_test NAME [env...]: runs the browser test against $url; keeps the demo's log on failure.
run_test() {
  local name=$1; shift
  local rc=0
  (cd tests/browser && env DASHBOARD_URL="$url" SCREENSHOT_DIR="$shots" "$@" \
    timeout -k 5 150 node --test --test-reporter=spec dashboard.test.mjs) || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "test_browser.sh: the $name run failed (exit $rc); the demo's log:" >&2
    tail -40 "$tmp/$name/err" >&2
  fi
  return "$rc"
}

mkdir -p "$shots"
start=$SECONDS
rc=0
start_demo open
echo "== dashboard against $url"
run_test open || rc=1
stop_demo

start_demo token --api-token secret-browser-token
echo "== dashboard with --api-token against $url"
run_test token DASHBOARD_TOKEN=secret-browser-token || rc=1
stop_demo

echo "screenshots: $shots ($((SECONDS - start)) s)"
if [ "$rc" -eq 0 ]; then echo "browser test: passed"; else echo "browser test: FAILED" >&2; fi
exit "$rc"
