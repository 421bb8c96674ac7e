// Issue 3 end to end: a 202 means the task will run, whatever happens to the process.
#include <doctest/doctest.h>

#include <SQLiteCpp/Database.h>
#include <signal.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "support/harness.h"

using namespace tst;

namespace {

// Clients that submit tasks with unique prompts as fast as the server takes them, recording
// every id that got a 202.
class Submitters {
 public:
  // Each client submits at most `per_client` tasks, one every `pace_ms`.
  Submitters(const std::string& url, int clients, int per_client, int pace_ms) {
    for (int c = 0; c < clients; ++c) {
      threads_.emplace_back([this, url, c, per_client, pace_ms] {
        httplib::Client cli = http_client(url);
        cli.set_connection_timeout(2, 0);
        cli.set_read_timeout(5, 0);
        cli.set_keep_alive(true);
        for (int i = 0; !stop_ && i < per_client; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(pace_ms));
          std::string prompt = "c" + std::to_string(c) + "-" + std::to_string(i);
          auto r =
              cli.Post("/api/v1/image/async", json{{"prompt", prompt}}.dump(), "application/json");
          if (!r) {
            if (stop_) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            continue;
          }
          if (r->status == 202) {
            json t = json::parse(r->body);
            std::lock_guard<std::mutex> lock(mu_);
            acked_[t["task_id"]] = prompt;
          }
        }
      });
    }
  }
  void stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  ~Submitters() {
    if (!threads_.empty()) stop();
  }
  std::map<std::string, std::string> acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::map<std::string, std::string> acked_;  // task id → prompt
};

std::map<std::string, std::string> statuses_in_store(const std::string& data_dir) {
  SQLite::Database db(data_dir + "/tasks.db", SQLite::OPEN_READONLY, 5000);
  SQLite::Statement q(db, "SELECT task_id, status FROM tasks");
  std::map<std::string, std::string> out;
  while (q.executeStep()) out[q.getColumn(0).getString()] = q.getColumn(1).getString();
  return out;
}

std::map<std::string, int64_t> served_by_prompt(std::vector<MockBackend*> mocks) {
  std::map<std::string, int64_t> out;
  for (MockBackend* m : mocks) {
    json s = m->stats();
    for (auto& [prompt, n] : s["prompts"].items()) out[prompt] += n.get<int64_t>();
  }
  return out;
}

}  // namespace

TEST_CASE(
    "e2e crash: kill -9 mid-stream loses no acknowledged task and reruns none that was DONE") {
  TempDir dir;
  MockBackend b1(dir, {"--latency-ms", "150"}), b2(dir, {"--latency-ms", "150"}),
      b3(dir, {"--latency-ms", "150"});
  // 8 slots per backend: the backlog drains in seconds after the restart.
  std::map<std::string, std::string> env = {{"IMAGE_GEN_URL_1", b1.url()},
                                            {"IMAGE_GEN_URL_2", b2.url()},
                                            {"IMAGE_GEN_URL_3", b3.url()},
                                            {"IMAGE_GEN_URL_SLOTS", "8"}};
  std::string data = dir.file("data");
  std::map<std::string, std::string> acked;
  {
    Server server(dir, {}, env, data);
    REQUIRE(server.started());
    Submitters clients(server.url(), 16, 60, 30);
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    server.kill_hard();  // mid-stream: clients are still submitting
    clients.stop();
    acked = clients.acked();
  }
  REQUIRE(acked.size() > 50);
  // What the store held at the moment of the crash, and what the backends had served.
  auto at_crash = statuses_in_store(data);
  auto served_at_crash = served_by_prompt({&b1, &b2, &b3});
  std::set<std::string> done_at_crash;
  int running_at_crash = 0;
  for (const auto& [id, status] : at_crash) {
    if (status == "DONE") done_at_crash.insert(id);
    if (status == "RUNNING") ++running_at_crash;
  }
  for (const auto& [id, prompt] : acked) {
    CAPTURE(id);
    CHECK(at_crash.count(id) == 1);  // every 202 was committed before it was sent
  }

  Server again(dir, {}, env, data);
  REQUIRE(again.started());
  size_t done = 0;
  for (const auto& [id, prompt] : acked) {
    json t = again.wait_final(id, std::chrono::seconds(120));
    CAPTURE(id);
    CHECK(t["status"] == "DONE");
    if (t["status"] == "DONE") ++done;
  }
  auto served_after = served_by_prompt({&b1, &b2, &b3});
  int rerun_after_done = 0;
  for (const auto& id : done_at_crash) {
    const std::string& prompt = acked.count(id) ? acked[id] : "";
    if (prompt.empty()) continue;
    if (served_after[prompt] != served_at_crash[prompt]) ++rerun_after_done;
  }
  CHECK(rerun_after_done == 0);
  MESSAGE("crash test: acked=" << acked.size() << " found=" << acked.size() << " done=" << done
                               << " (DONE at crash " << done_at_crash.size()
                               << ", RUNNING at crash " << running_at_crash << ")");
  CHECK(done == acked.size());
  CHECK(again.stop() == 0);
}

