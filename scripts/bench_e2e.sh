#!/usr/bin/env bash
# End-to-end dispatch benchmarks (submit -> commit -> queue -> worker -> backend -> DONE), on
# this machine, with the producers and the backends (`taskserver mock-backend`) on the same
# cores as the server. Sections:
#   e2e                16 producers (wrk -t16 -c16: one keep-alive connection each) submit
#                      exactly N tasks in all, --sync full, to a pool of 5 mock backends x 10
#                      slots (50 workers) at --latency-ms 0: once a pool `noop` whose backends
#                      answer small JSON (e2e-json), once the image pool, answered with PNGs
#                      (e2e-image). Jobs/s from the first submit until /api/v1/stats counts N
#                      DONE (polled every 100 ms), the producers' submit rate, the server's CPU
#                      per task by thread group and the backends' CPU per task.
#   util               10 backends x 1 slot, 2,000 tasks submitted up front (two batches), at
#                      --latency-ms 100 and 20: the share of the backends' time spent on tasks.
#   submit-under-load  durable submits (wrk -t2 -c64 -d10s, as bench.sh) to a pool no worker
#                      serves (its one backend is down) with nothing else running; while the
#                      e2e-json load runs on another pool; and while only that pool's dispatch
#                      runs (a backlog of N tasks draining, no producers).
#   big-answers        50 workers (5 mock backends x 10 slots) each receive one answer of
#                      BIG_MB MB (default 100) at once: the server's RSS idle and its peak
#                      (VmHWM) while the 50 answers stream to result files; the results'
#                      sizes are checked. Writes 50 x BIG_MB MB under $TMPDIR.
#   bullmq             the peer: BullMQ on Redis (appendonly, appendfsync always), 16 concurrent
#                      adders adding N jobs and a worker of concurrency 50 doing nothing; jobs/s
#                      from the first add to the last completion (polled every 100 ms) and the
#                      CPU of redis and of the node processes per job.
# Usage: scripts/bench_e2e.sh [N, default 100000] [section...]; sections: e2e (= e2e-json
# e2e-image), e2e-json, e2e-image, util, submit-under-load, big-answers, bullmq; default all. A section named
# twice runs twice. Prints a summary table at the end. Every process it starts is ended on exit;
# all traffic goes to 127.0.0.1; every loop is bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C
N="${1:-100000}"
[ $# -gt 0 ] && shift
if ! [[ $N =~ ^[0-9]+$ ]] || [ "$N" -lt 16 ]; then echo "usage: $0 [N >= 16] [section...]" >&2; exit 2; fi
sections=()
for s in "${@:-e2e util submit-under-load big-answers bullmq}"; do
  for x in $s; do
    case "$x" in
      e2e) sections+=(e2e-json e2e-image) ;;
      e2e-json|e2e-image|util|submit-under-load|big-answers|bullmq) sections+=("$x") ;;
      *) echo "unknown section '$x' (e2e, e2e-json, e2e-image, util, submit-under-load, big-answers, bullmq)" >&2; exit 2 ;;
    esac
  done
done
# Pools come from the config files written here only: the environment would replace their urls.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^(IMAGE_GEN_URL|WHISPER_URL|TASKSERVER_)' || true)

# shellcheck source=scripts/load_common.sh
. scripts/load_common.sh

PRODUCERS=16
BOUND_S=$((60 + N / 50))  # the longest any one wait for N tasks may last (50 tasks/s)
SUL_SECS="${SUL_SECS:-10}"
HZ=$(getconf CLK_TCK)
rows=()
pids=()  # processes started here, besides load_common's $server

e2e_cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  cleanup
}
trap e2e_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

reap() {  # PID...: waits for these processes (ended or ending) and forgets them
  local p q keep=()
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
  for q in "${pids[@]}"; do [[ " $* " == *" $q "* ]] || keep+=("$q"); done
  pids=("${keep[@]}")
}
stop_pids() {  # PID...: ends these processes and reaps them
  local p
  for p in "$@"; do kill "$p" 2>/dev/null || true; done
  reap "$@"
}
finish() {  # PID SECS: lets the process end by itself within SECS s, else ends it; reaps it
  for _ in $(seq $(($2 * 10))); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then stop_pids "$1"; else reap "$1"; fi
}

