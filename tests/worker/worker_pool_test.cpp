// WorkerPool (worker/worker_pool.h) against a fake store (support/fake_store.h) whose changes
// reach on_change as the commit listener's would, and a scripted backend: a real HTTP server on
// 127.0.0.1. Retry and rest times run on a ManualClock.
#include "worker/worker_pool.h"

#include <doctest/doctest.h>
#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/ids.h"
#include "store/blob_store.h"
#include "support/fake_store.h"
#include "support/harness.h"

using namespace ts;
using namespace std::chrono_literals;

namespace {

constexpr char kPath[] = "/v1/run";

// A backend on a free loopback port that answers its task requests (POST /v1/run) with the
// next reply of its script, 200 {"ok":true} once the script is used up; GET /health is 200.
// A hanging reply holds its request until release() or the end of the test.
class ScriptedBackend {
 public:
  struct Reply {
    int status = 200;
    std::string body = R"({"ok":true})";
    std::string content_type = "application/json";
    std::string retry_after;  // sent as Retry-After when set
    bool hang = false;

    static Reply with(int status, std::string body, std::string content_type = "application/json",
                      std::string retry_after = "") {
      Reply r;
      r.status = status;
      r.body = std::move(body);
      r.content_type = std::move(content_type);
      r.retry_after = std::move(retry_after);
      return r;
    }
    static Reply hanging() {
      Reply r;
      r.hang = true;
      return r;
    }
  };

  ScriptedBackend() {
    server_.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok", "text/plain");
    });
    server_.Post(kPath, [this](const httplib::Request& req, httplib::Response& res) {
      Reply r;
      {
        std::unique_lock<std::mutex> lock(mu_);
        bodies_.push_back(req.body);
        if (!script_.empty()) {
          r = script_.front();
          script_.pop_front();
        }
        if (r.hang) {
          ++hanging_;
          cv_.wait_for(lock, 30s, [&] { return released_; });
          --hanging_;
        }
      }
      res.status = r.status;
      if (!r.retry_after.empty()) res.set_header("Retry-After", r.retry_after);
      res.set_content(r.body, r.content_type);
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    REQUIRE(tst::eventually([&] { return server_.is_running(); }, 10s, 1ms));
  }
  ~ScriptedBackend() {
    release();
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void push(Reply r) {
    std::lock_guard<std::mutex> lock(mu_);
    script_.push_back(std::move(r));
  }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_ = true;
    }
    cv_.notify_all();
  }
  size_t requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_.size();
  }
  std::vector<std::string> bodies() {
    std::lock_guard<std::mutex> lock(mu_);
    return bodies_;
  }
  int hanging() {
    std::lock_guard<std::mutex> lock(mu_);
    return hanging_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Reply> script_;         // guarded by mu_
  std::vector<std::string> bodies_;  // guarded by mu_
  int hanging_ = 0;                  // guarded by mu_
  bool released_ = false;            // guarded by mu_
};

BlobStore open_blobs(const std::string& dir) {
  auto b = BlobStore::open(dir);
  REQUIRE(b.ok());
  return std::move(*b);
}

// One pool of one worker on one backend slot, its store's changes wired to on_change. Results
// are files unless a test says how many bytes may be kept in the store.
struct Fixture {
  explicit Fixture(size_t inline_result_max = 0)
      : results(open_blobs(dir.file("results"))), inputs(open_blobs(dir.file("inputs"))) {
    PoolOptions o;
    o.inline_result_max = inline_result_max;
    o.name = "echo";
    o.request_path = kPath;
    o.backends = {{backend.url(), 1}};
    o.workers = 1;
    o.default_max_attempts = 3;
    o.retry.base_ms = 100;
    o.retry.cap_ms = 10'000;
    // Failures in a row must not eject the only backend in the middle of a test.
    o.health_policy.max_fails = 100;
    pool = std::make_unique<WorkerPool>(o, store, store, results, inputs, clock);
    pool->set_attempt_listener([this](const AttemptReport& r) {
      std::lock_guard<std::mutex> lock(mu);
      reports.push_back(r);
    });
  }
  // Starts the pool with the store's changes reaching on_change from now on.
  void start() {
    store.set_listener([this](const TaskChange& c) { pool->on_change(c); });
    REQUIRE(pool->start().ok());
  }

