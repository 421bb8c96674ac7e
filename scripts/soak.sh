#!/usr/bin/env bash
# Soak test: the release binary with three mock backends (50 ms latency; one fails 20% of its
# requests, one is flipped unhealthy and back every 20 s) under mixed submits, polls, lists
# and cancels at a bounded rate for N minutes, all on 127.0.0.1. Samples the server's RSS and
# open fds, and from /metrics the malloc heap in use (process_heap_inuse_bytes) and SQLite's part
# of it (store_sqlite_memory_bytes), at the start, every minute and at the end; then waits for
# the backlog to drain and checks that every submitted task reached DONE, FAILED or CANCELED.
# Memory is judged after the warm-up, without SQLite's heap: its page caches grow with the
# database up to their configured bound (64 MiB for the write connection, 2 MiB per reader) and
# that is not a leak. The heap in use is the precise measure (a leak of ours grows it); RSS also
# holds what malloc keeps after a free, so it gets a looser bound.
#   scripts/soak.sh [minutes]          default 10; binary: ${BUILD_DIR:-build}/taskserver
# Knobs (environment): SOAK_WORKERS (3 client loops), SOAK_PAUSE (0.05 s between a loop's
# rounds), SOAK_MAX_TASKS (50000), SOAK_DRAIN_S (300), SOAK_GROWTH_PCT (20: growth under this
# percentage is fine), SOAK_HEAP_NOISE_KB (2048) and SOAK_RSS_NOISE_KB (16384: growth under
# these is noise whatever the percentage), SOAK_FD_SLACK (2: the reader pool keeps up to 8
# connections and may open one late; a leak per request would be thousands), SOAK_WARMUP_MIN (2
# for runs of 5 minutes or more, else 1), SOAK_KEEP=1 keeps the work folder.
# Exits 1 when a task is not final, the server died or answered 5xx, the heap or RSS grew beyond
# noise after the warm-up, or open fds grew.
set -euo pipefail
export LC_ALL=C  # sort and join must agree on the order
cd "$(dirname "$0")/.."
minutes="${1:-10}"
[[ "$minutes" =~ ^[0-9]+$ && "$minutes" -gt 0 ]] || { echo "usage: scripts/soak.sh [minutes]" >&2; exit 2; }
bin="${BUILD_DIR:-build}/taskserver"
[ -x "$bin" ] || { echo "soak.sh: no $bin (build it: BUILD_DIR=${BUILD_DIR:-build} scripts/build.sh)" >&2; exit 2; }
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "soak.sh: needs $tool (scripts/install-deps.sh)" >&2; exit 2; }
done
workers="${SOAK_WORKERS:-3}"
pause="${SOAK_PAUSE:-0.05}"
max_tasks="${SOAK_MAX_TASKS:-50000}"
drain_s="${SOAK_DRAIN_S:-300}"
growth_pct="${SOAK_GROWTH_PCT:-20}"
heap_noise="${SOAK_HEAP_NOISE_KB:-2048}"
rss_noise="${SOAK_RSS_NOISE_KB:-16384}"
fd_slack="${SOAK_FD_SLACK:-2}"

work="$(mktemp -d /tmp/taskserver-soak-XXXXXX)"
pids=()  # every process this script started, ended by id on exit
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${SOAK_KEEP:-}" ]; then echo "work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits for "listening on <url>" in a process's stdout; prints the URL.
listening_url() {
  local out="$1" i
  for i in $(seq 1 300); do
    if grep -q 'listening on ' "$out" 2>/dev/null; then
      grep -m1 -o 'listening on [^ ]*' "$out" | cut -d' ' -f3
      return 0
    fi
    sleep 0.1
  done
  echo "soak.sh: no 'listening on' in $out" >&2
  cat "${out%.out}.err" >&2 || true
  return 1
}

mock_urls=()
for n in 1 2 3; do
  extra=()
  [ "$n" -eq 2 ] && extra=(--fail-rate 0.2)
  "$bin" mock-backend --listen 127.0.0.1:0 --latency-ms 50 "${extra[@]}" \
    >"$work/mock$n.out" 2>"$work/mock$n.err" &
  pids+=($!)
  mock_urls+=("$(listening_url "$work/mock$n.out")")
done
flaky="${mock_urls[2]}"

IMAGE_GEN_URL_1="${mock_urls[0]}" IMAGE_GEN_URL_2="${mock_urls[1]}" IMAGE_GEN_URL_3="${mock_urls[2]}" \
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --health-interval 500 \
  >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
