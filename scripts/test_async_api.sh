#!/usr/bin/env bash
# A curl walk through the API of a running taskserver; exits non-zero on any surprise.
#   scripts/test_async_api.sh [URL]     (default http://127.0.0.1:8080)
# Needs curl and jq. Set TOKEN to send Authorization: Bearer $TOKEN.
set -euo pipefail
URL="${1:-http://127.0.0.1:8080}"
auth=()
[ -n "${TOKEN:-}" ] && auth=(-H "Authorization: Bearer $TOKEN")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
step=0
fail() { echo "FAIL step $step: $*" >&2; exit 1; }
say() { step=$((step + 1)); echo "[$step] $*"; }
# call METHOD PATH [curl args...]: the body goes to $tmp/body, the status code to $code.
call() {
  local method=$1 path=$2; shift 2
  code=$(curl -sS -o "$tmp/body" -w '%{http_code}' -X "$method" "${auth[@]}" "$@" "$URL$path") \
    || fail "curl $method $path failed"
}
expect() { [ "$code" = "$1" ] || fail "expected HTTP $1, got $code: $(head -c 300 "$tmp/body")"; }
field() { jq -r "$1" "$tmp/body"; }

say "GET /health"
call GET /health; expect 200
[ "$(field .status)" = ok ] || fail "health is not ok"

say "POST /api/v1/image/async (curl -d, the seed shape)"
call POST /api/v1/image/async -d '{"prompt":"a red fox"}'; expect 202
id=$(field .task_id)
[ "$(field .status)" = QUEUED ] || fail "a new task is not QUEUED"
[ ${#id} -eq 26 ] || fail "odd task id: $id"

say "poll GET /api/v1/tasks?task_id=$id until DONE"
seen=""
for _ in $(seq 600); do
  call GET "/api/v1/tasks?task_id=$id"; expect 200
  s=$(field .status)
  case "$s" in
    QUEUED|RUNNING) seen="$seen $s" ;;
    DONE) break ;;
    *) fail "task ended $s: $(field .error)" ;;
  esac
  sleep 0.05
done
[ "$s" = DONE ] || fail "task not DONE in time (last $s)"
echo "    states seen:$(echo "$seen" | tr ' ' '\n' | uniq | tr '\n' ' ') DONE"
result_url=$(field .result_url)
[ "$result_url" = "/api/images/$id" ] || fail "result_url is $result_url"

