// Issue 19 end to end, over real HTTP against the real binary: labels and their filters, seed
// 002's submit shape, retrying FAILED and CANCELED tasks, and scheduled tasks across a restart.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <thread>

#include "support/harness.h"

using namespace tst;

namespace {

std::string submit_json(const Server& server, const json& task) {
  int status = 0;
  json t = server.post("/api/v1/tasks", task.dump(), &status);
  REQUIRE_MESSAGE(status == 202, t.dump());
  return t["task_id"];
}

// Every task of a filtered list, page by page; fails on a repeat or an order break.
std::vector<std::string> all_pages(const Server& server, const std::string& query, int limit) {
  std::vector<std::string> ids;
  std::set<std::string> seen;
  std::string cursor;
  std::string previous = "~";
  for (int pages = 0; pages < 50; ++pages) {
    std::string path = "/api/v1/tasks?" + query + "&limit=" + std::to_string(limit) +
                       (cursor.empty() ? "" : "&cursor=" + cursor);
    int status = 0;
    json page = server.get(path, &status);
    REQUIRE_MESSAGE(status == 200, page.dump());
    CHECK(page["tasks"].size() <= static_cast<size_t>(limit));
    for (const json& t : page["tasks"]) {
      std::string id = t["task_id"];
      CHECK(seen.insert(id).second);
      CHECK(id < previous);  // ids are time-ordered: newest first
      previous = id;
      ids.push_back(id);
    }
    if (page["next_cursor"].is_null()) break;
    cursor = page["next_cursor"];
  }
  return ids;
}

}  // namespace

TEST_CASE("e2e labels: label filters page correctly") {
  TempDir dir;
  Server server(dir);  // no backend: everything stays QUEUED
  REQUIRE(server.started());
  std::set<std::string> kb1, kb1_gold, kb2;
  for (int i = 0; i < 60; ++i) {
    json task = {{"type", "image"}, {"payload", {{"prompt", "p" + std::to_string(i)}}}};
    if (i % 3 == 0) task["labels"] = {{"kb_id", "kb_1"}, {"tier", i % 2 ? "gold" : "free"}};
    if (i % 3 == 1) task["labels"] = {{"kb_id", "kb_2"}};
    std::string id = submit_json(server, task);
    if (i % 3 == 0) kb1.insert(id);
    if (i % 3 == 0 && i % 2) kb1_gold.insert(id);
    if (i % 3 == 1) kb2.insert(id);
  }
  auto got = all_pages(server, "label.kb_id=kb_1", 7);
  CHECK(std::set<std::string>(got.begin(), got.end()) == kb1);
  CHECK(got.size() == 20);
  got = all_pages(server, "label.kb_id=kb_2&status=QUEUED&type=image", 6);
  CHECK(std::set<std::string>(got.begin(), got.end()) == kb2);
  got = all_pages(server, "label.kb_id=kb_1&label.tier=gold", 3);
  CHECK(std::set<std::string>(got.begin(), got.end()) == kb1_gold);
  // Seed 002: a parameter the list does not know is a label filter too.
  got = all_pages(server, "kb_id=kb_1", 50);
  CHECK(std::set<std::string>(got.begin(), got.end()) == kb1);
  CHECK(all_pages(server, "label.kb_id=nope", 10).empty());
  CHECK(all_pages(server, "label.kb_id=kb_1&status=DONE", 10).empty());

  // Labels are on the task, in lists and alone.
  json one = server.get("/api/v1/tasks/" + *kb1_gold.begin());
  CHECK(one["labels"] == json{{"kb_id", "kb_1"}, {"tier", "gold"}});
  json page = server.get("/api/v1/tasks?label.kb_id=kb_2&limit=1");
  CHECK(page["tasks"][0]["labels"] == json{{"kb_id", "kb_2"}});

  int status = 0;
  json bad = server.get("/api/v1/tasks?label.bad%20key=x", &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "label.bad key");
}

