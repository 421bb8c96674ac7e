// The API end to end: listing tasks page by page, and batches accepted all together or not at
// all, over real HTTP.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "support/harness.h"

using namespace tst;

TEST_CASE("e2e api: pagination across 250 tasks with inserts in between") {
  TempDir dir;
  Server server(dir);  // no backend: everything stays QUEUED
  REQUIRE(server.started());
  std::set<std::string> original;
  for (int i = 0; i < 250; ++i) original.insert(server.submit("p" + std::to_string(i)));
  std::set<std::string> seen;
  std::string cursor;
  int pages = 0, inserted = 0;
  std::string previous_created = "9999";
  for (;;) {
    std::string path = "/api/v1/tasks?limit=40" + (cursor.empty() ? "" : "&cursor=" + cursor);
    int status = 0;
    json page = server.get(path, &status);
    REQUIRE(status == 200);
    ++pages;
    for (const json& t : page["tasks"]) {
      std::string id = t["task_id"];
      CHECK(seen.insert(id).second);                                  // never twice
      CHECK(t["created_at"].get<std::string>() <= previous_created);  // newest first
      previous_created = t["created_at"];
    }
    // New tasks arrive while the client pages: they are newer than the cursor, not in later pages.
    for (int k = 0; k < 10; ++k) {
      server.submit("late" + std::to_string(inserted++));
    }
    if (page["next_cursor"].is_null()) break;
    cursor = page["next_cursor"];
    REQUIRE(pages < 20);
  }
  CHECK(seen == original);  // none missed, none extra
  CHECK(pages == 7);
  // Filters and bounds.
  json queued = server.get("/api/v1/tasks?status=QUEUED&type=image&limit=5");
  CHECK(queued["tasks"].size() == 5);
  CHECK(server.get("/api/v1/tasks?status=DONE")["tasks"].empty());
  int status = 0;
  json bad = server.get("/api/v1/tasks?limit=1001", &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "limit");
  bad = server.get("/api/v1/tasks?cursor=not-a-cursor", &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "cursor");
}

TEST_CASE("e2e api: a batch is accepted all together or not at all") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  int status = 0;
  json bad = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"a"}},
      {"type":"image","payload":{"prompt":"b"}},
      {"type":"image","payload":{"prompt":"c"}},
      {"type":"image","payload":{"prompt":"d"},"priority":42}]})",
                         &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "tasks[3].priority");
  bad = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"a"}},
      {"type":"nosuch","payload":{}}]})",
                    &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "tasks[1].type");
  CHECK(server.count_rows() == 0);

  json ok = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"a"},"priority":"high"},
      {"type":"image","payload":{"prompt":"b"},"idempotency_key":"batch-b"},
      {"type":"image","payload":{"prompt":"c"}}]})",
                        &status);
  CHECK(status == 202);
  REQUIRE(ok["task_ids"].size() == 3);
  CHECK(ok["tasks"][0]["priority"] == 8);
  CHECK(server.count_rows() == 3);
  for (const json& id : ok["task_ids"]) CHECK(server.wait_final(id)["status"] == "DONE");
  // A batch repeating a key gets the first task for it, and creates only the rest.
  json again = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"b2"},"idempotency_key":"batch-b"},
      {"type":"image","payload":{"prompt":"e"}}]})",
                           &status);
  CHECK(status == 202);
  CHECK(again["task_ids"][0] == ok["task_ids"][1]);
  CHECK(again["tasks"][0]["created"] == false);
  CHECK(again["tasks"][1]["created"] == true);
  CHECK(server.count_rows() == 4);
}
