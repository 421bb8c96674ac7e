#!/usr/bin/env bash
# Benchmarks of the acknowledged-task path, on this machine, with wrk on the same cores:
#   1. GET /health: the ceiling of the HTTP layer
#   2. durable submits (POST /api/v1/tasks, keep-alive, 64 connections) with --sync full and
#      --sync normal: throughput, p50/p99 latency; with full, also submits that each carry a
#      new Idempotency-Key
#      Each run also says where the CPU went: server and everything else (wrk) per request, and
#      the share of the cores left idle
#   3. p50/p99 submit latency at half the full-sync throughput (paced by wrk's delay())
#   4. a backlog of 1,000,000 QUEUED tasks: start-up time and resident memory, against an
#      empty store
#   5. optional, with BENCH_E2E=1: the end-to-end dispatch benchmarks of scripts/bench_e2e.sh
#      (jobs/s from submit to DONE, backend utilisation, submits under dispatch load, BullMQ as
#      the peer) with N = BENCH_E2E_N tasks (default 100000), after this script's summary
# Usage: scripts/bench.sh [seconds per run, default 10]. Prints a summary table at the end.
# Every load is bounded in time and goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-10}"
# shellcheck source=scripts/load_common.sh
. scripts/load_common.sh
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$server/status"; }

# The same request (post.lua), paced: each connection waits `pace_ms` between requests.
{ cat "$tmp/post.lua"; cat <<'EOF'; } >"$tmp/paced.lua"
local pace = tonumber(os.getenv("PACE_MS"))
function delay() return pace end
EOF

# The same request, each with its own Idempotency-Key (new keys: every one creates a task).
{ cat "$tmp/post.lua"; cat <<'EOF'; } >"$tmp/keyed.lua"
local threads, n, id = 0, 0, 0
function setup(thread) threads = threads + 1; thread:set("id", threads) end
function request()
  n = n + 1
  wrk.headers["Idempotency-Key"] = "bench-" .. id .. "-" .. n
  return wrk.format()
end
EOF

# CPU ticks so far: "server busy idle" (the server process; all cores busy and idle, from
# /proc/stat).
cpu_ticks() {
  local srv; srv=$(awk '{print $14 + $15}' "/proc/$server/stat")
  awk -v srv="$srv" '$1 == "cpu" { print srv, $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat
}

# wrk_run ARGS... → "rate p50_ms p99_ms non2xx"; also writes where the CPU went to $tmp/cpu:
# "server_us_per_request other_us_per_request idle_percent" (other: everything but the server
# on this machine, which is wrk).
wrk_run() {
  local c0; c0=$(cpu_ticks)
  local out; out=$(wrk --latency "$@")
  local c1; c1=$(cpu_ticks)
  local n; n=$(awk '/requests in/{print $1}' <<<"$out")
  awk -v a="$c0" -v b="$c1" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    srv = y[1] - x[1]; busy = y[2] - x[2]; idle = y[3] - x[3]
    printf "%.1f %.1f %.1f\n", srv * 1e6 / hz / n, (busy - srv) * 1e6 / hz / n, 100 * idle / (busy + idle)
  }' >"$tmp/cpu"
  local rate p50 p99 bad
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/{print $5}' <<<"$out")
  to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0; else if (v ~ /s$/) printf "%.3f", v*1000; else print v }'; }
  echo "$rate $(to_ms "$p50") $(to_ms "$p99") ${bad:-0}"
}

echo "== $(nproc) cores, $SECS s per run, wrk -t2 -c64 on the same machine"
declare -A R
for sync in full normal; do
  start_server "$tmp/data-$sync" --sync "$sync"
  wrk -t2 -c64 -d2s "$url/health" >/dev/null  # warm-up
  read -r h_rate _ _ _ <<<"$(wrk_run -t2 -c64 -d"${SECS}s" "$url/health")"
  read -r h_srv h_other h_idle <"$tmp/cpu"
  read -r s_rate s50 s99 s_bad <<<"$(wrk_run -t2 -c64 -d"${SECS}s" -s "$tmp/post.lua" "$url/api/v1/tasks")"
  read -r s_srv s_other s_idle <"$tmp/cpu"
  R[$sync]="$h_rate $s_rate $s50 $s99 $s_bad"
  R[cpu-$sync]="$h_srv $h_other $h_idle $s_srv $s_other $s_idle"
  echo "sync=$sync: GET /health ${h_rate}/s; submits ${s_rate}/s p50 ${s50} ms p99 ${s99} ms (non-2xx: $s_bad)"
  echo "   CPU per request, server + the rest (wrk): /health ${h_srv} + ${h_other} us (idle ${h_idle}%); submits ${s_srv} + ${s_other} us (idle ${s_idle}%)"
  if [ "$sync" = full ]; then
    # Half the measured full-sync rate, spread over 64 paced connections.
    half=$(awk -v r="$s_rate" 'BEGIN{printf "%d", r/2}')
    pace=$(awk -v r="$half" 'BEGIN{printf "%d", 64000/r}')
    read -r p_rate p50 p99 _ <<<"$(PACE_MS=$pace wrk_run -t2 -c64 -d"${SECS}s" -s "$tmp/paced.lua" "$url/api/v1/tasks")"
    R[half]="$half $p_rate $p50 $p99"
    echo "sync=full at half load (target ${half}/s, ${pace} ms between requests per connection): ${p_rate}/s p50 ${p50} ms p99 ${p99} ms"
    read -r k_rate k50 k99 k_bad <<<"$(wrk_run -t2 -c64 -d"${SECS}s" -s "$tmp/keyed.lua" "$url/api/v1/tasks")"
    R[keyed]="$k_rate $k50 $k99 $k_bad"
    echo "sync=full, each submit with a new Idempotency-Key: ${k_rate}/s p50 ${k50} ms p99 ${k99} ms (non-2xx: $k_bad)"
  fi
  rows=$(sqlite3 "$tmp/data-$sync/tasks.db" "SELECT COUNT(*) FROM tasks" 2>/dev/null || echo "?")
  stop_server
  echo "   rows committed: $rows"
