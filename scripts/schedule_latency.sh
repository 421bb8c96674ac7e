#!/usr/bin/env bash
# How close to run_at scheduled tasks start, and what a large scheduled backlog costs in memory.
# Starts a mock backend and a server on 127.0.0.1 (temp data dir), submits N tasks each due at
# its own run_at over a few seconds, waits for them, and prints p50/p95/max of started_at -
# run_at. Then adds M tasks scheduled a day ahead, in batches of 1000, and prints the server's
# RSS before and after (they wait in the store's index, not in memory).
#   BUILD_DIR=build scripts/schedule_latency.sh [N=200] [M=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
M=${2:-100000}
BIN="${BIN:-$(pwd)/${BUILD_DIR:-build}/taskserver}"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

wait_listening() {  # file -> url
  for _ in $(seq 500); do grep -q "listening on" "$1" 2>/dev/null && break; sleep 0.01; done
  sed -n 's/^listening on //p' "$1" | head -1
}

# Four backends (one slot each), so tasks due 10 ms apart do not queue behind each other.
backends=()
for i in 1 2 3 4; do
  "$BIN" mock-backend --listen 127.0.0.1:0 --latency-ms 5 >"$tmp/mock$i.out" 2>"$tmp/mock$i.err" &
  pids+=($!)
  backends+=("IMAGE_GEN_URL_$i=$(wait_listening "$tmp/mock$i.out")")
done
env "${backends[@]}" "$BIN" serve --listen 127.0.0.1:0 --data-dir "$tmp/data" --log-level warn \
  --max-queued 10000000 >"$tmp/server.out" 2>"$tmp/server.err" &
server=$!
pids+=($server)
url=$(wait_listening "$tmp/server.out")
[ -n "$url" ] || { cat "$tmp/server.err"; exit 1; }

# N tasks, due 2 s from now and 10 ms apart, in batches of 100.
python3 - "$url" "$N" >"$tmp/ids" <<'PY'
import datetime, json, sys, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
base = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
ids = []
for start in range(0, n, 100):
    tasks = []
    for i in range(start, min(n, start + 100)):
        at = base + datetime.timedelta(milliseconds=10 * i)
        tasks.append({"type": "image", "payload": {"prompt": f"s{i}"},
                      "run_at": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"})
    req = urllib.request.Request(url + "/api/v1/tasks/batch", json.dumps({"tasks": tasks}).encode(),
                                 {"Content-Type": "application/json"})
    ids += json.load(urllib.request.urlopen(req))["task_ids"]
print("\n".join(ids))
PY

python3 - "$url" "$tmp/ids" <<'PY'
import datetime, json, sys, time, urllib.request
url, path = sys.argv[1], sys.argv[2]
ids = open(path).read().split()
def t(s): return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() * 1000
lags, early = [], 0
deadline = time.time() + 120
for i in ids:
    while True:
        task = json.load(urllib.request.urlopen(f"{url}/api/v1/tasks/{i}?wait=30"))
        if task["status"] in ("DONE", "FAILED", "CANCELED") or time.time() > deadline: break
    # started_at is the start of the backend call (after the claim).
    lag = t(task["started_at"]) - t(task["run_at"])
    early += lag < 0
    lags.append(lag)
lags.sort()
pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]
print(f"scheduled tasks: {len(lags)}  start - run_at ms: p50 {pick(0.5):.0f}  p95 {pick(0.95):.0f}  "
      f"max {lags[-1]:.0f}  early {early}")
PY

# M tasks a day ahead, RSS printed at every fifth of the way (SQLite's page cache fills up to its
# cap, then RSS stays flat however many more wait).
python3 - "$url" "$M" "$server" <<'PY'
import json, sys, urllib.request
url, m, pid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
out = [f"0:{rss()}"]
step = max(1000, (m // 5) // 1000 * 1000)
for start in range(0, m, 1000):
    k = min(1000, m - start)
    body = {"tasks": [{"type": "image", "payload": {"prompt": "later"}, "delay_s": 86400}] * k}
    req = urllib.request.Request(url + "/api/v1/tasks/batch", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
    if (start + k) % step == 0 or start + k == m: out.append(f"{start + k}:{rss()}")
stats = json.load(urllib.request.urlopen(url + "/api/v1/stats/queues"))
print("scheduled a day ahead, tasks:RSS KiB  " + "  ".join(out))
print("queues: " + json.dumps(stats)[:200])
PY
