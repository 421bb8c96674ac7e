// Issue 6 end to end: metrics, readiness, auth, limits, JSON logs and the CLI client.
#include <SQLiteCpp/SQLiteCpp.h>
#include <doctest/doctest.h>

#include <unistd.h>

#include <signal.h>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "support/harness.h"

using namespace tst;

namespace {

std::string metrics_text(const Server& server) {
  auto c = server.client();
  auto r = c.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0) == 0);
  return r->body;
}

// The value of one sample line "name{labels} value", or -1 when absent.
double sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

std::string run_cli(const TempDir& dir, const std::vector<std::string>& args, int* code,
                    const std::string& name) {
  std::vector<std::string> argv = {taskserver_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, {}, dir.path(), name);
  *code = p.wait(std::chrono::seconds(60));
  return p.stdout_text() + p.stderr_text();
}

}  // namespace

TEST_CASE("e2e metrics: values move as tasks run and promtool accepts the format") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "20"});
  MockBackend bad(dir, {"--latency-ms", "5", "--status-code", "422"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}, {"WHISPER_URL", bad.url()}});
  REQUIRE(server.started());
  std::string before = metrics_text(server);
  CHECK(sample(before, "task_queue_size{queue=\"image\"}") == 0);
  // Two workers for the one slot: one calls, the other holds the next task's claim.
  CHECK(sample(before, "worker_pool_idle{pool=\"image\"}") == 2);
  CHECK(sample(before, "backend_up{pool=\"image\",backend=\"" + b.url() + "\"}") == 1);
  int status = 0;
  for (int i = 0; i < 3; ++i) {
    json t = server.post("/api/v1/image/async", json{{"prompt", "m" + std::to_string(i)}}.dump(),
                         &status);
    REQUIRE(status == 202);
    server.wait_final(t["task_id"]);
  }
  json f = server.post("/api/v1/tasks", R"({"type":"transcribe","payload":{}})", &status);
  REQUIRE(status == 202);
  CHECK(server.wait_final(f["task_id"])["status"] == "FAILED");
  // The counters follow the commit a moment after a reader can see it.
  std::string after;
  CHECK(eventually([&] {
    after = metrics_text(server);
    return sample(after, "task_failure_total{task_type=\"transcribe\"}") == 1 &&
           sample(after, "task_success_total{task_type=\"image\"}") == 3;
  }));
  CHECK(sample(after, "task_success_total{task_type=\"image\"}") == 3);
  CHECK(sample(after, "task_failure_total{task_type=\"transcribe\"}") == 1);
  CHECK(sample(after, "tasks_submitted_total{task_type=\"image\"}") == 3);
  CHECK(sample(after, "task_processing_duration_seconds_count{task_type=\"image\"}") == 3);
  CHECK(sample(after, "task_processing_duration_seconds_bucket{task_type=\"image\",le=\"+Inf\"}") ==
        3);
  CHECK(sample(after, "http_requests_total{method=\"POST\",route=\"image_async\",code=\"202\"}") ==
        3);
  CHECK(sample(after, "backend_requests_total{pool=\"image\",backend=\"" + b.url() +
                          "\",outcome=\"done\"}") == 3);
  CHECK(sample(after, "backend_inflight{pool=\"image\",backend=\"" + b.url() + "\"}") == 0);
  CHECK(after.find("# TYPE task_processing_duration_seconds histogram") != std::string::npos);
  CHECK(after.find("worker_pool_active{pool=\"image\"}") != std::string::npos);
  CHECK(sample(after, "store_sqlite_memory_bytes") > 0);
  CHECK(sample(after, "process_heap_inuse_bytes") >= 0);  // 0 under ASan, which owns malloc

  if (access("/usr/bin/promtool", X_OK) == 0) {
    std::string path = dir.file("metrics.txt");
    std::ofstream(path) << after;
    // promtool reads the exposition from stdin.
    Process sh({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + path}, {}, dir.path(),
               "promtool-sh");
    int code = sh.wait(std::chrono::seconds(30));
    CAPTURE(sh.stdout_text() + sh.stderr_text());
    CHECK(code == 0);
  } else {
    MESSAGE("promtool is not installed: format check skipped (scripts/install-deps.sh metrics)");
  }
  json queues = server.get("/api/v1/stats/queues");
  json workers = server.get("/api/v1/stats/workers");
  CHECK(queues["queues"][0].contains("oldest_queued_age_s"));
  CHECK(workers["workers"][0]["idle"].get<int>() + workers["workers"][0]["busy"].get<int>() ==
        workers["workers"][0]["workers"].get<int>());
}

