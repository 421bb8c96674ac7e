// Issue 4 end to end: backends crash, hang, fail and come back; tasks do not get lost or run
// twice, and no backend holds more requests than its slots.
#include <doctest/doctest.h>

#include <SQLiteCpp/Database.h>

#include <atomic>
#include <fstream>
#include <map>
#include <thread>

#include "support/harness.h"

using namespace tst;

namespace {

json backend_of(const Server& server, const std::string& url) {
  json all = server.get("/api/v1/backends");
  for (const json& b : all["backends"]) {
    if (b["url"] == url) return b;
  }
  return nullptr;
}

}  // namespace

TEST_CASE("e2e faults: a killed backend and a flaky one - 300 tasks all DONE within the slots") {
  TempDir dir;
  MockBackend steady(dir, {"--latency-ms", "40"});
  MockBackend flaky(dir, {"--latency-ms", "40", "--fail-rate", "0.2", "--seed", "7"});
  auto victim = std::make_unique<MockBackend>(dir, std::vector<std::string>{"--latency-ms", "40"});
  int victim_port = victim->port();
  std::string victim_url = victim->url();
  Server server(dir, {"--max-attempts", "10", "--retry-base-ms", "50", "--retry-cap-ms", "400"},
                {{"IMAGE_GEN_URL_1", steady.url()},
                 {"IMAGE_GEN_URL_2", flaky.url()},
                 {"IMAGE_GEN_URL_3", victim_url}});
  REQUIRE(server.started());

  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) ids.push_back(server.submit("t" + std::to_string(i)));

  // Kill one backend mid-run; it must be marked down within fall x interval (3 x 200 ms).
  REQUIRE(
      eventually([&] { return server.get("/api/v1/stats/queues")["queues"][0]["running"] > 0; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  victim->kill_hard();
  auto killed_at = std::chrono::steady_clock::now();
  REQUIRE(eventually([&] { return backend_of(server, victim_url)["state"] == "down"; },
                     std::chrono::seconds(5), std::chrono::milliseconds(20)));
  auto down_after = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - killed_at);
  CHECK(down_after.count() <= 600 + 400);  // fall x interval, plus one probe's slack

  // Bring it back on the same port: it is up again after `rise` passing probes.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  victim = std::make_unique<MockBackend>(dir, std::vector<std::string>{"--latency-ms", "40"},
                                         victim_port);
  REQUIRE(victim->url() == victim_url);
  CHECK(eventually([&] { return backend_of(server, victim_url)["state"] == "up"; },
                   std::chrono::seconds(20)));

  int done = 0;
  for (const auto& id : ids) {
    json t = server.wait_final(id, std::chrono::seconds(120));
    CAPTURE(id);
    CHECK(t["status"] == "DONE");
    if (t["status"] != "DONE") continue;
    ++done;
    // It ran to DONE once, and nothing ran after that: the done attempt is the last one.
    int done_attempts = 0;
    for (const json& a : t["attempts"]) done_attempts += a["outcome"] == "done";
    CHECK(done_attempts == 1);
    CHECK(t["attempts"].back()["outcome"] == "done");
  }
  CHECK(done == 300);
  // No backend ever held more requests than its single slot; the steady one served each
  // prompt at most once.
  for (MockBackend* m : {&steady, &flaky, victim.get()}) CHECK(m->stats()["peak_in_flight"] <= 1);
  json steady_stats = steady.stats();
  for (auto& [prompt, n] : steady_stats["prompts"].items()) CHECK(n.get<int>() == 1);
  json flaky_state = backend_of(server, flaky.url());
  CHECK(flaky_state["failures"].get<int>() > 0);
  CHECK(flaky_state["latency_ms"]["mean"].get<double>() > 0);
  MESSAGE("fault test: 300/300 DONE, killed backend down after "
          << down_after.count() << " ms; flaky failures " << flaky_state["failures"]);
}

TEST_CASE("e2e faults: a 4xx answer fails the task at once without a retry") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5", "--status-code", "400"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  json t = server.wait_final(server.submit("bad request"));
  CHECK(t["status"] == "FAILED");
  CHECK(t["attempt"] == 1);
  REQUIRE(t["attempts"].size() == 1);
  CHECK(t["error"].get<std::string>().find("HTTP 400") != std::string::npos);
  CHECK(b.stats()["requests"] == 1);
  CHECK(backend_of(server, b.url())["state"] == "up");  // the task's fault, not the backend's
}