TEST_CASE("e2e labels: bad inputs give 422 and write nothing") {
  TempDir dir;
  Server server(dir);
  REQUIRE(server.started());
  json many = json::object();
  for (int i = 0; i < 17; ++i) many["k" + std::to_string(i)] = "v";
  struct Case {
    json body;
    std::string field;
  };
  std::vector<Case> cases = {
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"labels", "kb_1"}}, "labels"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"labels", many}}, "labels"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"labels", {{"kb id", "x"}}}},
       "labels.kb id"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"labels", {{"kb_id", 7}}}},
       "labels.kb_id"},
      {{{"type", "image"},
        {"payload", {{"prompt", "a"}}},
        {"labels", {{"kb_id", std::string(257, 'x')}}}},
       "labels.kb_id"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"labels", {{"kb_id", "a\nb"}}}},
       "labels.kb_id"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {std::string(65, 'k'), "v"}},
       std::string(65, 'k')},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"kb_id", 12}}, "kb_id"},
      {{{"type", "image"}, {"task_type", "image"}, {"payload", {{"prompt", "a"}}}}, "task_type"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"run_at", "tomorrow"}}, "run_at"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"run_at", "2026-02-30T00:00:00Z"}},
       "run_at"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"delay_s", -1}}, "delay_s"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"delay_s", 100000000}}, "delay_s"},
      {{{"type", "image"},
        {"payload", {{"prompt", "a"}}},
        {"delay_s", 5},
        {"run_at", "2030-01-01T00:00:00Z"}},
       "delay_s"},
      {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"run_at", "2999-01-01T00:00:00Z"}},
       "run_at"},
  };
  for (const Case& c : cases) {
    int status = 0;
    json err = server.post("/api/v1/tasks", c.body.dump(), &status);
    CHECK_MESSAGE(status == 422, c.body.dump());
    CHECK_MESSAGE(err["error"]["field"] == c.field, err.dump());
  }
  int status = 0;
  json err = server.post(
      "/api/v1/tasks/batch",
      json{{"tasks",
            {{{"type", "image"}, {"payload", {{"prompt", "a"}}}, {"labels", {{"kb_id", "ok"}}}},
             {{"type", "image"}, {"payload", {{"prompt", "b"}}}, {"labels", {{"", "x"}}}}}}}
          .dump(),
      &status);
  CHECK(status == 422);
  CHECK(err["error"]["field"] == "tasks[1].labels.");
  err = server.post("/api/v1/tasks/retry", R"({"status":"DONE"})", &status);
  CHECK(status == 422);
  CHECK(err["error"]["field"] == "status");
  err = server.post("/api/v1/tasks/retry", R"({"limit":0})", &status);
  CHECK(status == 422);
  CHECK(err["error"]["field"] == "limit");
  CHECK(server.count_rows() == 0);
}

TEST_CASE("e2e seed 002: the submit alias gets 202 and the kb_id query finds it") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "3000"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  int status = 0;
  json t = server.post("/api/v1/tasks", R"({"task_type":"image","kb_id":"kb_123",
      "payload":{"prompt":"seed two"},"priority":"high","retry_limit":3})",
                       &status);
  REQUIRE_MESSAGE(status == 202, t.dump());
  std::string id = t["task_id"];
  CHECK(t["type"] == "image");
  CHECK(t["priority"] == 8);
  CHECK(t["max_attempts"] == 3);
  CHECK(t["labels"] == json{{"kb_id", "kb_123"}});
  server.submit("other");  // not kb_123
  REQUIRE(eventually([&] { return server.get("/api/v1/tasks/" + id)["status"] == "RUNNING"; }));
  json page = server.get("/api/v1/tasks?kb_id=kb_123&status=processing", &status);
  CHECK(status == 200);
  REQUIRE(page["tasks"].size() == 1);
  CHECK(page["tasks"][0]["task_id"] == id);
  CHECK(server.get("/api/v1/tasks?kb_id=kb_123&status=QUEUED")["tasks"].empty());
}