now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
calc() { awk "BEGIN { printf $1 }"; }  # calc 'FORMAT, EXPR...'
load() { cut -d' ' -f1-3 /proc/loadavg; }

# A port nothing listens on now (a connection to it is refused).
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  echo "no free port found" >&2
  return 1
}

start_mocks() {  # COUNT LATENCY_MS: sets mock_pids and mock_urls
  mock_pids=(); mock_urls=()
  local i u
  for i in $(seq "$1"); do
    "$BIN" mock-backend --listen 127.0.0.1:0 --latency-ms "$2" \
      >"$tmp/mock-$i.out" 2>"$tmp/mock-$i.err" &
    mock_pids+=("$!"); pids+=("$!")
  done
  for i in $(seq "$1"); do
    for _ in $(seq 500); do grep -q "listening on" "$tmp/mock-$i.out" 2>/dev/null && break; sleep 0.01; done
    u=$(sed -n 's/^listening on //p' "$tmp/mock-$i.out" | head -1)
    [ -n "$u" ] || { cat "$tmp/mock-$i.err" >&2; echo "mock backend $i did not start" >&2; exit 1; }
    mock_urls+=("$u")
  done
}
stop_mocks() { stop_pids "${mock_pids[@]}"; mock_pids=(); mock_urls=(); }
toml_urls() { printf '"%s", ' "$@" | sed 's/, $//'; }  # URL... -> "a", "b"

proc_ticks() {  # PID...: utime+stime of these processes, all their threads, in clock ticks
  local p sum=0 t
  for p in "$@"; do
    t=$(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')
    sum=$((sum + t))
  done
  echo "$sum"
}

# "tid name ticks" per thread of the server. The name is the thread's comm, which stat carries
# between the parentheses (the server's names have no spaces).
thread_ticks() {
  awk '{ o = index($0, "("); match($0, /\) [A-Za-z] /); name = substr($0, o + 1, RSTART - o - 1)
         split(substr($0, RSTART + 2), f, " "); print $1, name, f[12] + f[13] }' \
    /proc/"$server"/task/*/stat 2>/dev/null || true
}

# The server's CPU per task by thread group (a ts-* name, or `other`), from two thread_ticks
# snapshots; threads born in between count from zero. Prints one line per group, costliest first.
group_table() {  # BEFORE AFTER TASKS
  awk -v n="$3" -v hz="$HZ" '
    NR == FNR { b[$1] = $3; next }
    { g = ($2 ~ /^ts-/) ? $2 : "other"; c[g]++; d[g] += $3 - (($1 in b) ? b[$1] : 0) }
    END { for (g in c) printf "%-16s %7d %10.1f\n", g, c[g], d[g] * 1e6 / hz / n }' "$1" "$2" |
    sort -k3 -nr
}

