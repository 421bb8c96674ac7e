# shellcheck shell=bash disable=SC2034  # sourced: its variables are read by the sourcing script
# Sourced by the load scripts (bench.sh, profile_submit.sh): installs wrk and friends, builds,
# and gives them $BIN, a temp dir $tmp removed on exit, start_server/stop_server and
# $tmp/post.lua, the durable submit wrk sends. Every server listens on 127.0.0.1 only.
scripts/install-deps.sh bench
# BIN=/path/to/taskserver measures that binary as it is (e.g. an older build, to compare).
if [ -z "${BIN:-}" ]; then
  BUILD_DIR="${BUILD_DIR:-build}" scripts/build.sh
  BIN="$(pwd)/${BUILD_DIR:-build}/taskserver"
fi
tmp=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

start_server() {  # data_dir extra-args... ; sets $server $url $startup_ms
  local data=$1; shift
  local t0; t0=$(date +%s%N)
  "$BIN" serve --listen 127.0.0.1:0 --data-dir "$data" --log-level warn --max-queued 100000000 \
    "$@" >"$tmp/server.out" 2>"$tmp/server.err" &
  server=$!
  for _ in $(seq 600); do grep -q "listening on" "$tmp/server.out" 2>/dev/null && break; sleep 0.01; done
  url=$(sed -n 's/^listening on //p' "$tmp/server.out" | head -1)
  [ -n "$url" ] || { cat "$tmp/server.err"; echo "server did not start" >&2; exit 1; }
  startup_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
}
stop_server() { kill "$server"; wait "$server" || true; server=""; }

cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"image","payload":{"prompt":"a red fox","n":1,"size":"512x512"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
