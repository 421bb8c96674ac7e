// The API end to end: a queued task's position and estimated start, exact across seq blocks,
// cancels, restarts and pools no longer configured, over real HTTP.
#include <SQLiteCpp/Database.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/harness.h"

using namespace tst;

TEST_CASE("e2e api: queue position falls as the tasks ahead finish") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "300"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  std::vector<std::string> ids;
  // One runs and one is claimed for the slot next: the last of six starts with three ahead.
  for (int i = 0; i < 6; ++i) ids.push_back(server.submit("q" + std::to_string(i)));
  const std::string& last = ids.back();
  std::vector<int> positions;
  bool saw_estimate = false;
  for (int i = 0; i < 200; ++i) {
    json t = server.get("/api/v1/tasks/" + last);
    if (t["status"] != "QUEUED") break;
    int p = t["queue_position"];
    if (positions.empty() || positions.back() != p) positions.push_back(p);
    if (t["estimated_start"].is_string()) saw_estimate = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(positions.size() >= 2);
  CHECK(positions.front() >= 3);
  for (size_t i = 1; i < positions.size(); ++i) CHECK(positions[i] < positions[i - 1]);
  CHECK(positions.back() == 0);
  CHECK(saw_estimate);  // once a duration is known, an estimate is given
  CHECK(server.wait_final(last)["status"] == "DONE");
}

// Positions come from counts by priority and block of 4096 seqs plus a count inside the
// task's own block: 9,000 tasks span three blocks, some leave the queue, and the server restarts
// and counts them again from the store.
TEST_CASE("e2e api: queue positions are exact across seq blocks - cancels - and a restart") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "10"});
  b.set_healthy(false);
  const std::vector<std::string> args = {"--fall", "1", "--rise", "1"};
  const std::map<std::string, std::string> env = {{"IMAGE_GEN_URL", b.url()}};
  auto server = std::make_unique<Server>(dir, args, env);
  REQUIRE(server->started());
  // The only backend is down: everything stays queued.
  REQUIRE(eventually(
      [&] { return server->get("/api/v1/backends")["backends"][0]["state"] == "down"; }));
  constexpr int kTasks = 9000;
  auto priority_of = [](int i) { return (i * 7 % 3) * 4; };  // 0, 4 or 8, mixed along the seqs
  std::vector<std::string> ids;
  for (int start = 0; start < kTasks; start += 1000) {
    json batch = {{"tasks", json::array()}};
    for (int i = start; i < start + 1000; ++i) {
      batch["tasks"].push_back({{"type", "image"},
                                {"payload", {{"prompt", "p" + std::to_string(i)}}},
                                {"priority", priority_of(i)}});
    }
    int status = 0;
    json ok = server->post("/api/v1/tasks/batch", batch.dump(), &status);
    REQUIRE(status == 202);
    for (const json& id : ok["task_ids"]) ids.push_back(id);
  }
  REQUIRE(ids.size() == static_cast<size_t>(kTasks));
  // Cancels in every block, at every priority.
  std::vector<bool> queued(kTasks, true);
  for (int i = 5; i < kTasks; i += 97) {
    int status = 0;
    server->del("/api/v1/tasks/" + ids[i], &status);
    REQUIRE(status == 200);
    queued[i] = false;
  }
  // Submission order is seq order: the expected position is a count over the others.
  auto expected = [&](int i) {
    int64_t n = 0;
    for (int j = 0; j < kTasks; ++j) {
      if (!queued[j]) continue;
      if (priority_of(j) > priority_of(i) || (priority_of(j) == priority_of(i) && j < i)) ++n;
    }
    return n;
  };
  const std::vector<int> sample = {0, 1, 2, 4095, 4096, 4097, 4200, 6000, 8191, 8192, 8999, 8998};
  auto check_sample = [&](Server& s) {
    for (int i : sample) {
      CAPTURE(i);
      json t = s.get("/api/v1/tasks/" + ids[i]);
      REQUIRE(t["status"] == "QUEUED");
      CHECK(t["queue_position"] == expected(i));
    }
  };
  check_sample(*server);
  CHECK(server->stop() == 0);
  // A backend counts as up until its first health check: gone, it takes nothing for good (a
  // task tried meanwhile is queued again, its seq and priority unchanged).
  b.kill_hard();
  server = std::make_unique<Server>(dir, args, env, dir.file("data"));
  REQUIRE(server->started());
  const int64_t queued_count = std::count(queued.begin(), queued.end(), true);
  REQUIRE(eventually([&] {
    json image, queues = server->get("/api/v1/stats/queues");
    for (const json& q : queues["queues"]) {
      if (q["pool"] == "image") image = q;
    }
    return server->get("/api/v1/backends")["backends"][0]["state"] == "down" &&
           image["running"] == 0 && image["depth"] == queued_count;
  }));
  check_sample(*server);
  // A new task after the restart: last of the lowest priority.
  std::string last = server->submit("after the restart", {{"priority", 0}});
  CHECK(server->get("/api/v1/tasks/" + last)["queue_position"] == queued_count);
}

// The store outlives the configuration: a queued task of a pool that is gone (its backend
// variable removed) is still shown, with its place among its own type and no estimate.
TEST_CASE("e2e api: a queued task whose pool is no longer configured is shown - not a 500") {
  TempDir dir;
  {
    Server first(dir);
    REQUIRE(first.started());
    REQUIRE(first.stop() == 0);
  }
  {
    SQLite::Database db(dir.file("data") + "/tasks.db", SQLite::OPEN_READWRITE);
    db.exec(
        "INSERT INTO tasks (task_id, type, payload, priority, status, created_at) VALUES "
        "('0123456789abcdef0123456789', 'video', '{}', 5, 'QUEUED', 1700000000000), "
        "('0123456789abcdef012345678a', 'video', '{}', 5, 'QUEUED', 1700000000001)");
  }
  Server server(dir, {}, {}, dir.file("data"));
  REQUIRE(server.started());
  int status = 0;
  json t = server.get("/api/v1/tasks/0123456789abcdef012345678a", &status);
  CHECK(status == 200);
  CHECK(t["type"] == "video");
  CHECK(t["queue_position"] == 1);
  CHECK(t["estimated_start"].is_null());
}