  int64_t submit(const std::string& payload = R"({"q":1})", int max_attempts = 3) {
    Task t;
    t.task_id = new_task_id(clock.now_ms());
    t.type = "echo";
    t.payload = payload;
    t.max_attempts = max_attempts;
    return store.add(t);
  }
  TaskState state(int64_t seq) {
    auto t = store.task(seq);
    REQUIRE(t);
    return t->status;
  }
  bool reaches(int64_t seq, TaskState s) {
    return tst::eventually([&] { return state(seq) == s; }, 10s, 1ms);
  }
  bool calls_reach(const std::string& op, size_t n) {
    return tst::eventually([&] { return store.calls_of(op).size() >= n; }, 10s, 1ms);
  }
  std::vector<AttemptReport> reported() {
    std::lock_guard<std::mutex> lock(mu);
    return reports;
  }

  ManualClock clock;
  tst::TempDir dir;
  tst::FakeStore store{clock};
  BlobStore results;
  BlobStore inputs;
  ScriptedBackend backend;
  std::mutex mu;
  std::vector<AttemptReport> reports;  // guarded by mu
  std::unique_ptr<WorkerPool> pool;
};

// The calls that changed (or tried to change) one task's state, in order.
std::vector<std::string> transitions_of(tst::FakeStore& store, int64_t seq) {
  std::vector<std::string> out;
  for (const auto& c : store.calls()) {
    if (c.seq != seq) continue;
    if (c.op == "mark_running" || c.op == "finish_done" || c.op == "finish_failed" ||
        c.op == "requeue" || c.op == "cancel") {
      out.push_back(c.op + (c.changed ? "" : " (no change)"));
    }
  }
  return out;
}

}  // namespace

TEST_CASE("worker pool: a queued task is marked RUNNING - called - DONE with its result stored") {
  Fixture f;
  f.backend.push(ScriptedBackend::Reply::with(200, R"({"answer":42})"));
  f.start();
  int64_t seq = f.submit(R"({"q":"life"})");
  REQUIRE(f.reaches(seq, TaskState::kDone));

  CHECK(transitions_of(f.store, seq) == std::vector<std::string>{"mark_running", "finish_done"});
  // The task is claimed first (no backend yet), then its call starts on the slot it got.
  auto marked = f.store.calls_of("mark_running").at(0);
  CHECK(marked.backend.empty());
  CHECK(marked.now_ms == f.clock.now_ms());
  auto started = f.store.calls_of("note_started").at(0);
  CHECK(started.backend == f.backend.url());
  CHECK(started.attempt_number == 1);
  CHECK(started.now_ms == f.clock.now_ms());
  CHECK(f.backend.bodies() == std::vector<std::string>{R"({"q":"life"})"});

  auto done = f.store.calls_of("finish_done").at(0);
  CHECK(done.attempt.number == 1);
  CHECK(done.attempt.outcome == "done");
  CHECK(done.attempt.backend == f.backend.url());
  CHECK(done.attempt.error.empty());
  CHECK(done.attempt.started_at == f.clock.now_ms());
  CHECK(done.result.size == 13);
  CHECK(done.result.content_type == "application/json");
  auto task = f.store.task(seq);
  auto stored = f.results.read(task->task_id);
  REQUIRE(stored.ok());
  CHECK(*stored == R"({"answer":42})");
  CHECK(task->attempt == 1);

  auto reports = f.reported();
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].pool == "echo");
  CHECK(reports[0].task_id == task->task_id);
  CHECK(reports[0].outcome == "done");
  // The counters follow the changes the pool heard.
  CHECK(tst::eventually([&] { return f.pool->stats().running == 0; }, 10s, 1ms));
  CHECK(f.pool->stats().queued == 0);
}

TEST_CASE("worker pool: a backlog left in the store is counted at start and run in order") {
  Fixture f;
  int64_t low = f.submit(R"({"n":"low"})");
  Task urgent;
  urgent.task_id = new_task_id(f.clock.now_ms());
  urgent.type = "echo";
  urgent.payload = R"({"n":"urgent"})";
  urgent.priority = 9;
  int64_t high = f.store.add(urgent);
  // Neither was heard by the pool: the feeder finds them in the store.
  f.start();
  REQUIRE(f.reaches(low, TaskState::kDone));
  REQUIRE(f.reaches(high, TaskState::kDone));
  CHECK(f.backend.bodies() == std::vector<std::string>{R"({"n":"urgent"})", R"({"n":"low"})"});
  // Counted at start from the store (2), then down by the two changes it heard.
  CHECK(f.store.calls_of("queued_blocks").size() == 1);
  CHECK(tst::eventually([&] { return f.pool->stats().running == 0; }, 10s, 1ms));
  CHECK(f.pool->stats().queued == 0);
}

