// The vertical slice end to end: the real binary, three real mock backends, tasks submitted over
// HTTP, results fetched over HTTP.
#include <doctest/doctest.h>

#include <atomic>
#include <thread>

#include "backend/png.h"
#include "support/harness.h"

using namespace tst;

TEST_CASE("e2e slice: 60 image tasks run round-robin on three backends and return PNGs") {
  TempDir dir;
  MockBackend b1(dir, {"--latency-ms", "30"}), b2(dir, {"--latency-ms", "30"}),
      b3(dir, {"--latency-ms", "30"});
  REQUIRE(!b1.url().empty());
  REQUIRE(!b3.url().empty());
  // Gaps in the numbering are allowed.
  Server server(dir, {},
                {{"IMAGE_GEN_URL_1", b1.url()},
                 {"IMAGE_GEN_URL_2", b2.url()},
                 {"IMAGE_GEN_URL_5", b3.url()}});
  REQUIRE(server.started());

  std::vector<std::string> ids(60);
  std::vector<std::thread> clients;
  std::atomic<int> accepted{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = c; i < 60; i += 4) {
        int status = 0;
        json t = server.post("/api/v1/image/async",
                             json{{"prompt", "prompt " + std::to_string(i)}}.dump(), &status);
        if (status == 202 && t.value("status", "") == "QUEUED") {
          ids[i] = t["task_id"];
          ++accepted;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  REQUIRE(accepted == 60);

  for (const std::string& id : ids) {
    json t = server.wait_final(id);
    REQUIRE(t.value("status", "") == "DONE");
    CHECK(t["result_url"] == "/api/images/" + id);
    auto c = server.client();
    auto png = c.Get(t["result_url"].get<std::string>().c_str());
    REQUIRE(png);
    CHECK(png->status == 200);
    CHECK(png->get_header_value("Content-Type") == "image/png");
    CHECK(ts::looks_like_png(png->body));
  }
  // Round-robin: each backend served a fair share (20 each when all stay healthy).
  for (MockBackend* b : {&b1, &b2, &b3}) {
    int64_t served = b->stats()["served"];
    CHECK(served >= 15);
    CHECK(served <= 25);
  }
  CHECK(server.stop() == 0);
}

TEST_CASE("e2e slice: the seed shapes and the generic task API agree") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "20"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());

  int status = 0;
  json t = server.post(
      "/api/v1/tasks",
      R"({"type":"image","payload":{"prompt":"a red fox","n":1,"size":"64x64","response_format":"b64_json"}})",
      &status);
  REQUIRE(status == 202);
  std::string id = t["task_id"];
  CHECK(id.size() == 26);
  CHECK(t["status"] == "QUEUED");
  CHECK(t["priority"] == 5);
  CHECK(t["payload"]["prompt"] == "a red fox");
  CHECK(t["created_at"].get<std::string>().size() == 24);  // 2026-11-24T03:17:28.123Z

  json done = server.wait_final(id);
  CHECK(done["status"] == "DONE");
  CHECK(done["attempt"] == 1);
  CHECK(done["backend"] == b.url());
  CHECK(done["result"]["content_type"] == "application/json");
  // ?task_id= on the list route is the seed's way to poll.
  json same = server.get("/api/v1/tasks?task_id=" + id, &status);
  CHECK(status == 200);
  CHECK(same["status"] == "DONE");
  // The raw backend answer, and the decoded image.
  auto c = server.client();
  auto raw = c.Get(("/api/v1/tasks/" + id + "/result").c_str());
  REQUIRE(raw);
  json answer = json::parse(raw->body);
  CHECK(answer["data"][0].contains("b64_json"));
  auto png = c.Get(("/api/images/" + id).c_str());
  REQUIRE(png);
  CHECK(ts::looks_like_png(png->body));
  // The mock saw exactly what the client sent.
  json stats = b.stats();
  CHECK(stats["prompts"]["a red fox"] == 1);
}