TEST_CASE("e2e ready: 503 naming the pool while all its backends are down - 200 when one is back") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  Server server(dir, {"--fall", "2", "--rise", "1"}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  int status = 0;
  CHECK(eventually([&] {
    server.get("/ready", &status);
    return status == 200;
  }));
  b.set_healthy(false);
  json r;
  CHECK(eventually([&] {
    r = server.get("/ready", &status);
    return status == 503;
  }));
  CHECK(r["ready"] == false);
  CHECK(r["reasons"][0].get<std::string>().find("pool image has no healthy backend") !=
        std::string::npos);
  b.set_healthy(true);
  CHECK(eventually([&] {
    server.get("/ready", &status);
    return status == 200;
  }));
  server.get("/health", &status);
  CHECK(status == 200);
}

TEST_CASE("e2e auth: every /api/ route needs the token - /health stays open") {
  TempDir dir;
  std::string tokens = dir.file("tokens");
  std::ofstream(tokens) << "# rotated monthly\nold-token\nnew-token\n";
  Server server(dir, {"--api-token-file", tokens});
  REQUIRE(server.started());
  auto c = server.client();
  for (const char* path : {"/api/v1/tasks", "/api/v1/backends", "/api/v1/stats/queues",
                           "/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z", "/api/v1/events"}) {
    CAPTURE(std::string(path));
    auto r = c.Get(path);
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(json::parse(r->body)["error"]["code"] == "unauthorized");
    CHECK(r->get_header_value("WWW-Authenticate").find("Bearer") != std::string::npos);
  }
  auto post = c.Post("/api/v1/image/async", R"({"prompt":"x"})", "application/json");
  CHECK(post->status == 401);
  auto wrong = c.Get("/api/v1/tasks", {{"Authorization", "Bearer nope"}});
  CHECK(wrong->status == 401);
  for (const char* t : {"old-token", "new-token"}) {
    auto ok = c.Get("/api/v1/tasks", {{"Authorization", std::string("Bearer ") + t}});
    CHECK(ok->status == 200);
  }
  auto sub = c.Post("/api/v1/image/async", {{"Authorization", "Bearer new-token"}},
                    R"({"prompt":"x"})", "application/json");
  CHECK(sub->status == 202);
  CHECK(c.Get("/health")->status == 200);
  CHECK(c.Get("/metrics")->status == 200);
  CHECK(server.count_rows() == 1);
}

TEST_CASE("e2e limits: bodies over --max-body get 413 and write nothing") {
  TempDir dir;
  Server server(dir, {"--max-body", "4096"});
  REQUIRE(server.started());
  int status = 0;
  std::string big = R"({"prompt":")" + std::string(5000, 'x') + "\"}";
  json r = server.post("/api/v1/image/async", big, &status);
  CHECK(status == 413);
  CHECK(r["error"]["code"] == "payload_too_large");
  r = server.post("/api/v1/tasks",
                  R"({"type":"image","payload":{"prompt":")" + std::string(5000, 'y') + "\"}}",
                  &status);
  CHECK(status == 413);
  CHECK(server.count_rows() == 0);
  server.post("/api/v1/image/async", R"({"prompt":"small"})", &status);
  CHECK(status == 202);
}