TEST_CASE("worker pool: a 500 requeues after a backoff and counts the attempt - then DONE") {
  Fixture f;
  f.backend.push(ScriptedBackend::Reply::with(500, "overloaded", "text/plain"));
  f.start();
  int64_t seq = f.submit();
  REQUIRE(f.calls_reach("requeue", 1));
  auto r = f.store.calls_of("requeue").at(0);
  CHECK(r.changed);
  CHECK_FALSE(r.give_back_attempt);
  CHECK(r.attempt.number == 1);
  CHECK(r.attempt.outcome == "retry");
  CHECK(r.error.find("HTTP 500") != std::string::npos);
  REQUIRE(r.next_at.has_value());
  // base·2^0 with equal jitter: between half of it and all of it.
  int64_t delay = *r.next_at - f.clock.now_ms();
  CHECK(delay >= 50);
  CHECK(delay <= 100);
  auto t = f.store.task(seq);
  CHECK(t->status == TaskState::kQueued);
  CHECK(t->attempt == 1);
  CHECK(t->next_attempt_at == r.next_at);

  f.clock.set_ms(*r.next_at);
  REQUIRE(f.reaches(seq, TaskState::kDone));
  auto marks = f.store.calls_of("mark_running");
  REQUIRE(marks.size() == 2);
  CHECK(marks[1].now_ms >= *r.next_at);  // not before it was due
  CHECK(f.store.calls_of("finish_done").at(0).attempt.number == 2);
  CHECK(f.store.task(seq)->attempt == 2);
}

TEST_CASE("worker pool: a small answer goes to the store with the DONE - a large one to a file") {
  Fixture f(/*inline_result_max=*/16);
  f.backend.push(ScriptedBackend::Reply::with(200, R"({"answer":42})"));  // 13 bytes
  std::string big(100, 'x');
  f.backend.push(ScriptedBackend::Reply::with(200, big));
  f.start();
  int64_t small = f.submit(R"({"n":1})");
  REQUIRE(f.reaches(small, TaskState::kDone));
  int64_t large = f.submit(R"({"n":2})");
  REQUIRE(f.reaches(large, TaskState::kDone));
  auto dones = f.store.calls_of("finish_done");
  REQUIRE(dones.size() == 2);
  CHECK(dones[0].result_bytes == std::optional<std::string>(R"({"answer":42})"));
  CHECK_FALSE(f.results.read(f.store.task(small)->task_id).ok());  // no file of it
  CHECK_FALSE(dones[1].result_bytes.has_value());
  CHECK(dones[1].result.size == 100);
  auto file = f.results.read(f.store.task(large)->task_id);  // in place before its DONE
  REQUIRE(file.ok());
  CHECK(*file == big);
}

TEST_CASE("worker pool: the last of the attempts that got a 500 FAILS the task") {
  Fixture f;
  for (int i = 0; i < 3; ++i)
    f.backend.push(ScriptedBackend::Reply::with(500, "broken", "text/plain"));
  f.start();
  int64_t seq = f.submit(R"({"q":1})", 3);
  int64_t due = 0;
  for (int n = 1; n <= 2; ++n) {
    REQUIRE(f.calls_reach("requeue", n));
    auto r = f.store.calls_of("requeue").at(n - 1);
    CHECK(r.attempt.number == n);
    CHECK_FALSE(r.give_back_attempt);
    REQUIRE(r.next_at.has_value());
    int64_t full = f.pool->options().retry.base_ms << (n - 1);
    int64_t delay = *r.next_at - f.clock.now_ms();
    CHECK(delay >= full / 2);
    CHECK(delay <= full);
    CHECK(f.store.calls_of("mark_running").back().now_ms >= due);
    due = *r.next_at;
    f.clock.set_ms(due);
  }
  REQUIRE(f.reaches(seq, TaskState::kFailed));
  auto failed = f.store.calls_of("finish_failed").at(0);
  CHECK(failed.attempt.number == 3);
  CHECK(failed.attempt.outcome == "failed");
  CHECK(failed.error.find("all 3 attempts failed") != std::string::npos);
  CHECK(failed.error.find("HTTP 500") != std::string::npos);
  CHECK(f.store.calls_of("mark_running").back().now_ms >= due);
  CHECK(transitions_of(f.store, seq) == std::vector<std::string>{"mark_running", "requeue",
                                                                 "mark_running", "requeue",
                                                                 "mark_running", "finish_failed"});
  auto t = f.store.task(seq);
  CHECK(t->attempt == 3);
  CHECK(t->attempts.size() == 3);
  CHECK(f.backend.requests() == 3);
  CHECK(f.store.calls_of("finish_done").empty());
}

