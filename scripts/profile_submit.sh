#!/usr/bin/env bash
# Where the CPU of a durable submit goes, by thread: runs wrk (-t2 -c64, keep-alive) against
# POST /api/v1/tasks with --sync full and prints, per group of the server's named threads
# (ts-writer, ts-notifier, ts-http, ...), the CPU microseconds per submit and the context
# switches per second. Then the same for GET /health, the HTTP layer alone.
# Usage: scripts/profile_submit.sh [seconds, default 6]. Bounded in time, 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-6}"
# shellcheck source=scripts/load_common.sh
. scripts/load_common.sh
start_server "$tmp/data" --sync full

# snapshot: "name ticks voluntary involuntary" per thread (ticks: utime+stime, 1/CLK_TCK s)
snapshot() {
  local t
  for t in /proc/"$server"/task/*; do
    printf '%s %s %s %s\n' "$(basename "$t")" "$(tr ' ' _ <"$t/comm")" \
      "$(awk '{print $14 + $15}' "$t/stat")" \
      "$(awk '/^voluntary_ctxt_switches/{v=$2} /^nonvoluntary_ctxt_switches/{n=$2} END{print v, n}' "$t/status")"
  done | sort
}

# measure LABEL WRK-ARGS...: runs wrk, prints the per-group table
measure() {
  local label=$1; shift
  snapshot >"$tmp/before"
  local out; out=$(wrk "$@")
  snapshot >"$tmp/after"
  local n rate
  n=$(awk '/requests in/{print $1}' <<<"$out")
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  echo "== $label: $n requests, $rate/s"
  printf '%-16s %8s %12s %12s %8s\n' thread-group threads "us/request" "vol cs/s" "invol/s"
  join "$tmp/before" "$tmp/after" | awk -v n="$n" -v secs="$SECS" -v hz="$(getconf CLK_TCK)" '
    { g = $6; if (g !~ /^ts-/) g = "main/other"  # named by now if it ever ran
      threads[g]++; ticks[g] += $7 - $3; vol[g] += $8 - $4; inv[g] += $9 - $5 }
    END { for (g in threads) if (ticks[g] > 0 || vol[g] > 0)
            printf "%-16s %8d %12.1f %12.0f %8.0f\n", g, threads[g], ticks[g] * 1e6 / hz / n,
                   vol[g] / secs, inv[g] / secs }' | sort -k3 -nr
}

wrk -t2 -c64 -d2s "$url/health" >/dev/null  # warm-up: every HTTP thread has run once
measure "durable submits (--sync full)" -t2 -c64 -d"${SECS}s" -s "$tmp/post.lua" "$url/api/v1/tasks"
measure "GET /health" -t2 -c64 -d"${SECS}s" "$url/health"
