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

echo "OK: $step steps against $URL"
