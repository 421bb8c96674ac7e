// The API end to end: live updates over Server-Sent Events and long-polls (?wait=), over real
// HTTP.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "support/harness.h"

using namespace tst;

namespace {

// Reads a Server-Sent Events stream until `until` says stop, the stream ends or the timeout.
// Returns the data of each event (parsed), and the named events as {"event": name}.
std::vector<json> read_sse(const std::string& url, const std::string& path,
                           const std::function<bool(const std::vector<json>&)>& until,
                           std::chrono::seconds timeout = std::chrono::seconds(20),
                           const std::function<void()>& on_open = nullptr) {
  httplib::Client cli = http_client(url);
  cli.set_read_timeout(timeout.count(), 0);
  std::vector<json> events;
  std::string buffer;
  bool opened = false;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  cli.Get(path.c_str(), [&](const char* data, size_t len) {
    buffer.append(data, len);
    if (!opened && on_open) {
      opened = true;
      on_open();
    }
    size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      std::string block = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      std::string event_name, data_line;
      size_t pos = 0;
      while (pos < block.size()) {
        size_t nl = block.find('\n', pos);
        std::string line =
            block.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? block.size() : nl + 1;
        if (line.rfind("data: ", 0) == 0) data_line += line.substr(6);
        if (line.rfind("event: ", 0) == 0) event_name = line.substr(7);
      }
      if (!event_name.empty())
        events.push_back({{"event", event_name}});
      else if (!data_line.empty())
        events.push_back(json::parse(data_line));
    }
    return !until(events) && std::chrono::steady_clock::now() < deadline;
  });
  return events;
}

}  // namespace

TEST_CASE("e2e api: a task's SSE stream sends each state in order and ends at the final one") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "300"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  // The first runs, the second is claimed for the slot next: the third is QUEUED when its
  // stream opens.
  std::string blocker = server.submit("first in line");
  server.submit("next in line");
  std::string id = server.submit("streamed");
  auto events = read_sse(server.url(), "/api/v1/tasks/" + id + "/events",
                         [](const std::vector<json>&) { return false; });  // until it ends
  std::vector<std::string> statuses;
  for (const json& e : events) statuses.push_back(e.value("status", ""));
  CHECK(statuses == std::vector<std::string>{"QUEUED", "RUNNING", "DONE"});
  REQUIRE(events.size() == 3);
  CHECK(events[0]["task"]["task_id"] == id);
  CHECK(events[1]["previous_status"] == "QUEUED");
  CHECK(events[2]["task"]["result_url"] == "/api/images/" + id);
  CHECK(events[1]["id"].get<int>() < events[2]["id"].get<int>());
  // A final task's stream is one event.
  auto done = read_sse(server.url(), "/api/v1/tasks/" + blocker + "/events",
                       [](const std::vector<json>&) { return false; });
  REQUIRE(done.size() == 1);
  CHECK(done[0]["status"] == "DONE");
  int status = 0;
  server.get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z/events", &status);
  CHECK(status == 404);
}

TEST_CASE("e2e api: the all-tasks stream carries every change") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "50"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  std::vector<std::string> ids;
  auto events = read_sse(
      server.url(), "/api/v1/events",
      [&](const std::vector<json>& evs) {
        int done = 0;
        for (const json& e : evs) done += e.value("status", "") == "DONE";
        return done == 3;
      },
      std::chrono::seconds(20),
      [&] {
        for (int i = 0; i < 3; ++i) ids.push_back(server.submit("s" + std::to_string(i)));
      });
  std::map<std::string, std::vector<std::string>> by_task;
  int64_t last_id = 0;
  for (const json& e : events) {
    if (!e.contains("task_id")) continue;
    CHECK(e["id"].get<int64_t>() > last_id);
    last_id = e["id"];
    by_task[e["task_id"]].push_back(e["status"]);
  }
  for (const auto& id : ids) {
    CAPTURE(id);
    CHECK(by_task[id] == std::vector<std::string>{"QUEUED", "RUNNING", "DONE"});
  }
}