pids+=("$server_pid")
url="$(listening_url "$work/server.out")"
echo "soak: $minutes min against $url (pid $server_pid), backends ${mock_urls[*]}" >&2

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
# The fewest open fds over five looks 200 ms apart: a health probe or a request in flight holds
# one for a moment, a leak holds it for good.
fd_count() {
  local least=999999 i n
  for i in 1 2 3 4 5; do
    n=$(find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    [ "$n" -lt "$least" ] && least=$n
    sleep 0.2
  done
  echo "$least"
}
mem_kb() {  # "SQLITE-kB HEAP-kB" from the server's /metrics
  curl -sf -m 10 "$url/metrics" | awk '
    $1 == "store_sqlite_memory_bytes" {sql = $2}
    $1 == "process_heap_inuse_bytes" {heap = $2}
    END {printf "%d %d\n", sql / 1024, heap / 1024}'
}
alive() { kill -0 "$server_pid" 2>/dev/null; }
totals() { curl -sf -m 10 "$url/api/v1/stats" | jq -c '.totals'; }

start_ts=$(date +%s)
end_ts=$((start_ts + minutes * 60))
rss_start=$(rss_kb)
fds_start=$(fd_count)
read -r sql_start heap_start < <(mem_kb)
rss_max=$rss_start
echo "0 $rss_start $fds_start $sql_start $heap_start" >"$work/samples"

# One client loop: each round submits a task (some with an idempotency key, sent twice: the
# second must return the same task), polls a recent one, and now and then cancels one or lists.
client() {
  local n="$1" round=0 last="" code resp id key prio
  local ids="$work/ids.$n" bad="$work/bad.$n" canceled="$work/canceled.$n"
  : >"$ids"; : >"$bad"; : >"$canceled"
  while [ "$(date +%s)" -lt "$end_ts" ]; do
    round=$((round + 1))
    [ "$(cat "$work"/ids.* | wc -l)" -ge "$max_tasks" ] && break
    prio=$((RANDOM % 10))
    key=""
    [ $((round % 5)) -eq 0 ] && key="soak-$n-$round"
    if [ $((round % 3)) -eq 0 ]; then
      resp=$(curl -s -m 10 -w '\n%{http_code}' -H 'Content-Type: application/json' \
        ${key:+-H "Idempotency-Key: $key"} \
        --data "{\"prompt\":\"soak $n $round\",\"priority\":$prio}" "$url/api/v1/image/async" || echo $'\n000')
    else
      resp=$(curl -s -m 10 -w '\n%{http_code}' -H 'Content-Type: application/json' \
        --data "{\"type\":\"image\",\"payload\":{\"prompt\":\"soak $n $round\"},\"priority\":$prio,\"max_attempts\":3${key:+,\"idempotency_key\":\"$key\"}}" \
        "$url/api/v1/tasks" || echo $'\n000')
    fi
    code="${resp##*$'\n'}"
    id=""
    [[ "$resp" =~ \"task_id\":\"([0-9a-z]+)\" ]] && id="${BASH_REMATCH[1]}"
    if [ "$code" = 202 ] && [ -n "$id" ]; then
      echo "$id" >>"$ids"
      last="$id"
      if [ -n "$key" ]; then
        resp=$(curl -s -m 10 -w '\n%{http_code}' -H 'Content-Type: application/json' \
          -H "Idempotency-Key: $key" --data "{\"prompt\":\"soak $n $round again\"}" \
          "$url/api/v1/image/async" || echo $'\n000')
        [[ "${resp##*$'\n'}" = 200 && "$resp" == *"\"task_id\":\"$id\""* ]] ||
          echo "idempotent resubmit: ${resp//$'\n'/ }" >>"$bad"
      fi
    elif [ "$code" != 429 ]; then
      echo "submit $code: ${resp//$'\n'/ }" >>"$bad"
    fi
    if [ -n "$last" ] && [ $((round % 2)) -eq 0 ]; then
      code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$url/api/v1/tasks/$last" || echo 000)
      [ "$code" = 200 ] || echo "poll $last: $code" >>"$bad"
    fi
    if [ -n "$last" ] && [ $((round % 10)) -eq 0 ]; then
      code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X DELETE "$url/api/v1/tasks/$last" || echo 000)
      case "$code" in
        200) echo "$last" >>"$canceled" ;;
        409) ;;  # already final
        *) echo "cancel $last: $code" >>"$bad" ;;
      esac
    fi
    if [ $((round % 20)) -eq 0 ]; then
      code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$url/api/v1/tasks?limit=50&status=QUEUED" || echo 000)
      [ "$code" = 200 ] || echo "list: $code" >>"$bad"
    fi
    sleep "$pause"
  done
}

# Flips the third backend unhealthy and back every 20 s while the load runs.
flipper() {
  local ok=false
  while [ "$(date +%s)" -lt "$end_ts" ]; do
    curl -s -m 5 -o /dev/null -X POST "$flaky/admin/health?ok=$ok" || true
    [ "$ok" = false ] && ok=true || ok=false
    sleep 20
  done
  curl -s -m 5 -o /dev/null -X POST "$flaky/admin/health?ok=true" || true
}