TEST_CASE("e2e logs: --log-format json writes one JSON object per line with task ids") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  Server server(dir, {"--log-format", "json"}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  int status = 0;
  json t = server.post("/api/v1/image/async", R"({"prompt":"logged \"quoted\"\nline"})", &status);
  REQUIRE(status == 202);
  std::string id = t["task_id"];
  server.wait_final(id);
  REQUIRE(server.stop() == 0);
  std::istringstream in(server.process().stderr_text());
  int lines = 0, for_task = 0;
  std::set<std::string> transitions;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    ++lines;
    json j = json::parse(line, nullptr, false);
    CAPTURE(line);
    REQUIRE(j.is_object());
    CHECK(j.contains("ts"));
    CHECK(j.contains("level"));
    CHECK(j["msg"].is_string());
    if (j.value("task_id", "") == id) {
      ++for_task;
      transitions.insert(j["msg"].get<std::string>().substr(32));
    }
  }
  CHECK(lines >= 3);
  CHECK(for_task >= 2);  // QUEUED -> RUNNING, RUNNING -> DONE
  bool saw_done = false;
  for (const auto& tr : transitions) saw_done |= tr.find("RUNNING -> DONE") != std::string::npos;
  CHECK(saw_done);
}

TEST_CASE("e2e cli: submit --wait - status - cancel - list and exit codes scripts can use") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "200"});
  MockBackend failing(dir, {"--latency-ms", "5", "--status-code", "400"});
  Server server(dir, {"--api-token", "t0k"},
                {{"IMAGE_GEN_URL", b.url()}, {"WHISPER_URL", failing.url()}});
  REQUIRE(server.started());
  std::vector<std::string> common = {"--server", server.url(), "--token", "t0k"};
  auto with = [&](std::vector<std::string> v) {
    v.insert(v.begin() + 1, common.begin(), common.end());
    return v;
  };
  int code = -1;
  std::string out =
      run_cli(dir, with({"submit", "--prompt", "cli fox", "--wait", "-q"}), &code, "cli1");
  CHECK(code == 0);
  CHECK(out.find("/api/images/") != std::string::npos);
  std::string id = out.substr(0, 26);
  out = run_cli(dir, with({"status", id}), &code, "cli2");
  CHECK(code == 0);
  CHECK(out.find("DONE") != std::string::npos);
  out = run_cli(dir, with({"submit", "--type", "transcribe", "--payload", "{}", "--wait", "-q"}),
                &code, "cli3");
  CHECK(code == 1);  // FAILED
  out = run_cli(dir, with({"submit", "--prompt", "to cancel", "--priority", "low"}), &code, "cli4");
  CHECK(code == 0);
  std::string victim = out.substr(0, 26);
  run_cli(dir, with({"cancel", victim}), &code, "cli5");
  CHECK((code == 0 || code == 5));
  out = run_cli(dir, with({"wait", victim, "-q"}), &code, "cli6");
  CHECK((code == 2 || code == 0));  // CANCELED, or it finished before the cancel
  out = run_cli(dir, with({"list", "--limit", "10"}), &code, "cli7");
  CHECK(code == 0);
  CHECK(out.find(id) != std::string::npos);
  out = run_cli(dir, {"status", "--server", server.url(), id}, &code, "cli8");
  CHECK(code == 4);  // no token: 401
  out = run_cli(dir, with({"status", "01m85wj7s6kt1ykfemt8secf9z"}), &code, "cli9");
  CHECK(code == 4);
  CHECK(out.find("404") != std::string::npos);
  // A wait that runs out of time says so with its own code.
  TempDir slow_dir;
  MockBackend slow(slow_dir, {"--latency-ms", "10000"});
  Server slow_server(slow_dir, {"--shutdown-grace", "0"}, {{"IMAGE_GEN_URL", slow.url()}});
  REQUIRE(slow_server.started());
  out = run_cli(dir,
                {"submit", "--server", slow_server.url(), "--prompt", "slow", "--wait", "--timeout",
                 "1", "-q"},
                &code, "cli10");
  CHECK(code == 3);
}

TEST_CASE("e2e listen: binding beyond loopback without a token logs a warning") {
  TempDir dir;
  Process p({taskserver_bin(), "serve", "--listen", "0.0.0.0:0", "--data-dir", dir.file("data")},
            {}, dir.path(), "open");
  REQUIRE(!p.wait_listening(std::chrono::seconds(20)).empty());
  CHECK(
      eventually([&] { return p.stderr_text().find("without --api-token") != std::string::npos; }));
  p.signal(SIGTERM);
  CHECK(p.wait(std::chrono::seconds(20)) == 0);
}