TEST_CASE("e2e shutdown: SIGTERM under load exits 0 - loses nothing - keeps attempt counters") {
  TempDir dir;
  MockBackend b1(dir, {"--latency-ms", "3000"}), b2(dir, {"--latency-ms", "3000"});
  std::map<std::string, std::string> env = {{"IMAGE_GEN_URL_1", b1.url()},
                                            {"IMAGE_GEN_URL_2", b2.url()}};
  std::string data = dir.file("data");
  std::map<std::string, std::string> acked;
  {
    Server server(dir, {"--shutdown-grace", "1"}, env, data);
    REQUIRE(server.started());
    Submitters clients(server.url(), 4, 50, 10);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    // Both slots are busy with 3 s attempts: the 1 s grace runs out and they are interrupted.
    server.process().signal(SIGTERM);
    // While it drains, submits are refused with 503 shutting_down.
    bool saw_503 = eventually(
        [&] {
          int status = 0;
          json r = server.post("/api/v1/image/async", R"({"prompt":"late"})", &status);
          return status == 503 && r["error"]["code"] == "shutting_down";
        },
        std::chrono::seconds(3), std::chrono::milliseconds(20));
    CHECK(saw_503);
    CHECK(server.process().wait(std::chrono::seconds(20)) == 0);
    clients.stop();
    acked = clients.acked();
  }
  REQUIRE(acked.size() >= 2);
  SQLite::Database db(data + "/tasks.db", SQLite::OPEN_READONLY);
  CHECK(db.execAndGet("SELECT COUNT(*) FROM tasks WHERE status = 'RUNNING'").getInt() == 0);
  // Interrupted attempts were given back: the counter equals the attempts that really counted.
  SQLite::Statement q(db,
                      "SELECT t.task_id, t.attempt, "
                      "(SELECT COUNT(*) FROM attempts a WHERE a.task_seq = t.seq "
                      " AND a.outcome = 'interrupted') FROM tasks t");
  int interrupted = 0;
  while (q.executeStep()) {
    CAPTURE(q.getColumn(0).getString());
    if (q.getColumn(2).getInt() > 0) {
      ++interrupted;
      CHECK(q.getColumn(1).getInt() == 0);
    }
  }
  CHECK(interrupted >= 1);
  for (const auto& [id, prompt] : acked) {
    SQLite::Statement s(db, "SELECT status FROM tasks WHERE task_id = ?");
    s.bind(1, id);
    CHECK(s.executeStep());
  }
  MESSAGE("shutdown test: acked=" << acked.size() << " interrupted=" << interrupted);
}

TEST_CASE("e2e priorities: higher first and age within a priority") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "10"});
  b.set_healthy(false);
  Server server(dir, {"--fall", "1", "--rise", "1"}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  // The only backend is down: everything waits in the queue.
  REQUIRE(
      eventually([&] { return server.get("/api/v1/backends")["backends"][0]["state"] == "down"; }));
  std::vector<std::pair<json, std::string>> submitted;
  const json priorities = {1, 9, 5, "low", 9, "high", 0, 5, "normal", 7};
  for (size_t i = 0; i < priorities.size(); ++i) {
    int status = 0;
    json t = server.post("/api/v1/tasks",
                         json{{"type", "image"},
                              {"payload", {{"prompt", "p" + std::to_string(i)}}},
                              {"priority", priorities[i]}}
                             .dump(),
                         &status);
    REQUIRE(status == 202);
    submitted.emplace_back(t, t["task_id"]);
  }
  CHECK(server.get("/api/v1/tasks/" + submitted[1].second)["queue_position"] == 0);
  CHECK(server.get("/api/v1/tasks/" + submitted[6].second)["queue_position"] == 9);
  b.set_healthy(true);
  std::vector<std::pair<std::string, std::string>> order;  // started_at, priority/seq label
  for (auto& [t, id] : submitted) {
    json done = server.wait_final(id);
    REQUIRE(done["status"] == "DONE");
    order.emplace_back(done["started_at"], id);
  }
  std::sort(order.begin(), order.end());
  // Expected: priority 9 (i=1, i=4), 8 (i=5), 7 (i=9), 5 (i=2, i=7, i=8), 2 (i=3), 1 (i=0), 0
  // (i=6).
  std::vector<size_t> expected = {1, 4, 5, 9, 2, 7, 8, 3, 0, 6};
  for (size_t k = 0; k < expected.size(); ++k) {
    CAPTURE(k);
    CHECK(order[k].second == submitted[expected[k]].second);
  }
}

