// Issue 5 end to end: lists, batches, live updates, long-poll, queue positions, webhooks,
// uploads and the API description, over real HTTP.
#include <SQLiteCpp/Database.h>
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

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
        std::string line = block.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? block.size() : nl + 1;
        if (line.rfind("data: ", 0) == 0) data_line += line.substr(6);
        if (line.rfind("event: ", 0) == 0) event_name = line.substr(7);
      }
      if (!event_name.empty()) events.push_back({{"event", event_name}});
      else if (!data_line.empty()) events.push_back(json::parse(data_line));
    }
    return !until(events) && std::chrono::steady_clock::now() < deadline;
  });
  return events;
}

std::string hmac_hex(const std::string& key, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  std::string out;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", mac[i]);
    out += buf;
  }
  return out;
}

}  // namespace

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
      CHECK(seen.insert(id).second);  // never twice
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
      {"type":"image","payload":{"prompt":"d"},"priority":42}]})", &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "tasks[3].priority");
  bad = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"a"}},
      {"type":"nosuch","payload":{}}]})", &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "tasks[1].type");
  CHECK(server.count_rows() == 0);

  json ok = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"a"},"priority":"high"},
      {"type":"image","payload":{"prompt":"b"},"idempotency_key":"batch-b"},
      {"type":"image","payload":{"prompt":"c"}}]})", &status);
  CHECK(status == 202);
  REQUIRE(ok["task_ids"].size() == 3);
  CHECK(ok["tasks"][0]["priority"] == 8);
  CHECK(server.count_rows() == 3);
  for (const json& id : ok["task_ids"]) CHECK(server.wait_final(id)["status"] == "DONE");
  // A batch repeating a key gets the first task for it, and creates only the rest.
  json again = server.post("/api/v1/tasks/batch", R"({"tasks":[
      {"type":"image","payload":{"prompt":"b2"},"idempotency_key":"batch-b"},
      {"type":"image","payload":{"prompt":"e"}}]})", &status);
  CHECK(status == 202);
  CHECK(again["task_ids"][0] == ok["task_ids"][1]);
  CHECK(again["tasks"][0]["created"] == false);
  CHECK(again["tasks"][1]["created"] == true);
  CHECK(server.count_rows() == 4);
}

TEST_CASE("e2e api: a task's SSE stream sends each state in order and ends at the final one") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "300"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  std::string blocker = server.submit("first in line");
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
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
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
  REQUIRE(eventually([&] { return server2.get("/api/v1/tasks/" + long_id)["status"] == "RUNNING"; }));
  t0 = std::chrono::steady_clock::now();
  json still = server2.get("/api/v1/tasks/" + long_id + "?wait=1");
  ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
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
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  CHECK(ms < 10000);
  CHECK(answered.load() == kPolls);
  CHECK(answered_200.load() == kPolls);
  CHECK(still_queued.load() == kPolls);
}

