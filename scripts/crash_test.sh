#!/usr/bin/env bash
# A longer crash test than the one in tests/e2e: ROUNDS times, 16 concurrent clients submit
# to three slow mock backends and the server is killed with kill -9 mid-stream, then started
# again on the same data folder. At the end it drains the backlog and checks that every task
# that got a 202 exists and is DONE, and that no task already DONE at a crash ran again.
#   scripts/crash_test.sh [rounds, default 5]
# Needs a build (${BUILD_DIR:-build}/taskserver), curl, jq and the sqlite3 shell
# (scripts/install-deps.sh bench). Loads are bounded and go to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
scripts/install-deps.sh bench
BIN="$(pwd)/${BUILD_DIR:-build}/taskserver"
[ -x "$BIN" ] || BUILD_DIR="${BUILD_DIR:-build}" scripts/build.sh
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

wait_url() {  # file → url
  for _ in $(seq 500); do grep -q "listening on" "$1" 2>/dev/null && break; sleep 0.01; done
  sed -n 's/^listening on //p' "$1" | head -1
}

mocks=()
for i in 1 2 3; do
  "$BIN" mock-backend --listen 127.0.0.1:0 --latency-ms 200 --latency-jitter-ms 100 >"$tmp/mock$i.out" 2>&1 &
  pids+=($!)
  mocks+=("$(wait_url "$tmp/mock$i.out")")
done
export IMAGE_GEN_URL_1=${mocks[0]} IMAGE_GEN_URL_2=${mocks[1]} IMAGE_GEN_URL_3=${mocks[2]}
export IMAGE_GEN_URL_SLOTS=4
data="$tmp/data"

start_server() {
  "$BIN" serve --listen 127.0.0.1:0 --data-dir "$data" --log-level warn >"$tmp/server.out" 2>>"$tmp/server.err" &
  server=$!
  pids+=("$server")
  url=$(wait_url "$tmp/server.out")
  [ -n "$url" ] || { tail "$tmp/server.err"; echo "server did not start" >&2; exit 1; }
}

served() {  # prompt → times served, summed over the mocks
  for m in "${mocks[@]}"; do curl -s "$m/admin/stats"; done |
    jq -s 'map(.prompts) | add // {} ' >"$tmp/served.json"
}

: >"$tmp/acked"
: >"$tmp/done_at_crash"
for round in $(seq "$ROUNDS"); do
  start_server
  # 16 clients, each at most 200 submits; they stop when the server dies.
  clients=()
  for c in $(seq 16); do
    (
      for i in $(seq 200); do
        p="r$round-c$c-$i"
        out=$(curl -s -m 2 -w '\n%{http_code}' -XPOST "$url/api/v1/image/async" -d "{\"prompt\":\"$p\"}" 2>/dev/null) || break
        [ "$(tail -1 <<<"$out")" = 202 ] && echo "$(head -1 <<<"$out" | jq -r .task_id) $p" >>"$tmp/acked"
      done
    ) &
    clients+=($!)
  done
  sleep "$(awk -v r="$RANDOM" 'BEGIN{printf "%.2f", 1 + (r % 200) / 100}')"
  kill -9 "$server"
  wait "$server" 2>/dev/null || true
  sleep 0.2
  # What was DONE at the crash must not run again.
  sqlite3 "$data/tasks.db" "SELECT task_id FROM tasks WHERE status = 'DONE'" >>"$tmp/done_at_crash"
  served
  cp "$tmp/served.json" "$tmp/served_at_crash_$round.json"
  kill "${clients[@]}" 2>/dev/null || true
  wait "${clients[@]}" 2>/dev/null || true
  echo "round $round: $(wc -l <"$tmp/acked") acknowledged so far, $(sqlite3 "$data/tasks.db" "SELECT COUNT(*) FROM tasks WHERE status='RUNNING'") RUNNING at the crash"
done

start_server
acked=$(wc -l <"$tmp/acked")
deadline=$(( $(date +%s) + 300 ))
while :; do
  left=$(sqlite3 "$data/tasks.db" "SELECT COUNT(*) FROM tasks WHERE status IN ('QUEUED','RUNNING')")
  [ "$left" -eq 0 ] && break
  [ "$(date +%s)" -gt "$deadline" ] && { echo "FAIL: $left tasks not final after 300 s" >&2; exit 1; }
  sleep 1
done
found=0; done_count=0; missing=0
sqlite3 "$data/tasks.db" "SELECT task_id, status FROM tasks" | sort >"$tmp/final"
while read -r id _; do
  st=$(awk -F'|' -v id="$id" '$1==id{print $2}' "$tmp/final" | head -1)
  if [ -z "$st" ]; then missing=$((missing + 1)); continue; fi
  found=$((found + 1))
  [ "$st" = DONE ] && done_count=$((done_count + 1))
done <"$tmp/acked"
# A task DONE at a crash has the same served count at the end as at that crash.
served
rerun=0
for round in $(seq "$ROUNDS"); do
  rerun=$((rerun + $(jq -n --slurpfile a "$tmp/served_at_crash_$round.json" --slurpfile b "$tmp/served.json" \
    --rawfile done "$tmp/done_at_crash" --rawfile acked "$tmp/acked" '
      ($acked | split("\n") | map(select(length > 0) | split(" ") | {(.[0]): .[1]}) | add) as $prompt
      | [$done | split("\n")[] | select(length > 0) | $prompt[.] // empty
         | select(($a[0][.] // 0) > 0 and ($b[0][.] // 0) != ($a[0][.] // 0))] | length')))
done
kill "$server"; wait "$server" 2>/dev/null || true
echo "crash test: rounds=$ROUNDS acked=$acked found=$found done=$done_count missing=$missing rerun_after_done=$rerun"
[ "$found" -eq "$acked" ] && [ "$done_count" -eq "$acked" ] && [ "$rerun" -eq 0 ] || { echo FAIL >&2; exit 1; }
echo OK