TEST_CASE(
    "e2e idempotency: repeats return the first task - sequential - concurrent - across restarts") {
  TempDir dir;
  std::string data = dir.file("data");
  std::string first_id;
  {
    Server server(dir, {}, {}, data);  // no backend: tasks stay QUEUED
    REQUIRE(server.started());
    int status = 0;
    json a = server.post("/api/v1/image/async", R"({"prompt":"x","idempotency_key":"order-17"})",
                         &status);
    REQUIRE(status == 202);
    first_id = a["task_id"];
    json b = server.post("/api/v1/image/async",
                         R"({"prompt":"different","idempotency_key":"order-17"})", &status);
    CHECK(status == 200);
    CHECK(b["task_id"] == first_id);
    CHECK(b["payload"]["prompt"] == "x");
    // The header works the same way.
    json h = server.post("/api/v1/tasks", R"({"type":"image","payload":{"prompt":"y"}})", &status,
                         "application/json", {{"Idempotency-Key", "order-17"}});
    CHECK(status == 200);
    CHECK(h["task_id"] == first_id);
    // On one kept-alive connection: a first, then repeats of it and of order-17.
    auto c = server.client();
    c.set_keep_alive(true);
    const std::string body =
        R"({"type":"image","payload":{"prompt":"k"},"idempotency_key":"conn-1"})";
    auto r1 = c.Post("/api/v1/tasks", body, "application/json");
    REQUIRE(r1);
    CHECK(r1->status == 202);
    const std::string conn_id = json::parse(r1->body)["task_id"];
    for (const char* key : {"conn-1", "order-17", "conn-1"}) {
      CAPTURE(key);
      json again = {{"type", "image"}, {"payload", {{"prompt", "k"}}}, {"idempotency_key", key}};
      auto r = c.Post("/api/v1/tasks", again.dump(), "application/json");
      REQUIRE(r);
      CHECK(r->status == 200);
      CHECK(r->get_header_value("Content-Type") == "application/json");
      CHECK(json::parse(r->body)["task_id"] ==
            (std::string(key) == "order-17" ? first_id : conn_id));
    }

    // 16 concurrent repeats of a new key: one 202, fifteen 200s, one task.
    std::atomic<int> created{0}, repeated{0};
    std::mutex mu;
    std::set<std::string> ids;
    std::vector<std::thread> threads;
    for (int i = 0; i < 16; ++i) {
      threads.emplace_back([&] {
        int st = 0;
        json r = server.post("/api/v1/tasks", R"({"type":"image","payload":{"prompt":"z"}})", &st,
                             "application/json", {{"Idempotency-Key", "burst-1"}});
        if (st == 202) ++created;
        if (st == 200) ++repeated;
        std::lock_guard<std::mutex> lock(mu);
        ids.insert(r.value("task_id", ""));
      });
    }
    for (auto& t : threads) t.join();
    CHECK(created == 1);
    CHECK(repeated == 15);
    CHECK(ids.size() == 1);
    CHECK(server.count_rows() == 3);
    CHECK(server.stop() == 0);
  }
  Server again(dir, {}, {}, data);
  REQUIRE(again.started());
  int status = 0;
  json c =
      again.post("/api/v1/image/async", R"({"prompt":"x","idempotency_key":"order-17"})", &status);
  CHECK(status == 200);
  CHECK(c["task_id"] == first_id);
  CHECK(again.count_rows() == 3);
}