TEST_CASE("e2e api: queue position falls as the tasks ahead finish") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "300"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(server.submit("q" + std::to_string(i)));
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
  REQUIRE(eventually([&] {
    return server->get("/api/v1/backends")["backends"][0]["state"] == "down";
  }));
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
    db.exec("INSERT INTO tasks (task_id, type, payload, priority, status, created_at) VALUES "
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

TEST_CASE("e2e api: webhooks are signed - retried after a 500 - and shown on the task") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "10"});
  // A receiver that fails the first delivery.
  httplib::Server receiver;
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> got;  // body, signature
  std::atomic<int> calls{0};
  receiver.Post("/hook", [&](const httplib::Request& req, httplib::Response& res) {
    std::lock_guard<std::mutex> lock(mu);
    got.emplace_back(req.body, req.get_header_value("X-Taskserver-Signature"));
    res.status = ++calls == 1 ? 500 : 200;
  });
  int port = receiver.bind_to_any_port("127.0.0.1");
  std::thread rt([&] { receiver.listen_after_bind(); });
  Server server(dir, {"--webhook-secret", "s3cret", "--retry-base-ms", "200"},
                {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  std::string id = server.submit("hooked",
                          {{"webhook_url", "http://127.0.0.1:" + std::to_string(port) + "/hook"}});
  CHECK(eventually([&] { return calls.load() >= 2; }, std::chrono::seconds(15)));
  json t;
  CHECK(eventually([&] {
    t = server.get("/api/v1/tasks/" + id);
    return t["webhook"]["state"] == "delivered";
  }));
  receiver.stop();
  rt.join();
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE(got.size() == 2);
  for (const auto& [body, signature] : got) {
    CHECK(signature == "sha256=" + hmac_hex("s3cret", body));
    json delivered = json::parse(body);
    CHECK(delivered["task_id"] == id);
    CHECK(delivered["status"] == "DONE");
  }
  REQUIRE(t["webhook"]["deliveries"].size() == 2);
  CHECK(t["webhook"]["deliveries"][0]["status_code"] == 500);
  CHECK(t["webhook"]["deliveries"][1]["status_code"] == 200);
  // Only http(s) webhook URLs are taken.
  int status = 0;
  json bad = server.post("/api/v1/tasks",
                         R"({"type":"image","payload":{"prompt":"x"},"webhook_url":"file:///etc/passwd"})",
                         &status);
  CHECK(status == 422);
  CHECK(bad["error"]["field"] == "webhook_url");
}

TEST_CASE("e2e api: uploads - an audio file becomes a transcribe task") {
  TempDir dir;
  MockBackend whisper(dir, {"--latency-ms", "20"});
  Server server(dir, {}, {{"WHISPER_URL", whisper.url()}});
  REQUIRE(server.started());
  auto cli = server.client();
  std::string audio(200000, '\x01');
  httplib::MultipartFormDataItems items = {
      {"file", audio, "meeting.wav", "audio/wav"},
      {"language", "en", "", ""}};
  auto r = cli.Post("/api/v1/audio/async", items);
  REQUIRE(r);
  REQUIRE(r->status == 202);
  json t = json::parse(r->body);
  CHECK(t["type"] == "transcribe");
  CHECK(t["input"]["filename"] == "meeting.wav");
  CHECK(t["input"]["size"] == 200000);
  CHECK(t["payload"]["language"] == "en");
  json done = server.wait_final(t["task_id"]);
  REQUIRE(done["status"] == "DONE");
  CHECK(done["result_url"] == "/api/v1/tasks/" + t["task_id"].get<std::string>() + "/result");
  json text = server.get(done["result_url"]);
  CHECK(text["text"] == "transcript of meeting.wav (200000 bytes)");
  // The generic route takes multipart too: a task part and a file part.
  httplib::MultipartFormDataItems generic = {
      {"task", R"({"type":"transcribe","payload":{"model":"base"},"priority":"high"})", "", "application/json"},
      {"file", "abc", "clip.mp3", "audio/mpeg"}};
  r = cli.Post("/api/v1/tasks", generic);
  REQUIRE(r);
  CHECK(r->status == 202);
  CHECK(json::parse(r->body)["priority"] == 8);
  // An upload without its file is refused, and nothing is stored.
  httplib::MultipartFormDataItems no_file = {{"language", "en", "", ""}};
  r = cli.Post("/api/v1/audio/async", no_file);
  REQUIRE(r);
  CHECK(r->status == 422);
  CHECK(server.count_rows() == 2);
}

TEST_CASE("e2e api: /openapi.json lists every route the server has") {
  TempDir dir;
  MockBackend b(dir, {"--latency-ms", "5"});
  Server server(dir, {}, {{"IMAGE_GEN_URL", b.url()}});
  REQUIRE(server.started());
  json doc = server.get("/openapi.json");
  CHECK(doc["openapi"] == "3.1.0");
  const json& paths = doc["paths"];
  // Every route of DESIGN.md's table is described, with its methods.
  std::vector<std::pair<std::string, std::string>> design = {
      {"post", "/api/v1/tasks"}, {"post", "/api/v1/tasks/batch"}, {"get", "/api/v1/tasks/{id}"},
      {"get", "/api/v1/tasks"}, {"get", "/api/v1/tasks/{id}/result"},
      {"get", "/api/v1/tasks/{id}/events"}, {"delete", "/api/v1/tasks/{id}"},
      {"post", "/api/v1/tasks/{id}/cancel"}, {"post", "/api/v1/image/async"},
      {"get", "/api/images/{id}"}, {"post", "/api/v1/audio/async"}, {"get", "/health"},
      {"get", "/ready"}, {"get", "/metrics"}, {"get", "/api/v1/stats/queues"},
      {"get", "/api/v1/stats/workers"}, {"get", "/api/v1/backends"}, {"get", "/"},
      {"get", "/api/v1/events"}, {"get", "/openapi.json"}};
  for (const auto& [method, path] : design) {
    CAPTURE(path);
    CHECK(paths.contains(path));
    if (paths.contains(path)) CHECK(paths[path].contains(method));
  }
  // And every GET it describes is served (no "no route" 404): the description is the routes.
  std::string id = server.submit("for the docs");
  server.wait_final(id);
  for (auto& [path, ops] : paths.items()) {
    if (!ops.contains("get") || path.find("events") != std::string::npos) continue;
    std::string concrete = path;
    for (const char* p : {"{id}", "{file}"}) {
      size_t at = concrete.find(p);
      if (at != std::string::npos) concrete.replace(at, std::strlen(p), std::string(p) == "{id}" ? id : "app.js");
    }
    int status = 0;
    json r = server.get(concrete, &status);
    CAPTURE(concrete);
    bool no_route = status == 404 && r.is_object() && r["error"]["message"].get<std::string>().rfind("no route", 0) == 0;
    CHECK_FALSE(no_route);
  }
}