TEST_CASE(
    "e2e retention: --retain-final deletes old final tasks with their results - nothing else") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "10"});
  // The transcribe pool's only backend is a closed port: its tasks stay QUEUED. Results are
  // files here (--inline-result-max 0); those kept in the database are the next test's.
  Server server(dir, {"--retain-final", "2s", "--inline-result-max", "0"},
                {{"IMAGE_GEN_URL", b.url()}, {"WHISPER_URL", "http://127.0.0.1:9"}});
  REQUIRE(server.started());
  CHECK(sample(metrics_text(server), "tasks_purged_total") == 0);
  int status = 0;
  std::vector<std::string> old;  // final, nothing pending: deleted once 2 s old
  old.push_back(server.submit("one"));
  old.push_back(server.submit("two", {{"idempotency_key", "kept-while-the-task-is"}}));
  json queued = server.post("/api/v1/tasks", R"({"type":"transcribe","payload":{}})", &status);
  REQUIRE(status == 202);
  json canceled = server.post("/api/v1/tasks", R"({"type":"transcribe","payload":{}})", &status);
  REQUIRE(status == 202);
  server.del("/api/v1/tasks/" + canceled["task_id"].get<std::string>(), &status);
  CHECK(status == 200);
  old.push_back(canceled["task_id"]);
  // Its webhook (to a closed port) is retried for minutes: the task is kept meanwhile.
  std::string hooked = server.submit("hooked", {{"webhook_url", "http://127.0.0.1:9/hook"}});
  for (const std::string& id : {old[0], old[1], hooked}) {
    CHECK(server.wait_final(id)["status"] == "DONE");
    CHECK(std::ifstream(server.data_dir() + "/results/" + id).good());
  }
  std::string repeat = server.post("/api/v1/tasks",
                                   R"({"type":"image","payload":{"prompt":"two"},)"
                                   R"("idempotency_key":"kept-while-the-task-is"})",
                                   &status)["task_id"];
  CHECK(status == 200);  // the first task, still there
  CHECK(repeat == old[1]);

  // Gone within the 2 s plus a round (1 s): rows, attempts, results; counted in the totals.
  CHECK(eventually(
      [&] {
        for (const std::string& id : old) {
          server.get("/api/v1/tasks/" + id, &status);
          if (status != 404) return false;
        }
        return true;
      },
      std::chrono::seconds(15)));
  // Files and totals follow each commit, and the counter follows them.
  CHECK(eventually([&] { return sample(metrics_text(server), "tasks_purged_total") == 3; }));
  for (const std::string& id : old) {
    CAPTURE(id);
    CHECK_FALSE(std::ifstream(server.data_dir() + "/results/" + id).good());
    server.get("/api/v1/tasks/" + id + "/result", &status);
    CHECK(status == 404);
  }
  json stats = server.get("/api/v1/stats");
  CHECK(stats["totals"]["DONE"] == 1);
  CHECK(stats["totals"]["CANCELED"] == 0);
  CHECK(stats["totals"]["QUEUED"] == 1);
  {
    SQLite::Database db(server.data_dir() + "/tasks.db", SQLite::OPEN_READONLY, 5000);
    CHECK(db.execAndGet("SELECT COUNT(*) FROM tasks").getInt64() == 2);
    // No attempt or webhook delivery is left of a deleted task.
    CHECK(db.execAndGet("SELECT COUNT(*) FROM attempts WHERE task_seq NOT IN "
                        "(SELECT seq FROM tasks)")
              .getInt64() == 0);
    CHECK(db.execAndGet("SELECT COUNT(*) FROM attempts").getInt64() >= 1);  // the kept DONE's
    CHECK(db.execAndGet("SELECT COUNT(*) FROM webhook_deliveries WHERE task_seq NOT IN "
                        "(SELECT seq FROM tasks)")
              .getInt64() == 0);
  }
  // Not final, or its webhook still due: kept, however old.
  json q = server.get("/api/v1/tasks/" + queued["task_id"].get<std::string>(), &status);
  CHECK(status == 200);
  CHECK(q["status"] == "QUEUED");
  json h = server.get("/api/v1/tasks/" + hooked, &status);
  CHECK(status == 200);
  CHECK(std::ifstream(server.data_dir() + "/results/" + hooked).good());
  // A deleted task's idempotency key is free again: the same submit creates a new task.
  json again = server.post("/api/v1/tasks",
                           R"({"type":"image","payload":{"prompt":"two"},)"
                           R"("idempotency_key":"kept-while-the-task-is"})",
                           &status);
  CHECK(status == 202);
  CHECK(again["task_id"] != old[1]);
  CHECK(server.wait_final(again["task_id"])["status"] == "DONE");

  // A server that cannot start (its port is taken) deletes nothing, however old the tasks.
  CHECK(server.stop() == 0);
  int64_t rows = server.count_rows();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // `again` is 1 s old
  int bind_code = 0;
  std::string bind_out = run_cli(dir,
                                 {"serve", "--listen", "127.0.0.1:" + std::to_string(b.port()),
                                  "--data-dir", server.data_dir(), "--retain-final", "1s"},
                                 &bind_code, "port-taken");
  CHECK(bind_code == 1);
  CHECK(server.count_rows() == rows);

  // A retention that is not a duration is refused.
  int code = 0;
  std::string out = run_cli(dir,
                            {"serve", "--listen", "127.0.0.1:0", "--data-dir",
                             dir.path() + "/other", "--retain-final", "7x"},
                            &code, "bad-retention");
  CHECK(code > 0);
  CHECK(out.find("--retain-final: must be a duration such as 7d") != std::string::npos);
}