TEST_CASE("e2e api: wait returns at completion - or at its limit with the task still running") {
  TempDir dir;
  MockBackend fast(dir, {"--latency-ms", "400"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", fast.url()}});
  REQUIRE(server.started());
  std::string id = server.submit("quick");
  auto t0 = std::chrono::steady_clock::now();
  json t = server.get("/api/v1/tasks/" + id + "?wait=10");
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  CHECK(t["status"] == "DONE");
  // On a failure, the task's own times tell a late task from a wait that missed its end.
  INFO("the task as answered: " << t.dump());
  INFO("the server's log: " << server.process().stderr_text());
  CHECK(ms < 5000);

  TempDir dir2;
  MockBackend slow(dir2, {"--latency-ms", "5000"});
  Server server2(dir2, {}, {{"IMAGE_GEN_URL", slow.url()}});
  REQUIRE(server2.started());
  std::string long_id = server2.submit("slow");
  REQUIRE(
      eventually([&] { return server2.get("/api/v1/tasks/" + long_id)["status"] == "RUNNING"; }));
  t0 = std::chrono::steady_clock::now();
  json still = server2.get("/api/v1/tasks/" + long_id + "?wait=1");
  ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
           .count();
  CHECK(still["status"] == "RUNNING");
  CHECK(ms >= 900);
  CHECK(ms < 3000);
  int status = 0;
  json bad = server2.get("/api/v1/tasks/" + long_id + "?wait=61", &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "wait");
}

TEST_CASE("e2e api: long-polls hold no serving thread - and shutdown answers them at once") {
  TempDir dir;
  Server server(dir, {"--http-threads", "4"});  // no backend: the task stays QUEUED
  REQUIRE(server.started());
  std::string id = server.submit("waits");
  // Three times as many long-polls as serving threads, each waiting up to 20 s.
  constexpr int kPolls = 12;
  std::atomic<int> answered{0}, answered_200{0}, still_queued{0};
  std::vector<std::thread> polls;
  for (int i = 0; i < kPolls; ++i) {
    polls.emplace_back([&] {
      int status = 0;
      json t = server.get("/api/v1/tasks/" + id + "?wait=20", &status);
      if (status == 200) ++answered_200;
      if (t.is_object() && t.value("status", "") == "QUEUED") ++still_queued;
      ++answered;
    });
  }
  // All of them are held (the server counts a long-poll when it answers it)...
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  // ... and the server still serves others meanwhile: with a thread per long-poll, these would
  // wait until the long-polls end.
  int status = 0;
  json health = server.get("/health", &status);
  CHECK(status == 200);
  json other = server.get("/api/v1/tasks/" + id, &status);
  CHECK(status == 200);
  CHECK(other["status"] == "QUEUED");
  std::string second = server.submit("meanwhile");
  // A long-poll on no task is answered at once with the JSON 404, not after its wait.
  auto t_missing = std::chrono::steady_clock::now();
  json missing = server.get("/api/v1/tasks/01m85wj7s6kt1ykfemt8secf9z?wait=20", &status);
  CHECK(status == 404);
  CHECK(missing["error"]["code"] == "not_found");
  json malformed = server.get("/api/v1/tasks/not-an-id?wait=20", &status);
  CHECK(status == 404);
  CHECK(malformed["error"]["code"] == "not_found");
  CHECK(std::chrono::steady_clock::now() - t_missing < std::chrono::seconds(10));
  CHECK(answered.load() == 0);  // every long-poll still waiting

  // SIGTERM: the long-polls are answered with the task as it is, and the server exits 0 long
  // before their 20 s are over.
  auto t0 = std::chrono::steady_clock::now();
  CHECK(server.stop() == 0);
  for (auto& t : polls) t.join();
  auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  CHECK(ms < 10000);
  CHECK(answered.load() == kPolls);
  CHECK(answered_200.load() == kPolls);
  CHECK(still_queued.load() == kPolls);
}