TEST_CASE("e2e retry: a retried task runs and its attempts list keeps the old attempts") {
  TempDir dir;
  auto failing =
      std::make_unique<MockBackend>(dir, std::vector<std::string>{"--status-code", "400"});
  int port = failing->port();
  Server server(dir, {}, {{"IMAGE_GEN_URL", failing->url()}});
  REQUIRE(server.started());
  std::string id = server.submit("retry me", {{"labels", {{"batch", "b1"}}}});
  json t = server.wait_final(id);
  REQUIRE(t["status"] == "FAILED");
  REQUIRE(t["attempts"].size() == 1);
  int status = 0;
  server.post("/api/v1/tasks/nosuchtask/retry", "", &status);
  CHECK(status == 404);

  // The backend is fixed (a new one on the same port); the operator retries.
  failing->kill_hard();
  failing.reset();
  MockBackend fixed(dir, {}, port);
  json r = server.post("/api/v1/tasks/" + id + "/retry", "", &status);
  REQUIRE_MESSAGE(status == 200, r.dump());
  // The answer is the task as it is once the retry committed: a free slot may have taken it.
  CHECK((r["status"] == "QUEUED" || r["status"] == "RUNNING" || r["status"] == "DONE"));
  CHECK(r["retries"] == 1);
  t = server.wait_final(id);
  CHECK(t["status"] == "DONE");
  REQUIRE(t["attempts"].size() == 2);
  CHECK(t["attempts"][0]["outcome"] == "failed");
  CHECK(t["attempts"][0]["number"] == 1);
  CHECK(t["attempts"][1]["outcome"] == "done");
  CHECK(t["attempts"][1]["number"] == 2);
  // DONE is not retried.
  json conflict = server.post("/api/v1/tasks/" + id + "/retry", "", &status);
  CHECK(status == 409);
  CHECK(conflict["error"]["code"] == "not_retryable");

  // Bulk: canceled tasks with a label, in one transaction, up to the limit.
  std::vector<std::string> canceled;
  for (int i = 0; i < 3; ++i) {
    std::string c = server.submit("later " + std::to_string(i),
                                  {{"delay_s", 3600}, {"labels", {{"batch", "b2"}}}});
    CHECK(server.del("/api/v1/tasks/" + c)["status"] == "CANCELED");
    canceled.push_back(c);
  }
  json bulk = server.post("/api/v1/tasks/retry",
                          R"({"status":"CANCELED","labels":{"batch":"b2"},"limit":2})", &status);
  REQUIRE_MESSAGE(status == 200, bulk.dump());
  CHECK(bulk["count"] == 2);
  CHECK(bulk["task_ids"] == json{canceled[0], canceled[1]});
  // Canceled before their run_at, they wait for it again.
  for (int i = 0; i < 2; ++i) {
    json again = server.get("/api/v1/tasks/" + canceled[i]);
    CHECK(again["status"] == "QUEUED");
    CHECK(again["retries"] == 1);
    CHECK(again["queue_position"].is_null());
  }
  CHECK(server.get("/api/v1/tasks/" + canceled[2])["status"] == "CANCELED");
  bulk = server.post("/api/v1/tasks/retry", R"({"labels":{"batch":"b2"}})", &status);
  CHECK(bulk["count"] == 1);
  CHECK(server.get("/api/v1/tasks/" + canceled[2])["status"] == "QUEUED");
  CHECK(fixed.stats()["prompts"].value("later 0", 0) == 0);
}

TEST_CASE("e2e retry: the backlog limit holds for retries") {
  TempDir dir;
  Server server(dir, {"--max-queued", "1"});  // no backend: queued tasks stay
  REQUIRE(server.started());
  std::string a = server.submit("a");
  CHECK(server.del("/api/v1/tasks/" + a)["status"] == "CANCELED");
  std::string b = server.submit("b");  // the backlog is full again
  int status = 0;
  json full = server.post("/api/v1/tasks/" + a + "/retry", "", &status);
  CHECK(status == 429);
  CHECK(server.get("/api/v1/tasks/" + a)["status"] == "CANCELED");
  json bulk = server.post("/api/v1/tasks/retry", "{}", &status);
  CHECK(status == 200);
  CHECK(bulk["count"] == 0);
  CHECK(bulk["skipped_backlog_full"] == 1);
  CHECK(server.del("/api/v1/tasks/" + b)["status"] == "CANCELED");
  bulk = server.post("/api/v1/tasks/retry", R"({"limit":1})", &status);
  CHECK(bulk["count"] == 1);
}