done

echo "== backlog of 1,000,000 queued tasks"
start_server "$tmp/data-empty"
sleep 1
rss_empty=$(rss_kb); empty_startup=$startup_ms
stop_server
"$BIN" migrate --data-dir "$tmp/data-big" >/dev/null
t0=$(date +%s)
sqlite3 "$tmp/data-big/tasks.db" <<'EOF'
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)
INSERT INTO tasks (task_id, type, payload, priority, status, created_at)
SELECT lower(hex(randomblob(13))), 'image', '{"prompt":"backlog ' || x || '"}', abs(random()) % 10,
       'QUEUED', 1700000000000 + x FROM c;
PRAGMA wal_checkpoint(TRUNCATE);
EOF
echo "   filled in $(( $(date +%s) - t0 )) s ($(du -h "$tmp/data-big/tasks.db" | cut -f1))"
start_server "$tmp/data-big"
big_startup=$startup_ms
sleep 3
rss_big=$(rss_kb)
depth=$(curl -s "$url/api/v1/stats/queues" | jq '.queues[] | select(.pool=="image") | .depth')
in_memory=$(curl -s "$url/api/v1/stats/queues" | jq '.queues[] | select(.pool=="image") | .in_memory')
# The server still takes work on top of the backlog.
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$url/api/v1/image/async" -d '{"prompt":"on top"}')
newest=$(curl -s "$url/api/v1/tasks?limit=1" | jq -r '.tasks[0].task_id')
pos=$(curl -s "$url/api/v1/tasks/$newest" | jq .queue_position)
# Its clients poll it: each GET counts what is ahead of it.
pos_ms=$(curl -s -o /dev/null -w '%{time_total}' "$url/api/v1/tasks/$newest" | awk '{printf "%.2f", $1 * 1000}')
read -r poll_rate _ poll99 _ <<<"$(wrk_run -t2 -c16 -d2s "$url/api/v1/tasks/$newest")"
# A submit burst on top of the backlog: the store is big, the path is the same.
read -r b_rate _ b99 _ <<<"$(wrk_run -t2 -c64 -d"$(( SECS / 2 > 2 ? SECS / 2 : 2 ))s" -s "$tmp/post.lua" "$url/api/v1/tasks")"
rss_after=$(rss_kb)
stop_server

read -r h_full s_full s50_full s99_full bad_full <<<"${R[full]}"
read -r h_norm s_norm s50_norm s99_norm bad_norm <<<"${R[normal]}"
read -r half_target half_rate half50 half99 <<<"${R[half]}"
read -r k_rate k50 k99 k_bad <<<"${R[keyed]}"
read -r h_srv h_other h_idle s_srv s_other s_idle <<<"${R[cpu-full]}"
# If both runs used every core, the ratio would be the inverse ratio of their CPU per request.
cpu_ratio=$(awk -v a="$h_srv" -v b="$h_other" -v c="$s_srv" -v d="$s_other" \
  'BEGIN{printf "%.2f", (a + b) / (c + d)}')
ratio=$(awk -v s="$s_full" -v h="$h_full" 'BEGIN{printf "%.2f", s/h}')
cat <<EOF

== summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, wrk -t2 -c64 -d${SECS}s on the same machine)
| measure                                   | value |
|-------------------------------------------|-------|
| GET /health (sync=full run)               | ${h_full} req/s |
| durable submits, --sync full              | ${s_full} req/s (p50 ${s50_full} ms, p99 ${s99_full} ms; non-2xx ${bad_full}) |
| ratio to GET /health of the same run      | ${ratio} |
| CPU per request, server + the rest (wrk)  | /health ${h_srv} + ${h_other} us (idle ${h_idle}%); submits ${s_srv} + ${s_other} us (idle ${s_idle}%): ratio ${cpu_ratio} with no idle |
| submits, --sync normal                    | ${s_norm} req/s (p50 ${s50_norm} ms, p99 ${s99_norm} ms; non-2xx ${bad_norm}; /health ${h_norm}) |
| --sync full at half load (${half_target}/s target) | ${half_rate} req/s, p50 ${half50} ms, p99 ${half99} ms |
| --sync full, a new Idempotency-Key each   | ${k_rate} req/s (p50 ${k50} ms, p99 ${k99} ms; non-2xx ${k_bad}) |
| start-up, empty store                     | ${empty_startup} ms |
| start-up, 1,000,000 queued                | ${big_startup} ms |
| RSS, empty store                          | $((rss_empty / 1024)) MiB |
| RSS, 1,000,000 queued (channel ${in_memory} in memory, depth ${depth}) | $((rss_big / 1024)) MiB |
| RSS after a ${SECS}-ish s submit burst on top | $((rss_after / 1024)) MiB (burst ${b_rate} req/s, p99 ${b99} ms) |
| submit on top of the backlog              | HTTP ${code}, newest task's queue_position ${pos} |
| GET of that newest task (queue_position)  | ${pos_ms} ms; polled by 16 connections ${poll_rate} req/s, p99 ${poll99} ms |
EOF

if [ "${BENCH_E2E:-0}" = 1 ]; then
  echo
  scripts/bench_e2e.sh "${BENCH_E2E_N:-100000}"
fi