TEST_CASE("e2e backlog: 429 with Retry-After at --max-queued and nothing written") {
  TempDir dir;
  Server server(dir, {"--max-queued", "5"});
  REQUIRE(server.started());
  int status = 0;
  json keyed =
      server.post("/api/v1/image/async", R"({"prompt":"fill","idempotency_key":"k5"})", &status);
  REQUIRE(status == 202);
  for (int i = 0; i < 4; ++i) {
    server.post("/api/v1/image/async", R"({"prompt":"fill"})", &status);
    REQUIRE(status == 202);
  }
  auto c = server.client();
  auto r = c.Post("/api/v1/image/async", R"({"prompt":"one too many"})", "application/json");
  REQUIRE(r);
  CHECK(r->status == 429);
  CHECK(!r->get_header_value("Retry-After").empty());
  CHECK(json::parse(r->body)["error"]["code"] == "backlog_full");
  json batch = server.post("/api/v1/tasks/batch",
                           R"({"tasks":[{"type":"image","payload":{"prompt":"b"}}]})", &status);
  CHECK(status == 429);
  CHECK(server.count_rows() == 5);
  // A repeat of an existing key is still answered: it adds nothing to the backlog.
  json repeat =
      server.post("/api/v1/image/async", R"({"prompt":"fill","idempotency_key":"k5"})", &status);
  CHECK(status == 200);
  CHECK(repeat["task_id"] == keyed["task_id"]);
  CHECK(server.count_rows() == 5);
}

TEST_CASE("e2e backlog: a channel of 4 runs a backlog of 40 in priority order") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  b.set_healthy(false);
  Server server(dir, {"--queue-capacity", "4", "--fall", "1", "--rise", "1"},
                {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  REQUIRE(
      eventually([&] { return server.get("/api/v1/backends")["backends"][0]["state"] == "down"; }));
  std::vector<std::string> low, high;
  for (int i = 0; i < 20; ++i) {
    int st = 0;
    low.push_back(server.post(
        "/api/v1/tasks",
        json{{"type", "image"}, {"payload", {{"prompt", "l" + std::to_string(i)}}}, {"priority", 1}}
            .dump(),
        &st)["task_id"]);
    high.push_back(server.post(
        "/api/v1/tasks",
        json{{"type", "image"}, {"payload", {{"prompt", "h" + std::to_string(i)}}}, {"priority", 8}}
            .dump(),
        &st)["task_id"]);
  }
  json q = server.get("/api/v1/stats/queues")["queues"][0];
  CHECK(q["depth"] == 40);
  CHECK(q["in_memory"].get<int>() <= 4);
  b.set_healthy(true);
  std::string last_high_start, first_low_start;
  for (const auto& id : high) {
    json t = server.wait_final(id);
    REQUIRE(t["status"] == "DONE");
    last_high_start = std::max(last_high_start, t["started_at"].get<std::string>());
  }
  for (const auto& id : low) {
    json t = server.wait_final(id);
    REQUIRE(t["status"] == "DONE");
    if (first_low_start.empty()) first_low_start = t["started_at"];
    first_low_start = std::min(first_low_start, t["started_at"].get<std::string>());
  }
  CHECK(last_high_start <= first_low_start);
}

TEST_CASE("e2e migrate: taskserver migrate applies the schema once and refuses a newer store") {
  TempDir dir;
  std::string data = dir.file("data");
  Process m1({taskserver_bin(), "migrate", "--data-dir", data}, {}, dir.path(), "migrate1");
  CHECK(m1.wait(std::chrono::seconds(20)) == 0);
  CHECK(m1.stdout_text().find("applied 0001_init.sql") != std::string::npos);
  Process m2({taskserver_bin(), "migrate", "--data-dir", data}, {}, dir.path(), "migrate2");
  CHECK(m2.wait(std::chrono::seconds(20)) == 0);
  CHECK(m2.stdout_text().find("up to date") != std::string::npos);
  {
    SQLite::Database db(data + "/tasks.db", SQLite::OPEN_READWRITE);
    db.exec("PRAGMA user_version = 4242");
  }
  Process m3({taskserver_bin(), "migrate", "--data-dir", data}, {}, dir.path(), "migrate3");
  CHECK(m3.wait(std::chrono::seconds(20)) == 3);
  CHECK(m3.stderr_text().find("newer taskserver") != std::string::npos);
  Process serve({taskserver_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", data}, {},
                dir.path(), "serve-too-new");
  CHECK(serve.wait(std::chrono::seconds(20)) == 3);
  CHECK(serve.stderr_text().find("4242") != std::string::npos);
  SQLite::Database db(data + "/tasks.db", SQLite::OPEN_READONLY);
  CHECK(db.execAndGet("PRAGMA user_version").getInt() == 4242);
}

TEST_CASE("e2e data dir: a second server on the same data folder is refused") {
  TempDir dir;
  Server first(dir);
  REQUIRE(first.started());
  Process second(
      {taskserver_bin(), "serve", "--listen", "127.0.0.1:0", "--data-dir", first.data_dir()}, {},
      dir.path(), "second");
  CHECK(second.wait(std::chrono::seconds(20)) == 1);
  CHECK(second.stderr_text().find("in use by another taskserver") != std::string::npos);
}