TEST_CASE("e2e faults: spent attempts end FAILED with the list of attempts") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5", "--status-code", "500"});
  Server server(dir, {"--retry-base-ms", "20", "--retry-cap-ms", "50", "--max-fails", "100"},
                {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  json t = server.wait_final(server.submit("doomed", {{"max_attempts", 3}}));
  CHECK(t["status"] == "FAILED");
  CHECK(t["attempt"] == 3);
  REQUIRE(t["attempts"].size() == 3);
  for (const json& a : t["attempts"]) {
    CHECK(a["backend"] == b.url());
    CHECK(a["error"].get<std::string>().find("HTTP 500") != std::string::npos);
    CHECK(a["duration_ms"].get<int>() >= 0);
  }
  CHECK(t["attempts"][0]["outcome"] == "retry");
  CHECK(t["attempts"][2]["outcome"] == "failed");
  CHECK(t["error"].get<std::string>().find("all 3 attempts failed") != std::string::npos);
  CHECK(b.stats()["requests"] == 3);
}

TEST_CASE("e2e faults: a hanging backend times out per attempt") {
  TempDir dir;
  MockBackend b(dir, {"--hang-rate", "1"});
  Server server(dir, {"--retry-base-ms", "20"}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  auto started = std::chrono::steady_clock::now();
  json t = server.wait_final(server.submit("hangs", {{"timeout_s", 1}, {"max_attempts", 2}}));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  CHECK(t["status"] == "FAILED");
  CHECK(t["attempt"] == 2);
  CHECK(t["error"].get<std::string>().find("timed out") != std::string::npos);
  CHECK(took.count() >= 2000);
  CHECK(took.count() < 10000);
  // The backend saw both hung requests end (the server hung up on them).
  CHECK(eventually([&] { return b.stats()["in_flight"] == 0; }));
}

TEST_CASE("e2e faults: cancel a queued task and a running one") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5000"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  std::string running = server.submit("long one");
  std::string claimed = server.submit("claimed for the slot next");  // one claim per slot
  std::string queued = server.submit("waits behind it");
  REQUIRE(
      eventually([&] { return server.get("/api/v1/tasks/" + running)["status"] == "RUNNING"; }));
  CHECK(server.get("/api/v1/tasks/" + queued)["status"] == "QUEUED");

  int status = 0;
  json c1 = server.del("/api/v1/tasks/" + queued, &status);
  CHECK(status == 200);
  CHECK(c1["status"] == "CANCELED");
  json c2 = server.post("/api/v1/tasks/" + running + "/cancel", "", &status);
  CHECK(status == 200);
  CHECK(c2["status"] == "CANCELED");
  // The backend sees its connection aborted, and the slot is free again at once.
  CHECK(eventually([&] { return b.stats()["aborted"] == 1; }, std::chrono::seconds(3)));
  json again = server.del("/api/v1/tasks/" + running, &status);
  CHECK(status == 409);
  CHECK(again["error"]["code"] == "task_final");
  std::string next = server.submit("after the cancel");
  CHECK(eventually([&] { return server.get("/api/v1/tasks/" + next)["status"] == "RUNNING"; },
                   std::chrono::seconds(3)));
  server.del("/api/v1/tasks/" + next, &status);
  server.del("/api/v1/tasks/" + claimed, &status);
  // The canceled queued task never ran.
  CHECK(b.stats()["prompts"].count("waits behind it") == 0);
  CHECK(server.get("/api/v1/tasks/" + queued)["status"] == "CANCELED");
}

TEST_CASE("e2e faults: busy answers (503 Retry-After) do not spend an attempt") {
  TempDir dir;
  MockBackend busy(dir, {"--latency-ms", "5", "--status-code", "503", "--retry-after", "5"});
  MockBackend ok(dir, {"--latency-ms", "5"});
  Server server(dir, {}, {{"IMAGE_GEN_URL_1", busy.url()}, {"IMAGE_GEN_URL_2", ok.url()}});
  REQUIRE(server.started());
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(server.submit("b" + std::to_string(i)));
  for (const auto& id : ids) {
    json t = server.wait_final(id);
    CHECK(t["status"] == "DONE");
    CHECK(t["attempt"] == 1);  // a busy attempt is given back
    CHECK(t["backend"] == ok.url());
  }
  // One 503 made the busy backend rest for its Retry-After: it took one request only.
  CHECK(busy.stats()["requests"] == 1);
  json s = backend_of(server, busy.url());
  CHECK(s["state"] == "busy");
  CHECK(s["failures"] == 0);
}

TEST_CASE("e2e faults: a task runs once its pool's only backend comes back") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  b.set_healthy(false);
  Server server(dir, {"--fall", "1", "--rise", "2"}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  REQUIRE(eventually([&] { return backend_of(server, b.url())["state"] == "down"; }));
  std::string id = server.submit("patient");
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(server.get("/api/v1/tasks/" + id)["status"] == "QUEUED");
  b.set_healthy(true);
  CHECK(server.wait_final(id)["status"] == "DONE");
}

TEST_CASE("e2e faults: pools from the config file - one dead pool never blocks another") {
  TempDir dir;
  MockBackend dead(dir, {"--latency-ms", "5"});
  dead.set_healthy(false);
  MockBackend docs(dir, {"--latency-ms", "5"});
  MockBackend img(dir, {"--latency-ms", "5"});
  std::string config = dir.file("taskserver.toml");
  {
    std::ofstream out(config);
    out << "max-attempts = 4\n"
        << "[pool.docs]\nrequest_path = \"/v1/documents/parse\"\nurls = [\"" << docs.url()
        << "\"]\nslots = 2\ntimeout_s = 30\n"
        << "[pool.video]\nrequest_path = \"/v1/video\"\nhealth_path = \"/health\"\nurls = [\""
        << dead.url() << "\"]\n"
        << "[pool.image]\nurls = [\"" << img.url() << "\"]\n";
  }
  Server server(dir, {"--config", config, "--fall", "1"});
  REQUIRE(server.started());
  REQUIRE(eventually([&] { return backend_of(server, dead.url())["state"] == "down"; }));
  int status = 0;
  std::vector<std::string> video;
  for (int i = 0; i < 5; ++i) {
    json t = server.post("/api/v1/tasks", R"({"type":"video","payload":{"clip":1}})", &status);
    REQUIRE(status == 202);
    video.push_back(t["task_id"]);
  }
  std::vector<std::string> finished;
  for (int i = 0; i < 5; ++i) {
    json d = server.post("/api/v1/tasks", json{{"type", "docs"}, {"payload", {{"doc", i}}}}.dump(),
                         &status);
    REQUIRE(status == 202);
    CHECK(d["max_attempts"] == 4);  // from the config file
    finished.push_back(d["task_id"]);
    finished.push_back(server.submit("img" + std::to_string(i)));
  }
  for (const auto& id : finished) CHECK(server.wait_final(id)["status"] == "DONE");
  // The docs backend got the pool's request path; its answer is the task's result.
  json r = server.get("/api/v1/tasks/" + finished[0] + "/result");
  CHECK(r["path"] == "/v1/documents/parse");
  CHECK(r["echo"]["doc"] == 0);
  // A result of many 64 KiB reads is streamed from disk whole and in order.
  std::string big(300'000, ' ');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + (i * 7 + i / 977) % 26);
  json bd = server.post("/api/v1/tasks", json{{"type", "docs"}, {"payload", {{"doc", big}}}}.dump(),
                        &status);
  REQUIRE(status == 202);
  REQUIRE(server.wait_final(bd["task_id"])["status"] == "DONE");
  json br = server.get("/api/v1/tasks/" + bd["task_id"].get<std::string>() + "/result");
  CHECK(br["echo"]["doc"] == big);
  for (const auto& id : video) CHECK(server.get("/api/v1/tasks/" + id)["status"] == "QUEUED");
  json names = json::array();
  json queues = server.get("/api/v1/stats/queues");
  for (const json& q : queues["queues"]) names.push_back(q["pool"]);
  CHECK(names == json({"docs", "image", "video"}));
}