TEST_CASE("worker pool: a 4xx fails the task at once - no retry") {
  Fixture f;
  f.backend.push(ScriptedBackend::Reply::with(422, R"({"error":"bad prompt"})"));
  f.start();
  int64_t seq = f.submit(R"({"q":1})", 3);
  REQUIRE(f.reaches(seq, TaskState::kFailed));
  CHECK(transitions_of(f.store, seq) == std::vector<std::string>{"mark_running", "finish_failed"});
  auto failed = f.store.calls_of("finish_failed").at(0);
  CHECK(failed.attempt.number == 1);
  CHECK(failed.error.find("HTTP 422") != std::string::npos);
  CHECK(failed.error.find("bad prompt") != std::string::npos);
  CHECK(f.backend.requests() == 1);
}

TEST_CASE("worker pool: a 503 requeues at once without spending the attempt") {
  Fixture f;
  f.backend.push(ScriptedBackend::Reply::with(503, "busy", "text/plain", "2"));
  f.start();
  // One attempt only: it ends DONE only if the busy answer gave the attempt back.
  int64_t seq = f.submit(R"({"q":1})", 1);
  REQUIRE(f.calls_reach("requeue", 1));
  auto r = f.store.calls_of("requeue").at(0);
  CHECK(r.give_back_attempt);
  CHECK_FALSE(r.next_at.has_value());
  CHECK(r.attempt.outcome == "busy");
  CHECK(f.store.task(seq)->attempt == 0);
  int64_t busy_at = f.clock.now_ms();

  // The backend rests for its Retry-After (2 s on the pool's clock), then takes the task.
  f.clock.advance_ms(2'000);
  REQUIRE(f.reaches(seq, TaskState::kDone));
  auto marks = f.store.calls_of("mark_running");
  REQUIRE(marks.size() == 2);
  CHECK(marks[1].now_ms >= busy_at + 2'000);
  CHECK(f.store.calls_of("finish_done").at(0).attempt.number == 1);
  CHECK(f.store.calls_of("finish_failed").empty());
  CHECK(f.backend.requests() == 2);
}

TEST_CASE("worker pool: a cancel aborts the running call - the slot is free again") {
  Fixture f;
  f.backend.push(ScriptedBackend::Reply::hanging());
  f.start();
  int64_t seq = f.submit();
  REQUIRE(tst::eventually([&] { return f.backend.hanging() == 1; }, 10s, 1ms));
  CHECK(f.state(seq) == TaskState::kRunning);
  CHECK(f.pool->stats().running == 1);

  // The store's cancel reaches on_change (to CANCELED, from RUNNING) through the listener.
  REQUIRE(f.store.cancel(seq));
  REQUIRE(tst::eventually([&] { return !f.reported().empty(); }, 10s, 1ms));
  CHECK(f.reported()[0].outcome == "canceled");
  CHECK(f.backend.hanging() == 1);  // the backend never answered: the call was aborted
  CHECK(transitions_of(f.store, seq) == std::vector<std::string>{"mark_running", "cancel"});
  CHECK(f.state(seq) == TaskState::kCanceled);

  int64_t next = f.submit();
  REQUIRE(f.reaches(next, TaskState::kDone));
  CHECK_FALSE(f.results.read(f.store.task(seq)->task_id).ok());  // nothing stored for it
}

TEST_CASE("worker pool: shutdown waits its grace - then gives running attempts back") {
  Fixture f;
  f.backend.push(ScriptedBackend::Reply::hanging());
  f.start();
  int64_t seq = f.submit(R"({"q":1})", 1);
  REQUIRE(tst::eventually([&] { return f.backend.hanging() == 1; }, 10s, 1ms));

  auto t0 = std::chrono::steady_clock::now();
  f.pool->shutdown(100ms);
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took >= 100ms);
  CHECK(took < 10s);

  // Returned only after the worker recorded it: no waiting needed.
  auto requeues = f.store.calls_of("requeue");
  REQUIRE(requeues.size() == 1);
  CHECK(requeues[0].give_back_attempt);
  CHECK_FALSE(requeues[0].next_at.has_value());
  CHECK(requeues[0].attempt.outcome == "interrupted");
  CHECK(requeues[0].error == "interrupted by shutdown");
  auto t = f.store.task(seq);
  CHECK(t->status == TaskState::kQueued);
  CHECK(t->attempt == 0);
  CHECK(f.store.calls_of("finish_failed").empty());
  CHECK(f.reported().at(0).outcome == "interrupted");
}
