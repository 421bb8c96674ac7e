// Hostile request targets against the real binary: path traversal and odd ids, SQL
// metacharacters in query parameters. What a refusal must look like is in support/hostile.h.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "core/base64.h"
#include "support/harness.h"
#include "support/hostile.h"
#include "support/raw_http.h"

using namespace tst;
using namespace tst::hostile;

TEST_CASE("hostile: path traversal and odd ids get 404 JSON and never a file") {
  Fixture f;
  std::vector<std::string> ids = {"..%2F..%2Ftasks.db",
                                  "%2e%2e",
                                  "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                  "..%252f..%252ftasks.db",
                                  "..%5c..%5ctasks.db",
                                  "%00",
                                  "%ff%fe",
                                  "%c0%af",
                                  std::string(5000, 'a'),
                                  "'%20OR%20'1'%3D'1",
                                  "1%3BDROP%20TABLE%20tasks",
                                  "%27%29%3B--",
                                  "%22%3E%3Cscript%3E",
                                  "01M85WJ7S6KT1YKFEMT8SECF9Z",
                                  "01m85wj7s6kt1ykfemt8secf9z%00"};
  std::vector<Case> cases;
  for (const std::string& id : ids) {
    std::string shown = id.substr(0, 40);
    cases.push_back({"GET task " + shown, get("/api/v1/tasks/" + id), {404}});
    cases.push_back({"GET result " + shown, get("/api/v1/tasks/" + id + "/result"), {404}});
    cases.push_back({"GET image " + shown, get("/api/images/" + id), {404}});
    cases.push_back({"DELETE " + shown, request("DELETE", "/api/v1/tasks/" + id, ""), {404}});
  }
  for (const char* path :
       {"/api/v1/tasks/../../etc/passwd", "/api/v1/tasks/../tasks.db", "/web/..%2F..%2Ftasks.db",
        "/web/%2e%2e%2fCMakeLists.txt", "/web/../../main.cpp", "/web/..", "/web/.",
        "/api/v1/tasks?task_id=../../etc/passwd", "/api/v1/tasks?task_id=%27%20OR%201%3D1",
        "/api/v1/tasks/x/events/../../../result", "//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd"}) {
    cases.push_back({std::string("GET ") + path, get(path), {404}});
  }
  cases.push_back({"POST cancel traversal", post("/api/v1/tasks/..%2f..%2f/cancel", ""), {404}});
  cases.push_back({"PUT tasks", request("PUT", "/api/v1/tasks", kTask), {404, 405}});
  cases.push_back({"PATCH task", request("PATCH", "/api/v1/tasks/x", "{}"), {404, 405}});
  cases.push_back({"unknown method", request("FROB", "/api/v1/tasks", ""), {400, 405, 0}});
  // (A file served by mistake would fail check_refused: it is not a JSON error.)
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);
}

TEST_CASE("hostile: SQL metacharacters in query parameters are refused or harmless") {
  Fixture f;
  const std::string L = "/api/v1/tasks?";
  std::string neg_cursor = ts::base64url_encode("t1:-1");
  std::string sql_cursor = ts::base64url_encode("t1:1 OR 1=1");
  std::vector<Case> cases = {
      {"status SQL", get(L + "status=DONE%27%20OR%20%271%27%3D%271"), {422}},
      {"status unknown", get(L + "status=PENDING"), {422}},
      {"status invalid UTF-8", get(L + "status=%ff"), {422}},
      {"type SQL", get(L + "type=image%27%20--"), {422}},
      {"type NUL", get(L + "type=image%00"), {422}},
      {"type traversal", get(L + "type=..%2F..%2Fetc"), {422}},
      {"limit SQL", get(L + "limit=1%3BDROP%20TABLE%20tasks"), {422}},
      {"limit huge", get(L + "limit=99999999999999999999"), {422}},
      {"limit -5", get(L + "limit=-5"), {422}},
      {"limit 0", get(L + "limit=0"), {422}},
      {"limit 1e3", get(L + "limit=1e3"), {422}},
      {"limit hex", get(L + "limit=0x10"), {422}},
      {"limit empty", get(L + "limit="), {422}},
      {"cursor SQL", get(L + "cursor=%27%20OR%201%3D1%20--"), {422}},
      {"cursor negative seq", get(L + "cursor=" + neg_cursor), {422}},
      {"cursor seq with SQL", get(L + "cursor=" + sql_cursor), {422}},
      {"cursor 100 chars", get(L + "cursor=" + std::string(100, 'A')), {422}},
      {"cursor with padding", get(L + "cursor=dDE6NDI%3D"), {422}},
      {"wait abc", get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z?wait=abc"), {422}},
      {"wait 61", get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z?wait=61"), {422}},
      {"wait -1", get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z?wait=-1"), {422}},
      {"events after SQL", get("/api/v1/tasks/x/events?after=1%20OR%201"), {404}},
      {"query of 7000 bytes", get(L + "type=" + std::string(7000, 'a')), {422, 414}},
      {"URI of 20000 bytes", get(L + "type=" + std::string(20000, 'a')), {414, 400, 0}},
  };
  int64_t accepted = run_cases(f.port, cases);
  check_server_fine(f.server, accepted);

  // Metacharacters where they are allowed (payload, idempotency key) are stored as text.
  std::string key = "' OR '1'='1'; DROP TABLE tasks; --";
  json body = {{"type", "image"},
               {"payload", {{"prompt", "Robert'); DROP TABLE tasks;--"}}},
               {"idempotency_key", key}};
  int status = 0;
  json t = f.server.post("/api/v1/tasks", body.dump(), &status);
  REQUIRE(status == 202);
  json again = f.server.post("/api/v1/tasks", body.dump(), &status);
  CHECK(status == 200);
  CHECK(again["task_id"] == t["task_id"]);
  json by_header = f.server.post("/api/v1/image/async", R"({"prompt":"x"})", &status,
                                 "application/json", {{"Idempotency-Key", key}});
  CHECK(status == 200);
  CHECK(by_header["task_id"] == t["task_id"]);
  json list = f.server.get("/api/v1/tasks?type=image&limit=5", &status);
  CHECK(status == 200);
  CHECK(list["tasks"].size() == 1);
  check_server_fine(f.server, accepted + 1);
  json done = f.server.wait_final(t["task_id"]);
  CHECK(done["status"] == "DONE");
  CHECK(done["idempotency_key"] == key);
}