TEST_CASE("e2e files: what an earlier process left behind is removed once serving - nothing else") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  const std::string data = dir.file("data");
  std::string done_id;
  {
    // Its result a file (--inline-result-max 0), which the sweep must keep.
    Server first(dir, {"--inline-result-max", "0"}, {{"IMAGE_GEN_URL", b.url()}}, data);
    REQUIRE(first.started());
    done_id = first.submit("kept");
    REQUIRE(first.wait_final(done_id)["status"] == "DONE");
    REQUIRE(first.stop() == 0);
  }
  // Ids of tasks the store does not have (a rotation of a real one is in the alphabet).
  std::string gone_a = done_id.substr(1) + done_id[0];
  std::string gone_b = done_id.substr(2) + done_id.substr(0, 2);
  std::string fresh = done_id.substr(3) + done_id.substr(0, 3);
  // Left by a process killed mid-write (pid 0 is never a process of ours), or between a
  // purge's commit and its unlink; one written just now; one not named like a task.
  for (const std::string& path :
       {data + "/results/.tmp-0-1", data + "/results/.tmp-0-2", data + "/inputs/.tmp-0-7",
        data + "/results/" + gone_a, data + "/inputs/" + gone_b, data + "/results/" + fresh,
        data + "/results/notes.txt"}) {
    std::ofstream(path) << "partial";
  }
  auto age = [](const std::string& path) {
    std::filesystem::last_write_time(
        path, std::filesystem::file_time_type::clock::now() - std::chrono::hours(1));
  };
  for (const std::string& name : {gone_a, done_id, std::string("notes.txt")}) {
    age(data + "/results/" + name);
  }
  age(data + "/inputs/" + gone_b);
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}}, data);
  REQUIRE(server.started());
  CHECK(eventually([&] {
    for (const std::string& path :
         {data + "/results/.tmp-0-1", data + "/results/.tmp-0-2", data + "/inputs/.tmp-0-7",
          data + "/results/" + gone_a, data + "/inputs/" + gone_b}) {
      if (std::filesystem::exists(path)) return false;
    }
    return true;
  }));
  CHECK(std::filesystem::exists(data + "/results/" + done_id));
  CHECK(std::filesystem::exists(data + "/results/" + fresh));  // written after (or as) it started
  CHECK(std::filesystem::exists(data + "/results/notes.txt"));
  auto res = server.client().Get("/api/v1/tasks/" + done_id + "/result");
  REQUIRE(res);
  CHECK(res->status == 200);
}