say "GET $result_url is a PNG"
code=$(curl -sS -o "$tmp/img" -w '%{http_code} %{content_type}' "${auth[@]}" "$URL$result_url")
[ "$code" = "200 image/png" ] || fail "image answer: $code"
[ "$(head -c 8 "$tmp/img" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "not a PNG"

say "POST /api/v1/tasks (generic shape) and GET /api/v1/tasks/{id}"
call POST /api/v1/tasks -H 'Content-Type: application/json' \
  -d '{"type":"image","payload":{"prompt":"a blue whale","n":1,"size":"256x256","response_format":"b64_json"},"priority":"high"}'
expect 202
id2=$(field .task_id)
[ "$(field .priority)" = 8 ] || fail "priority high is not 8"
call GET "/api/v1/tasks/$id2?wait=30"; expect 200
[ "$(field .status)" = DONE ] || fail "wait did not end DONE: $(field .status)"
call GET "/api/v1/tasks/$id2/result"; expect 200
[ "$(field '.data[0].b64_json | length > 0')" = true ] || fail "result holds no image"

say "bad input: malformed JSON 400, missing prompt 422, unknown type 422, image/png 415, unknown id 404"
call POST /api/v1/image/async -d '{"prompt":'; expect 400
[ "$(field .error.code)" = malformed_request ] || fail "error shape"
call POST /api/v1/image/async -d '{}'; expect 422
[ "$(field .error.field)" = prompt ] || fail "422 does not name prompt"
call POST /api/v1/tasks -d '{"type":"nope","payload":{}}'; expect 422
call POST /api/v1/tasks -H 'Content-Type: image/png' --data-binary 'PNG'; expect 415
call GET /api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z; expect 404
call GET /api/v1/tasks/..%2F..%2Fetc%2Fpasswd; expect 404
[ "$(field .error.code)" = not_found ] || fail "404 is not JSON"

say "GET /api/v1/tasks/{id}?wait=30 long-polls until the task is final"
call POST /api/v1/image/async -d '{"prompt":"a long poll"}'; expect 202
id3=$(field .task_id)
call GET "/api/v1/tasks/$id3?wait=30"; expect 200
[ "$(field .status)" = DONE ] || fail "wait returned $(field .status)"
call GET "/api/v1/tasks/$id3?wait=61"; expect 422

say "GET /api/v1/tasks/{id}/events streams QUEUED/RUNNING/DONE and ends"
call POST /api/v1/image/async -d '{"prompt":"a streamed fox"}'; expect 202
id4=$(field .task_id)
curl -sS -N -m 60 "${auth[@]}" "$URL/api/v1/tasks/$id4/events" >"$tmp/sse" || fail "event stream did not end"
states=$(sed -n 's/^data: //p' "$tmp/sse" | jq -r .status | tr '\n' ' ')
echo "    events: $states"
[ "$(sed -n 's/^data: //p' "$tmp/sse" | jq -r .status | tail -1)" = DONE ] || fail "stream did not end at DONE"

say "POST /api/v1/tasks/batch: all or nothing"
call POST /api/v1/tasks/batch -d '{"tasks":[{"type":"image","payload":{"prompt":"b1"}},{"type":"image","payload":{"prompt":"b2"},"priority":99}]}'
expect 422
[ "$(field .error.field)" = "tasks[1].priority" ] || fail "batch error does not name tasks[1].priority"
call POST /api/v1/tasks/batch -d '{"tasks":[{"type":"image","payload":{"prompt":"b1"}},{"type":"image","payload":{"prompt":"b2"},"priority":"low"}]}'
expect 202
[ "$(field '.task_ids | length')" = 2 ] || fail "batch did not return 2 ids"
b1=$(field '.task_ids[0]')

say "idempotency: a repeated key returns the first task with 200"
key="walk-$$-$RANDOM"
call POST /api/v1/tasks -H "Idempotency-Key: $key" -d '{"type":"image","payload":{"prompt":"once"}}'; expect 202
first=$(field .task_id)
call POST /api/v1/tasks -H "Idempotency-Key: $key" -d '{"type":"image","payload":{"prompt":"once"}}'; expect 200
[ "$(field .task_id)" = "$first" ] || fail "repeat made a new task"

say "DELETE /api/v1/tasks/{id} cancels; a final task answers 409"
call POST /api/v1/tasks -d '{"type":"image","payload":{"prompt":"to cancel"},"priority":0}'; expect 202
victim=$(field .task_id)
call DELETE "/api/v1/tasks/$victim"
if [ "$code" = 200 ]; then
  [ "$(field .status)" = CANCELED ] || fail "cancel did not cancel"
  call POST "/api/v1/tasks/$victim/cancel"; expect 409
else
  expect 409  # it finished first: canceling a final task is a conflict
fi

say "GET /api/v1/tasks lists newest first with a cursor"
call GET "/api/v1/tasks?limit=2"; expect 200
[ "$(field '.tasks | length')" = 2 ] || fail "limit 2 did not give 2"
cursor=$(field .next_cursor)
call GET "/api/v1/tasks?limit=2&cursor=$cursor"; expect 200
call GET "/api/v1/tasks?status=DONE&type=image&limit=1"; expect 200
[ "$(field '.tasks[0].status')" = DONE ] || fail "status filter"
call GET "/api/v1/tasks?limit=0"; expect 422

say "queue position while QUEUED"
call GET "/api/v1/tasks/$b1"; expect 200
s=$(field .status)
[ "$s" != QUEUED ] || [ "$(field '.queue_position | type')" = number ] || fail "QUEUED without queue_position"

if [ "$(curl -s "${auth[@]}" "$URL/api/v1/stats/queues" | jq -r '[.queues[].pool] | index("transcribe")')" != null ]; then
  say "POST /api/v1/audio/async: a multipart upload becomes a transcribe task"
  head -c 4096 /dev/urandom >"$tmp/clip.wav"
  call POST /api/v1/audio/async -F "file=@$tmp/clip.wav;type=audio/wav" -F language=en; expect 202
  aid=$(field .task_id)
  call GET "/api/v1/tasks/$aid?wait=30"; expect 200
  [ "$(field .status)" = DONE ] || fail "transcription ended $(field .status)"
  call GET "/api/v1/tasks/$aid/result"; expect 200
  [ "$(field '.text | contains("clip.wav")')" = true ] || fail "transcript does not name the file"
fi

say "operator endpoints: /ready, /metrics, /api/v1/backends, /api/v1/stats/*, /openapi.json"
call GET /ready
[ "$code" = 200 ] || [ "$code" = 503 ] || fail "/ready answered $code"
code=$(curl -sS -o "$tmp/metrics" -w '%{http_code}' "$URL/metrics"); expect 200
grep -q '^task_queue_size{queue="image"}' "$tmp/metrics" || fail "metrics lack task_queue_size"
grep -q '^task_success_total{task_type="image"}' "$tmp/metrics" || fail "metrics lack task_success_total"
call GET /api/v1/backends; expect 200
[ "$(field '.backends | length > 0')" = true ] || fail "no backends listed"
call GET /api/v1/stats/queues; expect 200
call GET /api/v1/stats/workers; expect 200
call GET /openapi.json; expect 200
[ "$(field .openapi)" = 3.1.0 ] || fail "not OpenAPI 3.1"
for p in /api/v1/tasks /api/v1/tasks/batch "/api/v1/tasks/{id}" "/api/v1/tasks/{id}/events" /api/v1/image/async "/api/images/{id}" /health /ready /metrics; do
  [ "$(jq --arg p "$p" '.paths | has($p)' "$tmp/body")" = true ] || fail "openapi lacks $p"
done

echo "OK: $step steps against $URL"