totals() {  # URL: "DONE FAILED CANCELED QUEUED RUNNING" from /api/v1/stats
  local body k out=""
  body=$(curl -s --max-time 2 "$1/api/v1/stats") || body=""
  for k in DONE FAILED CANCELED QUEUED RUNNING; do
    if [[ $body =~ \"$k\":([0-9]+) ]]; then out+="${BASH_REMATCH[1]} "; else out+="? "; fi
  done
  echo "${out% }"
}

# Polls /api/v1/stats every INTERVAL s until COUNT tasks are final (DONE, FAILED or CANCELED);
# sets done_us (the clock when it saw them), final_totals, and submitted_us (when it first saw
# COUNT tasks in the store in any state). Returns 1 after BOUND_S s.
wait_final() {  # URL COUNT BOUND_S INTERVAL_S
  local deadline=$(($(date +%s) + $3)) t
  submitted_us=""
  while :; do
    read -r -a t <<<"$(totals "$1")"
    if [ -z "$submitted_us" ] && [[ ${t[0]} =~ ^[0-9]+$ ]] &&
       [ $((t[0] + t[1] + t[2] + t[3] + t[4])) -ge "$2" ]; then
      submitted_us=$(now_us)
    fi
    if [[ ${t[0]} =~ ^[0-9]+$ ]] && [ $((t[0] + t[1] + t[2])) -ge "$2" ]; then
      done_us=$(now_us); final_totals="${t[*]}"; return 0
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then done_us=$(now_us); final_totals="${t[*]}"; return 1; fi
    sleep "$4"
  done
}

# Waits (at most 20 s) until the backends of POOL in /api/v1/backends are all in STATE.
wait_backends() {  # URL POOL STATE
  local n
  for _ in $(seq 200); do
    n=$(curl -s "$1/api/v1/backends" | jq --arg p "$2" --arg s "$3" \
      '[.backends[] | select(.pool == $p)] | if length == 0 then "none" else map(select(.state != $s)) | length end')
    [ "$n" = 0 ] && return 0
    sleep 0.1
  done
  echo "pool $2: backends not $3 after 20 s" >&2
  exit 1
}

# The producers: each wrk thread has one connection and submits its share of TOTAL tasks, then
# stops, so exactly TOTAL submits are sent in all. done() prints "submitted ACCEPTED OTHER".
# wrk itself waits out its -d before it reports (a SIGINT cuts that short), so its own rate is
# not the producers' rate: that comes from the store's count of tasks.
cat >"$tmp/producers.lua" <<'LUA'
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
local total, nthreads = tonumber(os.getenv("TOTAL")), tonumber(os.getenv("THREADS"))
local threads = {}
function setup(thread)
  local k = #threads
  table.insert(threads, thread)
  thread:set("share", math.floor(total / nthreads) + ((k < total % nthreads) and 1 or 0))
end
answered, accepted = 0, 0
function response(status)
  answered = answered + 1
  if status == 202 then accepted = accepted + 1 end
  if answered >= share then wrk.thread:stop() end
end
function done()
  local ok, other = 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("accepted")
    other = other + t:get("answered") - t:get("accepted")
  end
  io.write(string.format("submitted %d other %d\n", ok, other))
end
LUA

start_producers() {  # URL BODY TOTAL: runs them in the background, output in $tmp/producers.out
  BODY=$2 TOTAL=$3 THREADS=$PRODUCERS wrk -t"$PRODUCERS" -c"$PRODUCERS" -d"${BOUND_S}s" \
    --timeout 10s -s "$tmp/producers.lua" "$1/api/v1/tasks" >"$tmp/producers.out" 2>&1 &
  producers_pid=$!; pids+=("$!")
}

noop_pool() {  # URLS...: the [pool.noop] section
  printf '[pool.noop]\nrequest_path = "/noop"\nurls = [%s]\nslots = 10\n' "$(toml_urls "$@")"
}

declare -A body=(
  [json]='{"type":"noop","payload":{"prompt":"a red fox"}}'
  [image]='{"type":"image","payload":{"prompt":"a red fox"}}'
)
e2e_runs=0

# One e2e run: KIND json (pool noop) or image (pool image).
run_e2e() {
  local kind=$1 pool
  e2e_runs=$((e2e_runs + 1))
  echo "== e2e-$kind (run $e2e_runs): $PRODUCERS producers, 5 backends x 10 slots, N=$N, load $(load)"
  start_mocks 5 0
  if [ "$kind" = json ]; then
    pool=noop; noop_pool "${mock_urls[@]}" >"$tmp/e2e.toml"
  else
    pool=image
    printf '[pool.image]\nurls = [%s]\nslots = 10\n' "$(toml_urls "${mock_urls[@]}")" >"$tmp/e2e.toml"
  fi
  start_server "$tmp/data-e2e-$e2e_runs" --sync full --config "$tmp/e2e.toml"
  wait_backends "$url" "$pool" up
  thread_ticks >"$tmp/threads.before"
  local s0 m0 t0 note=""
  s0=$(proc_ticks "$server"); m0=$(proc_ticks "${mock_pids[@]}")
  t0=$(now_us)
  start_producers "$url" "${body[$kind]}" "$N"
  wait_final "$url" "$N" "$BOUND_S" 0.1 || note=", gave up after $BOUND_S s"
  thread_ticks >"$tmp/threads.after"
  local s1 m1
  s1=$(proc_ticks "$server"); m1=$(proc_ticks "${mock_pids[@]}")
  kill -INT "$producers_pid" 2>/dev/null || true  # all submitted: wrk reports and exits
  finish "$producers_pid" 30
  local rate="?" sub other d f c q r
  [ -z "$submitted_us" ] || rate=$(calc '"%.0f", '"$N"' / (('"$submitted_us"' - '"$t0"') / 1e6)')
  read -r _ sub _ other < <(grep '^submitted' "$tmp/producers.out" || echo "submitted ? other ?")
  read -r d f c q r <<<"$final_totals"
  local ok=yes
  [ "$d" = "$N" ] || ok="no ($d of $N DONE$note)"
  local secs jobs srv mock
  secs=$(calc '"%.2f", ('"$done_us"' - '"$t0"') / 1e6')
  jobs=$(calc '"%.0f", '"$N"' / '"$secs")
  srv=$(calc '"%.1f", ('"$s1"' - '"$s0"') * 1e6 / '"$HZ"' / '"$N")
  mock=$(calc '"%.1f", ('"$m1"' - '"$m0"') * 1e6 / '"$HZ"' / '"$N")
  echo "   $N tasks in $secs s: $jobs jobs/s end to end; producers: $sub accepted, $other other; all in the store after $(calc '"%.2f", ('"${submitted_us:-0}"' - '"$t0"') / 1e6') s: ${rate}/s"
  echo "   totals: DONE $d FAILED $f CANCELED $c QUEUED $q RUNNING $r; every task DONE: $ok"
  echo "   server CPU per task by thread group (us):"
  printf '   %-16s %7s %10s\n' group threads us/task
  group_table "$tmp/threads.before" "$tmp/threads.after" "$N" | sed 's/^/   /' | tee "$tmp/groups"
  echo "   server total $srv us/task (process, all threads); backends $mock us/task (5 mock processes)"
  local top
  top=$(head -4 "$tmp/groups" | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $3}')
  rows+=("| e2e $kind (pool $pool), run $e2e_runs | **$jobs jobs/s** end to end ($N in $secs s); submits ${rate}/s; all DONE: $ok |")
  rows+=("|   CPU per task, e2e $kind run $e2e_runs | server $srv us ($top); backends $mock us |")
  [ "$kind" = json ] && e2e_json_rate=$jobs
  stop_server
  stop_mocks
}

# One utilisation run at LATENCY_MS: 10 backends x 1 slot, 2,000 tasks in two batches.
run_util() {
  local lat=$1 total=2000 backends=10
  echo "== util: $backends backends x 1 slot, --latency-ms $lat, $total tasks up front, load $(load)"
  start_mocks "$backends" "$lat"
  printf '[pool.image]\nurls = [%s]\nslots = 1\n' "$(toml_urls "${mock_urls[@]}")" >"$tmp/util.toml"
  start_server "$tmp/data-util-$lat" --sync full --config "$tmp/util.toml"
  wait_backends "$url" image up
  local b
  for b in 1 2; do
    seq $(((b - 1) * total / 2 + 1)) $((b * total / 2)) |
      awk 'BEGIN { printf "{\"tasks\":[" }
           { printf "%s{\"type\":\"image\",\"payload\":{\"prompt\":\"util %d\"}}", (NR > 1 ? "," : ""), $1 }
           END { print "]}" }' >"$tmp/batch-$b.json"
  done
  local t0 code note=""
  t0=$(now_us)
  for b in 1 2; do
    code=$(curl -s -o "$tmp/batch.out" -w '%{http_code}' -H 'Content-Type: application/json' \
      --data-binary @"$tmp/batch-$b.json" "$url/api/v1/tasks/batch")
    [ "$code" = 202 ] || { cat "$tmp/batch.out" >&2; echo "batch $b: HTTP $code" >&2; exit 1; }
  done
  # Polled every 20 ms: the runs are 4 and 20 s long at best.
  wait_final "$url" "$total" 120 0.02 || note=", gave up after 120 s"
  local d secs util peak served u p s ok=yes
  read -r d _ <<<"$final_totals"
  [ "$d" = "$total" ] || ok="no ($d of $total DONE$note)"
  secs=$(calc '"%.2f", ('"$done_us"' - '"$t0"') / 1e6')
  util=$(calc '"%.1f", 100 * '"$total * $lat"' / ('"$backends"' * '"$secs"' * 1000)')
  peak=0; served=0
  for u in "${mock_urls[@]}"; do
    read -r p s < <(curl -s "$u/admin/stats" | jq -r '"\(.peak_in_flight) \(.served)"')
    [ "$p" -gt "$peak" ] && peak=$p
    served=$((served + s))
  done
  echo "   all $total DONE: $ok, in $secs s (ideal $(calc '"%.1f", '"$total * $lat"' / '"$backends"' / 1000') s): utilisation $util%; backends served $served, peak in flight on one $peak"
  rows+=("| util, 10 x 1 slot, --latency-ms $lat, 2,000 tasks | **$util%** ($secs s, ideal $(calc '"%.1f", '"$total * $lat"' / '"$backends"' / 1000') s; all DONE: $ok; peak in flight per backend $peak) |")
  stop_server
  stop_mocks
}

# 50 answers of BIG_MB MB arriving at once on 50 workers: the server's peak RSS above idle.
run_big_answers() {
  local mb="${BIG_MB:-100}" n=50
  local pad=$((mb * 1024 * 1024))
  echo "== big-answers: $n workers each receive $mb MB at once, load $(load)"
  start_mocks 5 0
  noop_pool "${mock_urls[@]}" >"$tmp/big.toml"
  start_server "$tmp/data-big" --sync full --config "$tmp/big.toml" --max-result $((pad + 1048576))
  wait_backends "$url" noop up
  local idle peak note="" i
  idle=$(awk '/^VmRSS:/ { print $2 }' "/proc/$server/status")
  seq "$n" | awk -v pad="$pad" 'BEGIN { printf "{\"tasks\":[" }
    { printf "%s{\"type\":\"noop\",\"payload\":{\"prompt\":\"big %d\",\"pad\":%d}}", (NR > 1 ? "," : ""), $1, pad }
    END { print "]}" }' >"$tmp/big.json"
  local code t0 secs
  t0=$(now_us)
  code=$(curl -s -o "$tmp/big.out" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @"$tmp/big.json" "$url/api/v1/tasks/batch")
  [ "$code" = 202 ] || { cat "$tmp/big.out" >&2; echo "big batch: HTTP $code" >&2; exit 1; }
  wait_final "$url" "$n" $((60 + n * mb / 20)) 0.2 || note=", gave up"
  secs=$(calc '"%.1f", ('"$done_us"' - '"$t0"') / 1e6')
  peak=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server/status")
  local d sizes ok=yes
  read -r d _ <<<"$final_totals"
  [ "$d" = "$n" ] || ok="no ($d of $n DONE$note)"
  # Every result whole: its size is the answer's (head + pad + tail, the same for all but the
  # prompt's digits).
  sizes=$(curl -s "$url/api/v1/tasks?status=DONE&limit=100" | jq '[.tasks[].result.size] | min, max' | paste -sd' ')
  local above=$(((peak - idle) / 1024))
  echo "   $n x $mb MB in $secs s, all DONE: $ok; result sizes min/max $sizes; RSS idle $((idle / 1024)) MiB, peak $((peak / 1024)) MiB: $above MiB above idle"
  rows+=("| big answers: 50 workers x $mb MB at once | peak RSS **$above MiB above idle** (idle $((idle / 1024)) MiB, peak $((peak / 1024)) MiB); $n DONE in $secs s: $ok |")
  stop_server
  stop_mocks
  rm -rf "$tmp/data-big"
}

# Durable submits to the pool `parked`, whose one backend is down: LOAD idle, e2e (the e2e-json
# producers and dispatch on pool noop) or dispatch (a backlog of N noop tasks draining).
run_sul() {
  local other=$1 data="$tmp/data-sul-$1"
  echo "== submit-under-load, other load: $other, load $(load)"
  if [ "$other" = dispatch ]; then
    "$BIN" migrate --data-dir "$data" >/dev/null
    sqlite3 "$data/tasks.db" >/dev/null <<EOF
PRAGMA journal_mode = WAL;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < $N)
INSERT INTO tasks (task_id, type, payload, priority, status, created_at)
SELECT lower(hex(randomblob(13))), 'noop', '{"prompt":"a red fox"}', 5, 'QUEUED', $(date +%s%3N) + x FROM c;
PRAGMA wal_checkpoint(TRUNCATE);
EOF
  fi
  local t_start; t_start=$(now_us)
  start_server "$data" --sync full --config "$tmp/sul.toml"
  # At start a backend counts as up until its probes fail (about 4 s): till then a parked task
  # would be tried.
  wait_backends "$url" parked down
  echo "   parked's backend down after $(calc '"%.1f", ('"$(now_us)"' - '"$t_start"') / 1e6') s; totals (DONE FAILED CANCELED QUEUED RUNNING) $(totals "$url")"
  if [ "$other" = e2e ]; then
    start_producers "$url" "${body[json]}" "$N"
    sleep 1
  fi
  local d0 d1 out rate p99 bad left
  read -r d0 _ <<<"$(totals "$url")"
  out=$(wrk --latency -t2 -c64 -d"${SUL_SECS}s" -s "$tmp/parked.lua" "$url/api/v1/tasks")
  read -r d1 _ <<<"$(totals "$url")"
  left=$(curl -s "$url/api/v1/stats/queues" | jq '.queues[] | select(.pool == "noop") | .depth')
  if [ "$other" = e2e ]; then stop_pids "$producers_pid"; fi
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/{print $5}' <<<"$out")
  sul[$other]=$rate
  sul_done[$other]=$(calc '"%.0f", ('"$d1"' - '"$d0"') / '"$SUL_SECS")
  echo "   submits to parked: ${rate}/s (p99 $p99, non-2xx ${bad:-0}); noop tasks DONE meanwhile: ${sul_done[$other]}/s; noop queued at the end: $left"
  stop_server
}

run_submit_under_load() {
  start_mocks 5 0
  { noop_pool "${mock_urls[@]}"
    printf '[pool.parked]\nrequest_path = "/parked"\nurls = ["http://127.0.0.1:%s"]\n' "$(free_port)"
  } >"$tmp/sul.toml"
  printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' \
    "'{\"type\":\"parked\",\"payload\":{\"prompt\":\"a red fox\"}}'" >"$tmp/parked.lua"
  declare -gA sul=() sul_done=()
  local l
  for l in idle e2e dispatch; do run_sul "$l"; done
  stop_mocks
  local r1 r2
  r1=$(calc '"%.2f", '"${sul[e2e]}"' / '"${sul[idle]}")
  r2=$(calc '"%.2f", '"${sul[dispatch]}"' / '"${sul[idle]}")
  echo "   ratio to no load: with the e2e load $r1, with dispatch alone $r2"
  rows+=("| submit-under-load: durable submits to an unserved pool (wrk -t2 -c64 -d${SUL_SECS}s) | alone ${sul[idle]}/s; with the e2e-json load ${sul[e2e]}/s (**ratio $r1**, ${sul_done[e2e]} noop DONE/s meanwhile); with dispatch alone ${sul[dispatch]}/s (**ratio $r2**, ${sul_done[dispatch]} DONE/s) |")
}

run_bullmq() {
  local dir=scripts/peers/bullmq
  echo "== bullmq: $PRODUCERS adders, worker concurrency 50, N=$N, load $(load)"
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  local port rdir="$tmp/redis" i
  mkdir -p "$rdir"
  for i in $(seq 5); do
    port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port" --dir "$rdir" --appendonly yes \
      --appendfsync always --save "" --daemonize no --logfile "$rdir/redis.log" &
    redis_pid=$!; pids+=("$!")
    for _ in $(seq 200); do
      [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
      kill -0 "$redis_pid" 2>/dev/null || break
      sleep 0.05
    done
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
    stop_pids "$redis_pid"; redis_pid=""
  done
  [ -n "$redis_pid" ] || { tail -5 "$rdir/redis.log" >&2; echo "redis did not start" >&2; exit 1; }
  node "$dir/worker.js" "$port" 50 >"$tmp/bullmq-worker.out" 2>&1 &
  local worker_pid=$!; pids+=("$!")
  for _ in $(seq 300); do grep -q '^ready' "$tmp/bullmq-worker.out" && break; sleep 0.05; done
  grep -q '^ready' "$tmp/bullmq-worker.out" || { cat "$tmp/bullmq-worker.out" >&2; exit 1; }
  local r0 w0
  r0=$(proc_ticks "$redis_pid"); w0=$(proc_ticks "$worker_pid")
  node "$dir/producer.js" "$port" "$N" "$PRODUCERS" >"$tmp/bullmq-producer.out" 2>&1 &
  local producer_pid=$!; pids+=("$!")
  local deadline=$(($(date +%s) + BOUND_S)) n=0 nf=0 t1 note=""
  while :; do
    n=$(redis-cli -p "$port" zcard bull:bench:completed)
    nf=$(redis-cli -p "$port" zcard bull:bench:failed)
    [ $((n + nf)) -ge "$N" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || { note=", gave up after $BOUND_S s"; break; }
    sleep 0.1
  done
  t1=$(now_us)
  local r1 w1
  r1=$(proc_ticks "$redis_pid"); w1=$(proc_ticks "$worker_pid")
  local ok=yes
  [ "$n" = "$N" ] || ok="no ($n of $N completed$note)"
  finish "$producer_pid" 10
  local added t0 add_ms pcpu
  read -r _ added _ _ _ t0 _ add_ms _ pcpu < <(grep '^added' "$tmp/bullmq-producer.out" || echo "added ? failed ? first_add_ms 0 add_ms 1 cpu_us 0")
  [ "$t0" != 0 ] || { cat "$tmp/bullmq-producer.out" >&2; echo "the producer did not report" >&2; exit 1; }
  local secs jobs adds rc wc pc aof
  secs=$(calc '"%.2f", ('"$t1"' - '"$t0"' * 1000) / 1e6')
  jobs=$(calc '"%.0f", '"$N"' / '"$secs")
  adds=$(calc '"%.0f", '"$N"' * 1000 / '"$add_ms")
  rc=$(calc '"%.1f", ('"$r1"' - '"$r0"') * 1e6 / '"$HZ"' / '"$N")
  wc=$(calc '"%.1f", ('"$w1"' - '"$w0"') * 1e6 / '"$HZ"' / '"$N")
  pc=$(calc '"%.1f", '"$pcpu"' / '"$N")
  aof=$(du -sh "$rdir/appendonlydir" 2>/dev/null | cut -f1)
  stop_pids "$worker_pid"
  stop_pids "$redis_pid"
  echo "   $N jobs in $secs s: $jobs jobs/s end to end; adds $added in $add_ms ms: $adds/s; completed $n, failed $nf: all completed: $ok"
  echo "   CPU per job: redis $rc us, worker (node) $wc us, producer (node) $pc us; AOF ${aof:-?}"
  bullmq_rate=$jobs
  rows+=("| bullmq $(jq -r .version "$dir/node_modules/bullmq/package.json") on redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') (appendfsync always), 16 adders, worker concurrency 50 | **$jobs jobs/s** end to end ($N in $secs s); adds $adds/s; all completed: $ok |")
  rows+=("|   CPU per job, bullmq | redis $rc us + worker $wc us (+ producer $pc us) |")
}

echo "== $(nproc) cores (shared: figures are noisy), N=$N, sections: ${sections[*]}"
e2e_json_rate=""
bullmq_rate=""
for s in "${sections[@]}"; do
  case "$s" in
    e2e-json) run_e2e json ;;
    e2e-image) run_e2e image ;;
    util) run_util 100; run_util 20 ;;
    submit-under-load) run_submit_under_load ;;
    big-answers) run_big_answers ;;
    bullmq) run_bullmq ;;
  esac
done
if [ -n "$e2e_json_rate" ] && [ -n "$bullmq_rate" ]; then
  rows+=("| taskserver e2e json / bullmq, end to end (last runs) | $(calc '"%.2f", '"$e2e_json_rate"' / '"$bullmq_rate") |")
fi

cat <<EOF

== summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores shared with other work, load $(load); producers and backends on the same cores)
| measure | value |
|---------|-------|
EOF
printf '%s\n' "${rows[@]}"