TEST_CASE("e2e schedule: a scheduled task never starts early and survives a restart") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  auto server =
      std::make_unique<Server>(dir, std::vector<std::string>{},
                               std::map<std::string, std::string>{{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server->started());
  json t =
      server->post("/api/v1/tasks", R"({"type":"image","payload":{"prompt":"later"},"delay_s":3})");
  std::string id = t["task_id"];
  REQUIRE(t["run_at"].is_string());
  std::string run_at = t["run_at"];
  std::string canceled = server->submit("never", {{"delay_s", 2}});
  std::string far = server->submit("far", {{"run_at", "2027-06-01T00:00:00+01:00"}});
  json v = server->get("/api/v1/tasks/" + id);
  CHECK(v["status"] == "QUEUED");
  CHECK(v["queue_position"].is_null());  // not in the backlog yet
  CHECK(v["estimated_start"] == run_at);
  CHECK(server->get("/api/v1/tasks/" + far)["run_at"] == "2027-05-31T23:00:00.000Z");
  CHECK(server->del("/api/v1/tasks/" + canceled)["status"] == "CANCELED");
  // An ordinary task is not behind the scheduled ones.
  std::string now_task = server->submit("now");
  CHECK(server->wait_final(now_task)["status"] == "DONE");

  // Killed before run_at, restarted: the task still waits for its time, then runs.
  server->kill_hard();
  server = std::make_unique<Server>(dir, std::vector<std::string>{},
                                    std::map<std::string, std::string>{{"IMAGE_GEN_URL", b.url()}},
                                    dir.file("data"));
  REQUIRE(server->started());
  json done = server->wait_final(id);
  CHECK(done["status"] == "DONE");
  REQUIRE(done["started_at"].is_string());
  CHECK(done["started_at"].get<std::string>() >= run_at);  // same format: compares as time
  CHECK(server->get("/api/v1/tasks/" + canceled)["status"] == "CANCELED");
  CHECK(server->get("/api/v1/tasks/" + far)["status"] == "QUEUED");
  CHECK(b.stats()["prompts"].value("never", 0) == 0);
  CHECK(b.stats()["prompts"].value("far", 0) == 0);
}

TEST_CASE("e2e schedule: scheduled tasks are outside queue positions and the backlog limit") {
  TempDir dir;
  Server server(dir, {"--max-queued", "2"});  // no backend: queued tasks stay
  REQUIRE(server.started());
  for (int i = 0; i < 4; ++i) {
    std::string id = server.submit("later " + std::to_string(i), {{"delay_s", 3600}});
    CHECK(server.get("/api/v1/tasks/" + id)["queue_position"].is_null());
  }
  int status = 0;
  json batch = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"b1"},"delay_s":3600,"labels":{"kb_id":"kb_9"}},
      {"type":"image","payload":{"prompt":"b2"},"run_at":"2026-01-01T00:00:00Z"}]})",
                           &status);
  REQUIRE_MESSAGE(status == 202, batch.dump());
  CHECK(batch["tasks"][0]["labels"] == json{{"kb_id", "kb_9"}});
  // The second one's run_at is past: it is in the backlog at once.
  CHECK(server.get("/api/v1/tasks/" + batch["task_ids"][1].get<std::string>())["queue_position"] ==
        0);
  std::string now_task = server.submit("now");
  CHECK(server.get("/api/v1/tasks/" + now_task)["queue_position"] == 1);
  json queues = server.get("/api/v1/stats/queues");
  CHECK(queues["queues"][0]["depth"] == 2);
  // The backlog (2) is full now; scheduled tasks did not fill it.
  server.post("/api/v1/tasks", R"({"type":"image","payload":{"prompt":"over"}})", &status);
  CHECK(status == 429);
  CHECK(server.get("/api/v1/tasks?label.kb_id=kb_9")["tasks"].size() == 1);
}