load_pids=()
for n in $(seq 1 "$workers"); do
  client "$n" &
  load_pids+=($!)
  pids+=($!)
done
flipper &
load_pids+=($!)
pids+=($!)

minute=0
while [ "$(date +%s)" -lt "$end_ts" ]; do
  left=$((end_ts - $(date +%s)))
  [ "$left" -gt 60 ] && left=60
  [ "$left" -gt 0 ] && sleep "$left"
  alive || { echo "soak: the server died" >&2; cat "$work/server.err" | tail -20 >&2; exit 1; }
  minute=$((minute + 1))
  rss=$(rss_kb)
  fds=$(fd_count)
  read -r sql heap < <(mem_kb)
  events=$(curl -sf -m 10 "$url/api/v1/stats" | jq ".last_event_id // 0" || echo 0)
  [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  echo "$minute $rss $fds $sql $heap $events" >>"$work/samples"
  printf 'soak: minute %d: %d submitted, RSS %d MB, heap %d MB (SQLite %d MB), %d fds, totals %s\n' \
    "$minute" "$(cat "$work"/ids.* 2>/dev/null | wc -l)" $((rss / 1024)) $((heap / 1024)) \
    $((sql / 1024)) "$fds" "$(totals || echo '?')" >&2
done
for p in "${load_pids[@]}"; do wait "$p" || true; done

# Drain: every task reaches a final state.
echo "soak: load over; waiting up to ${drain_s}s for the backlog to drain" >&2
drained=no
for i in $(seq 1 "$drain_s"); do
  t=$(totals || echo '{}')
  if [ "$(jq '(.QUEUED // 1) + (.RUNNING // 1)' <<<"$t")" = 0 ]; then
    drained=yes
    break
  fi
  sleep 1
done
alive || { echo "soak: the server died" >&2; tail -20 "$work/server.err" >&2; exit 1; }
sleep 2  # let the last connections of the load close before the final count
rss_end=$(rss_kb)
fds_end=$(fd_count)
read -r sql_end heap_end < <(mem_kb)
[ "$rss_end" -gt "$rss_max" ] && rss_max=$rss_end
echo "end $rss_end $fds_end $sql_end $heap_end" >>"$work/samples"

# Every task the server listed, with its state (newest first, cursor pages).
: >"$work/listed"
cursor=""
while :; do
  page=$(curl -sf -m 30 "$url/api/v1/tasks?limit=1000${cursor:+&cursor=$cursor}")
  jq -r '.tasks[] | "\(.task_id) \(.status)"' <<<"$page" >>"$work/listed"
  cursor=$(jq -r '.next_cursor // empty' <<<"$page")
  [ -n "$cursor" ] || break
done
sort -u "$work"/ids.* >"$work/submitted"
sort -k1,1 -u "$work/listed" >"$work/listed.sorted"
join "$work/submitted" "$work/listed.sorted" >"$work/joined" || true
submitted=$(wc -l <"$work/submitted")
missing=$((submitted - $(wc -l <"$work/joined")))
count_state() { awk -v s="$1" '$2 == s' "$work/joined" | wc -l; }
done_n=$(count_state DONE)
failed_n=$(count_state FAILED)
canceled_n=$(count_state CANCELED)
not_final=$((submitted - done_n - failed_n - canceled_n))
cancel_calls=$(cat "$work"/canceled.* | sort -u | wc -l)
bad_calls=$(cat "$work"/bad.* | wc -l)

# Warm-up: the event ring (16384 events of ~200 bytes, about 4 per task) and
# SQLite's page caches fill in the first minutes of load; growth is judged from the end of the
# warm-up on: by default the later of 2 minutes (1 for short runs) and the first sample after
# the ring was full.
warm_min="${SOAK_WARMUP_MIN:-$([ "$minutes" -ge 5 ] && echo 2 || echo 1)}"
ring_filling=no
if [ -z "${SOAK_WARMUP_MIN:-}" ]; then
  ring_full=$(awk '$1 != "end" && $6 > 16384 {print $1; exit}' "$work/samples")
  # A ring still filling at the end grows the heap by design: its growth is not judged then.
  [ -z "$ring_full" ] && ring_filling=yes
  [ -n "$ring_full" ] && [ "$ring_full" -gt "$warm_min" ] && warm_min=$ring_full
fi
rss_warm=$(awk -v m="$warm_min" '$1 == m {print $2}' "$work/samples")
fds_warm=$(awk -v m="$warm_min" '$1 == m {print $3}' "$work/samples")
sql_warm=$(awk -v m="$warm_min" '$1 == m {print $4}' "$work/samples")
heap_warm=$(awk -v m="$warm_min" '$1 == m {print $5}' "$work/samples")
if [ "$minutes" -le "$warm_min" ] || [ -z "$rss_warm" ]; then
  rss_warm=$rss_start
  fds_warm=$fds_start
  sql_warm=$sql_start
  heap_warm=$heap_start
fi
# What is not SQLite's: the part a leak of ours would grow. SQLite's heap is taken at its
# highest after the warm-up for RSS: what it frees late stays in RSS as malloc's.
own_heap_warm=$((heap_warm - sql_warm))
own_heap_end=$((heap_end - sql_end))
heap_growth=$((own_heap_end - own_heap_warm))
sql_max=$(awk -v m="$warm_min" '$1 != "end" && $1 >= m && $4 > x {x = $4} END {print x + 0}' "$work/samples")
[ "$sql_end" -gt "$sql_max" ] && sql_max=$sql_end
own_rss_warm=$((rss_warm - sql_warm))
own_rss_end=$((rss_end - sql_max))
rss_growth=$((own_rss_end - own_rss_warm))
grew() {  # grew GROWTH BASE NOISE: beyond noise and beyond the percentage
  [ "$1" -gt "$3" ] && [ $(($1 * 100)) -gt $(($2 * growth_pct)) ]
}

echo
echo "soak summary ($(date -u +%FT%TZ), binary $bin)"
printf '  %-34s %s\n' "minutes of load" "$minutes" \
  "tasks submitted" "$submitted" \
  "  DONE" "$done_n" \
  "  FAILED" "$failed_n" \
  "  CANCELED" "$canceled_n (cancel calls answered 200: $cancel_calls)" \
  "  not final / missing" "$not_final / $missing" \
  "backlog drained" "$drained" \
  "bad answers (5xx, wrong code)" "$bad_calls" \
  "RSS start / after warm-up / end / max" "$((rss_start / 1024)) / $((rss_warm / 1024)) / $((rss_end / 1024)) / $((rss_max / 1024)) MB (warm-up: $warm_min min)" \
  "heap in use start / warm-up / end" "$((heap_start / 1024)) / $((heap_warm / 1024)) / $((heap_end / 1024)) MB" \
  "  of which SQLite's" "$((sql_start / 1024)) / $((sql_warm / 1024)) / $((sql_end / 1024)) MB (most after warm-up $((sql_max / 1024)) MB)" \
  "  without SQLite, warm-up / end" "$own_heap_warm / $own_heap_end kB" \
  "RSS without SQLite, warm-up / end" "$((own_rss_warm / 1024)) / $((own_rss_end / 1024)) MB" \
  "open fds start / after warm-up / end" "$fds_start / $fds_warm / $fds_end"
echo "  samples (minute RSS-kB fds SQLite-kB heap-kB events):"
sed 's/^/    /' "$work/samples"

status=0
if [ "$not_final" -ne 0 ] || [ "$missing" -ne 0 ] || [ "$drained" != yes ]; then
  echo "FAIL: $not_final tasks not final, $missing missing from the list" >&2
  awk '$2 != "DONE" && $2 != "FAILED" && $2 != "CANCELED"' "$work/joined" | head -5 >&2
  status=1
fi
if [ "$bad_calls" -ne 0 ]; then
  echo "FAIL: $bad_calls bad answers, e.g.:" >&2
  cat "$work"/bad.* | head -5 >&2
  status=1
fi
if [ "$minutes" -le "$warm_min" ]; then
  echo "soak: RSS and fd growth not judged: the run is no longer than the ${warm_min} min warm-up"
else
  if [ "$ring_filling" = yes ]; then
    echo "soak: heap and RSS growth not judged: the event ring (16384 events) was still filling at the end"
  else
    if grew "$heap_growth" "$own_heap_warm" "$heap_noise"; then
      echo "FAIL: heap in use without SQLite's grew from $own_heap_warm kB (after warm-up) to $own_heap_end kB (> ${growth_pct}% and > ${heap_noise} kB)" >&2
      status=1
    fi
    if grew "$rss_growth" "$own_rss_warm" "$rss_noise"; then
      echo "FAIL: RSS without SQLite's heap grew from $own_rss_warm kB (after warm-up) to $own_rss_end kB (> ${growth_pct}% and > ${rss_noise} kB)" >&2
      status=1
    fi
  fi
  if [ "$fds_end" -gt $((fds_warm + fd_slack)) ]; then
    echo "FAIL: open fds grew from $fds_warm (after warm-up) to $fds_end:" >&2
    for f in /proc/"$server_pid"/fd/*; do readlink "$f"; done 2>/dev/null | sort | uniq -c >&2
    status=1
  fi
fi
[ "$status" -eq 0 ] && echo "soak: OK"
exit "$status"