TEST_CASE("e2e slice: bad input gets a JSON error with the right code and writes nothing") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "10"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  auto expect_error = [&](int got, const json& body, int want, const std::string& code) {
    CHECK(got == want);
    REQUIRE(body.is_object());
    REQUIRE(body.contains("error"));
    CHECK(body["error"]["code"] == code);
    CHECK(!body["error"]["message"].get<std::string>().empty());
  };
  int status = 0;
  json r = server.post("/api/v1/image/async", "{\"prompt\": \"unterminated", &status);
  expect_error(status, r, 400, "malformed_request");
  r = server.post("/api/v1/image/async", "{}", &status);
  expect_error(status, r, 422, "invalid_field");
  CHECK(r["error"]["field"] == "prompt");
  r = server.post("/api/v1/image/async", R"({"prompt": 42})", &status);
  expect_error(status, r, 422, "invalid_field");
  r = server.post("/api/v1/tasks", R"({"type":"nosuchpool","payload":{}})", &status);
  expect_error(status, r, 422, "invalid_field");
  CHECK(r["error"]["field"] == "type");
  r = server.post("/api/v1/tasks", R"({"type":"image","payload":{"prompt":7}})", &status);
  expect_error(status, r, 422, "invalid_field");
  r = server.post("/api/v1/tasks", R"({"type":"image","payload":{"prompt":"x"},"priority":10})",
                  &status);
  expect_error(status, r, 422, "invalid_field");
  CHECK(r["error"]["field"] == "priority");
  r = server.post("/api/v1/image/async", "\x89PNG....", &status, "image/png");
  expect_error(status, r, 415, "unsupported_media_type");
  r = server.post("/api/v1/tasks", "\x89PNG....", &status, "image/png");
  expect_error(status, r, 415, "unsupported_media_type");
  r = server.post("/api/v1/image/async", "--x\r\n\r\n--x--\r\n", &status,
                  "multipart/form-data; boundary=x");
  expect_error(status, r, 415, "unsupported_media_type");
  // A multipart submit without its task part is refused (multipart is for uploading a file).
  r = server.post("/api/v1/tasks",
                  "--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n--x--\r\n",
                  &status, "multipart/form-data; boundary=x");
  expect_error(status, r, 422, "invalid_field");
  r = server.get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z", &status);
  expect_error(status, r, 404, "not_found");
  r = server.get("/api/v1/tasks/not-an-id", &status);
  expect_error(status, r, 404, "not_found");
  r = server.get("/api/images/01m85wj7s6kt1ykfemt8secf9z", &status);
  expect_error(status, r, 404, "not_found");
  r = server.get("/api/v1/nothing/here", &status);
  expect_error(status, r, 404, "not_found");
  CHECK(server.count_rows() == 0);

  // curl -d sends application/x-www-form-urlencoded: the JSON body is still accepted.
  json ok = server.post("/api/v1/image/async", R"({"prompt":"a red fox"})", &status,
                        "application/x-www-form-urlencoded");
  CHECK(status == 202);
  CHECK(ok["status"] == "QUEUED");
  CHECK(server.count_rows() == 1);
  CHECK(server.wait_final(ok["task_id"])["status"] == "DONE");
}

TEST_CASE("e2e slice: a task without a backend stays QUEUED and its result is a 409") {
  TempDir dir;
  Server server(dir);  // the image pool exists, with no backend
  REQUIRE(server.started());
  int status = 0;
  json t = server.post("/api/v1/image/async", R"({"prompt":"waits"})", &status);
  REQUIRE(status == 202);
  std::string id = t["task_id"];
  json again = server.get("/api/v1/tasks/" + id, &status);
  CHECK(again["status"] == "QUEUED");
  CHECK(again["queue_position"] == 0);
  json r = server.get("/api/images/" + id, &status);
  CHECK(status == 409);
  CHECK(r["error"]["code"] == "not_done");
  r = server.get("/api/v1/tasks/" + id + "/result", &status);
  CHECK(status == 409);
}
