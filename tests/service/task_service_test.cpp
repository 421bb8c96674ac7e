// TaskService (service/task_service.h) over a real SQLite store in a temp folder, with a fake
// PoolDirectory: the pools are not the service, only what it asks of them.
#include "service/task_service.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/ids.h"
#include "service/events.h"
#include "service/pool_directory.h"
#include "store/blob_store.h"
#include "support/harness.h"
#include "support/stores.h"

using namespace ts;
using namespace std::chrono_literals;

namespace {

constexpr int64_t kEstimateBase = 1'000'000;

// The pools as the service sees them: a backlog bound per type, counted from the committed
// changes it hears (as WorkerPool does), and every change it heard, in order. Thread-safe.
class FakePools final : public PoolDirectory {
 public:
  struct Pool {
    int64_t max_queued = 100;
    int max_timeout_s = 600;
    int default_max_attempts = 4;
  };
  explicit FakePools(std::map<std::string, Pool> pools) : pools_(std::move(pools)) {}

  bool has_pool(const std::string& type) const override { return pools_.count(type) != 0; }
  std::vector<std::string> pool_names() const override {
    std::vector<std::string> out;
    for (const auto& [name, p] : pools_) out.push_back(name);
    return out;
  }
  bool try_reserve(const std::string& type) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_count_locked(type) + reserved_[type] + 1 > pools_.at(type).max_queued) {
      return false;
    }
    ++reserved_[type];
    return true;
  }
  void unreserve(const std::string& type) override {
    std::lock_guard<std::mutex> lock(mu_);
    --reserved_[type];
  }
  int default_max_attempts(const std::string& type) const override {
    return pools_.at(type).default_max_attempts;
  }
  int max_timeout_s(const std::string& type) const override {
    return pools_.at(type).max_timeout_s;
  }
  void on_change(const TaskChange& c) override {
    std::lock_guard<std::mutex> lock(mu_);
    heard_.push_back(c);
    if (c.from == TaskState::kQueued) queued_.erase({c.type, c.seq});
    if (c.to == TaskState::kQueued) queued_[{c.type, c.seq}] = c.priority;
  }
  StatusOr<int64_t> queue_position(const std::string& type, int priority,
                                   int64_t seq) const override {
    std::lock_guard<std::mutex> lock(mu_);
    int64_t ahead = 0;
    for (const auto& [key, p] : queued_) {
      if (key.first == type && (p > priority || (p == priority && key.second < seq))) ++ahead;
    }
    return ahead;
  }
  std::optional<int64_t> estimate_start_ms(const std::string&, int64_t position) const override {
    return kEstimateBase + position;
  }

  std::vector<TaskChange> heard() const {
    std::lock_guard<std::mutex> lock(mu_);
    return heard_;
  }
  int64_t reserved(const std::string& type) {
    std::lock_guard<std::mutex> lock(mu_);
    return reserved_[type];
  }

 private:
  int64_t queued_count_locked(const std::string& type) const {
    int64_t n = 0;
    for (const auto& [key, p] : queued_) n += key.first == type;
    return n;
  }

  const std::map<std::string, Pool> pools_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int64_t>, int> queued_;  // guarded by mu_: (type, seq) → prio
  std::map<std::string, int64_t> reserved_;                // guarded by mu_
  std::vector<TaskChange> heard_;                          // guarded by mu_
};

BlobStore open_blobs(const std::string& dir) {
  auto b = BlobStore::open(dir);
  REQUIRE(b.ok());
  return std::move(*b);
}

// A service as src/app/serve.cpp wires one: the store's commit listener feeds on_commit, and
// recover() runs before anything else.
struct Fixture {
  explicit Fixture(std::map<std::string, FakePools::Pool> pools = {{"image", {}}, {"audio", {}}})
      : pools(std::move(pools)),
        results(open_blobs(stores.dir.file("results"))),
        inputs(open_blobs(stores.dir.file("inputs"))) {
    start();
  }
  ~Fixture() { stop(); }

  void start() {
    StoreOptions options;
    options.sync_full = false;  // the service's logic, not durability, is under test
    auto opened = stores.try_open(clock, options);
    REQUIRE(opened.ok());
    store = std::move(*opened);
    service = std::make_unique<TaskService>(*store, pools, events, results, inputs, clock);
    store->set_commit_listener([this](const std::vector<TaskChange>& c) { service->on_commit(c); });
    REQUIRE(service->recover().ok());
  }
  // As a crash would leave it: no release_running, the same data folder opened again.
  void restart() {
    stop();
    start();
  }
  void stop() {
    service.reset();
    if (store) store->close();
    store.reset();
  }

  SubmitOutcome submit(NewTask r) {
    auto out = service->submit(std::move(r));
    REQUIRE(out.ok());
    return std::move(*out);
  }
  std::optional<Task> stored(const std::string& id) {
    auto t = store->get(id, true);
    REQUIRE(t.ok());
    return *t;
  }
  int64_t rows() {
    auto counts = store->count_by_status();
    REQUIRE(counts.ok());
    int64_t n = 0;
    for (const auto& [s, k] : *counts) n += k;
    return n;
  }
  // RUNNING, as a worker would make it.
  Task run(const Task& t) {
    auto marked = store->mark_running(t.seq, "http://backend", clock.now_ms());
    REQUIRE(marked.ok());
    REQUIRE(marked->has_value());
    return **marked;
  }

  tst::SqliteStores stores;
  ManualClock clock;
  EventHub events;
  FakePools pools;
  BlobStore results;
  BlobStore inputs;
  std::unique_ptr<TaskStore> store;
  std::unique_ptr<TaskService> service;
};

NewTask image(const std::string& prompt = "a fox") {
  NewTask r;
  r.type = "image";
  r.payload = R"({"prompt":")" + prompt + R"("})";
  return r;
}

NewTask keyed(const std::string& key, const std::string& prompt = "a fox") {
  NewTask r = image(prompt);
  r.idempotency_key = key;
  return r;
}

// What a get_async answered, from whichever thread.
struct Answer {
  std::mutex mu;
  std::optional<StatusOr<TaskView>> view;  // guarded by mu
  std::thread::id thread;                  // guarded by mu
  TaskService::ViewDone done() {
    return [this](StatusOr<TaskView> v) {
      std::lock_guard<std::mutex> lock(mu);
      view = std::move(v);
      thread = std::this_thread::get_id();
    };
  }
  bool answered() {
    std::lock_guard<std::mutex> lock(mu);
    return view.has_value();
  }
  bool arrives() {
    return tst::eventually([&] { return answered(); }, 10s, 2ms);
  }
  StatusOr<TaskView> get() {
    std::lock_guard<std::mutex> lock(mu);
    REQUIRE(view.has_value());
    return *view;
  }
};

}  // namespace

TEST_CASE("task service: a submit commits QUEUED with the pool's defaults - the pool hears it") {
  Fixture f;
  NewTask r = image();
  r.priority = 7;
  r.webhook_url = "http://127.0.0.1:1/hook";
  SubmitOutcome out = f.submit(r);
  CHECK(out.created);
  const Task& t = out.task;
  CHECK(is_valid_task_id(t.task_id));
  CHECK(t.seq > 0);
  CHECK(t.status == TaskState::kQueued);
  CHECK(t.max_attempts == 4);  // the pool's default
  CHECK(t.created_at == f.clock.now_ms());

  auto row = f.stored(t.task_id);
  REQUIRE(row);
  CHECK(row->seq == t.seq);
  CHECK(row->status == TaskState::kQueued);
  CHECK(row->payload == R"({"prompt":"a fox"})");
  CHECK(row->priority == 7);
  CHECK(row->max_attempts == 4);
  CHECK(row->webhook_url == r.webhook_url);

  // The commit reached the pool (through on_commit) before submit returned.
  auto heard = f.pools.heard();
  REQUIRE(heard.size() == 1);
  CHECK(heard[0].task_id == t.task_id);
  CHECK_FALSE(heard[0].from.has_value());
  CHECK(heard[0].to == TaskState::kQueued);
  CHECK(f.pools.reserved("image") == 0);

  NewTask own = image();
  own.max_attempts = 2;
  own.timeout_s = 600;  // the pool's max is allowed
  SubmitOutcome second = f.submit(own);
  CHECK(second.task.max_attempts == 2);
  CHECK(second.task.timeout_s == 600);
  CHECK(f.rows() == 2);
}

TEST_CASE("task service: unknown type, timeout_s over the pool's max: 422 - nothing written") {
  Fixture f;
  NewTask video = image();
  video.type = "video";
  auto st = f.service->submit(video);
  REQUIRE_FALSE(st.ok());
  CHECK(http_status(st.status().code()) == 422);
  CHECK(st.status().field() == "type");
  CHECK(st.status().message().find("audio, image") != std::string::npos);

  NewTask slow = image();
  slow.timeout_s = 601;
  st = f.service->submit(slow);
  REQUIRE_FALSE(st.ok());
  CHECK(http_status(st.status().code()) == 422);
  CHECK(st.status().field() == "timeout_s");

  bool accepted = false, committed = false;
  Status nowait = f.service->submit_nowait(
      slow, [&](const Task&) { accepted = true; },
      [&](const Status&, const Task*) { committed = true; });
  CHECK(http_status(nowait.code()) == 422);
  CHECK(nowait.field() == "timeout_s");
  CHECK_FALSE(accepted);
  CHECK_FALSE(committed);

  // A batch names the task by index, and writes none of them.
  auto batch = f.service->submit_batch({image(), slow});
  REQUIRE_FALSE(batch.ok());
  CHECK(http_status(batch.status().code()) == 422);
  CHECK(batch.status().field() == "tasks[1].timeout_s");
  batch = f.service->submit_batch({image(), video});
  REQUIRE_FALSE(batch.ok());
  CHECK(batch.status().field() == "tasks[1].type");

  CHECK(f.rows() == 0);
  CHECK(f.pools.heard().empty());
  CHECK(f.pools.reserved("image") == 0);
}

TEST_CASE("task service: a full backlog is 429 with Retry-After - nothing written - any submit") {
  Fixture f({{"image", {.max_queued = 2}}});
  f.submit(image("one"));

  // One place left: a batch of two is refused whole.
  auto batch = f.service->submit_batch({image("two"), image("three")});
  REQUIRE_FALSE(batch.ok());
  CHECK(http_status(batch.status().code()) == 429);
  CHECK(batch.status().retry_after_s() > 0);
  CHECK(f.rows() == 1);

  Task second = f.submit(image("two")).task;
  auto st = f.service->submit(image("three"));
  REQUIRE_FALSE(st.ok());
  CHECK(http_status(st.status().code()) == 429);
  CHECK(st.status().slug() == "backlog_full");
  CHECK(st.status().retry_after_s() > 0);

  bool accepted = false, committed = false;
  Status nowait = f.service->submit_nowait(
      image("three"), [&](const Task&) { accepted = true; },
      [&](const Status&, const Task*) { committed = true; });
  CHECK(http_status(nowait.code()) == 429);
  CHECK(nowait.retry_after_s() > 0);
  CHECK_FALSE(accepted);
  CHECK_FALSE(committed);

  CHECK(f.rows() == 2);
  CHECK(f.pools.reserved("image") == 0);

  // The bound follows the commits: a task that leaves QUEUED makes room.
  REQUIRE(f.service->cancel(second.task_id).ok());
  CHECK(f.submit(image("three")).created);
  CHECK(f.rows() == 3);
}

TEST_CASE("task service: an idempotent repeat returns the first task - even with a full backlog") {
  Fixture f({{"image", {.max_queued = 3}}});
  SubmitOutcome first = f.submit(keyed("k1", "first"));
  CHECK(first.created);

  // In a batch with a new task: the repeat names the first, the new one is created. (A batch
  // reserves room for each of its tasks, repeats too: this one needs two free places.)
  auto batch = f.service->submit_batch({keyed("k1", "other"), keyed("k2", "second")});
  REQUIRE(batch.ok());
  REQUIRE(batch->size() == 2);
  CHECK_FALSE((*batch)[0].created);
  CHECK((*batch)[0].task.task_id == first.task.task_id);
  CHECK((*batch)[0].task.payload == R"({"prompt":"first"})");
  CHECK((*batch)[1].created);
  CHECK(f.submit(image("third")).created);
  CHECK(f.rows() == 3);  // now full

  // Full: a new key is refused, a repeat is answered with the first task.
  auto fresh = f.service->submit(keyed("k3"));
  REQUIRE_FALSE(fresh.ok());
  CHECK(http_status(fresh.status().code()) == 429);
  auto again = f.service->submit(keyed("k1", "different payload"));
  REQUIRE(again.ok());
  CHECK_FALSE(again->created);
  CHECK(again->task.task_id == first.task.task_id);
  CHECK(again->task.payload == R"({"prompt":"first"})");
  CHECK(again->task.status == TaskState::kQueued);

  // submit_nowait knows a committed repeat at once: `committed` on this thread, no `accepted`.
  bool accepted = false;
  std::optional<std::string> named;
  Status nowait = f.service->submit_nowait(
      keyed("k1"), [&](const Task&) { accepted = true; },
      [&](const Status& st, const Task* t) {
        CHECK(st.ok());
        REQUIRE(t != nullptr);
        named = t->task_id;
      });
  CHECK(nowait.ok());
  CHECK_FALSE(accepted);
  CHECK(named == first.task.task_id);

  // A repeat of a task that is final by now still names it.
  REQUIRE(f.service->cancel(first.task.task_id).ok());
  again = f.service->submit(keyed("k1"));
  REQUIRE(again.ok());
  CHECK_FALSE(again->created);
  CHECK(again->task.status == TaskState::kCanceled);

  CHECK(f.rows() == 3);
  CHECK(f.pools.heard().size() == 4);  // three inserts and the cancel; no repeat was committed
  CHECK(f.pools.reserved("image") == 0);
}

TEST_CASE("task service: submit_nowait accepts on this thread - commits on the store's") {
  Fixture f;
  std::optional<Task> accepted;
  std::mutex mu;
  std::optional<Status> outcome;  // guarded by mu
  bool named_first = true;        // guarded by mu
  std::thread::id committed_on;   // guarded by mu
  Status st = f.service->submit_nowait(
      image(), [&](const Task& t) { accepted = t; },
      [&](const Status& s, const Task* first) {
        std::lock_guard<std::mutex> lock(mu);
        outcome = s;
        named_first = first != nullptr;
        committed_on = std::this_thread::get_id();
      });
  REQUIRE(st.ok());
  REQUIRE(accepted);  // before submit_nowait returned
  CHECK(accepted->status == TaskState::kQueued);
  CHECK(is_valid_task_id(accepted->task_id));
  REQUIRE(tst::eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mu);
        return outcome.has_value();
      },
      10s, 2ms));
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(outcome->ok());
    CHECK_FALSE(named_first);
    CHECK(committed_on != std::this_thread::get_id());
  }
  auto row = f.stored(accepted->task_id);
  REQUIRE(row);
  CHECK(row->status == TaskState::kQueued);
  CHECK(tst::eventually([&] { return f.pools.reserved("image") == 0; }, 10s, 2ms));
}

TEST_CASE("task service: get_async answers a final task at once - holds a live one till final") {
  Fixture f;
  Task done = f.submit(image("done")).task;
  REQUIRE(f.store->cancel(done.task_id, f.clock.now_ms()).ok());

  Answer at_once;
  f.service->get_async(done.task_id, 10s, at_once.done());
  REQUIRE(at_once.answered());  // on this thread, before get_async returned
  REQUIRE(at_once.get().ok());
  CHECK(at_once.get()->task.status == TaskState::kCanceled);

  Answer unknown;
  f.service->get_async(new_task_id(f.clock.now_ms()), 10s, unknown.done());
  REQUIRE(unknown.answered());
  CHECK(http_status(unknown.get().status().code()) == 404);
  Answer malformed;
  f.service->get_async("../etc/passwd", 10s, malformed.done());
  REQUIRE(malformed.answered());
  CHECK(http_status(malformed.get().status().code()) == 404);

  // wait 0: the task as it is, at once.
  Task live = f.submit(image("live")).task;
  Answer no_wait;
  f.service->get_async(live.task_id, 0ms, no_wait.done());
  REQUIRE(no_wait.answered());
  CHECK(no_wait.get()->task.status == TaskState::kQueued);

  // Held across a commit that leaves it live (RUNNING), answered by the one that makes it final.
  Answer held;
  auto t0 = std::chrono::steady_clock::now();
  f.service->get_async(live.task_id, 10s, held.done());
  CHECK_FALSE(held.answered());
  Task running = f.run(live);
  // A second poll, answered by a later commit: once it is, the poll thread has looked at the
  // RUNNING event, and the first poll must still be waiting.
  Task other = f.submit(image("other")).task;
  Answer marker;
  f.service->get_async(other.task_id, 10s, marker.done());
  REQUIRE(f.store->cancel(other.task_id, f.clock.now_ms()).ok());
  REQUIRE(marker.arrives());
  CHECK(marker.get()->task.status == TaskState::kCanceled);
  CHECK_FALSE(held.answered());

  Attempt a{running.attempt, "http://backend", "done", "", f.clock.now_ms(), 5};
  auto finished = f.store->finish_done(live.seq, a, ResultMeta{3, "text/plain"});
  REQUIRE(finished.ok());
  REQUIRE(*finished);
  REQUIRE(held.arrives());
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);  // the commit answered it, not the wait
  auto view = held.get();
  REQUIRE(view.ok());
  CHECK(view->task.status == TaskState::kDone);
  REQUIRE(view->task.attempts.size() == 1);  // the view has the details
  CHECK(view->task.attempts[0].outcome == "done");
  {
    std::lock_guard<std::mutex> lock(held.mu);
    CHECK(held.thread != std::this_thread::get_id());
  }

  // A wait that ends first is answered with the task as it is.
  Task idle = f.submit(image("idle")).task;
  Answer timed_out;
  f.service->get_async(idle.task_id, 50ms, timed_out.done());
  REQUIRE(timed_out.arrives());
  CHECK(timed_out.get()->task.status == TaskState::kQueued);
}

TEST_CASE("task service: a queued task's view has its pool's position and estimate") {
  Fixture f;
  Task a = f.submit(image("a")).task;
  NewTask urgent = image("b");
  urgent.priority = 9;
  Task b = f.submit(urgent).task;
  auto view = f.service->view(a.task_id);
  REQUIRE(view.ok());
  CHECK(view->queue_position == 1);  // b runs first
  CHECK(view->estimated_start_ms == kEstimateBase + 1);
  view = f.service->view(b.task_id);
  REQUIRE(view.ok());
  CHECK(view->queue_position == 0);
  f.run(b);
  view = f.service->view(b.task_id);
  REQUIRE(view.ok());
  CHECK_FALSE(view->queue_position.has_value());
  CHECK_FALSE(view->estimated_start_ms.has_value());
  view = f.service->view(a.task_id);
  CHECK(view->queue_position == 0);
}

TEST_CASE("task service: cancel - a live task is CANCELED, a final one 409, an unknown one 404") {
  Fixture f;
  Task queued = f.submit(image("queued")).task;
  Task running = f.run(f.submit(image("running")).task);

  for (const Task* t : {&queued, &running}) {
    auto c = f.service->cancel(t->task_id);
    REQUIRE(c.ok());
    CHECK(c->status == TaskState::kCanceled);
    CHECK(c->finished_at == f.clock.now_ms());
    auto again = f.service->cancel(t->task_id);
    REQUIRE_FALSE(again.ok());
    CHECK(http_status(again.status().code()) == 409);
  }
  auto unknown = f.service->cancel(new_task_id(f.clock.now_ms()));
  CHECK(http_status(unknown.status().code()) == 404);
  auto malformed = f.service->cancel("not-an-id");
  CHECK(http_status(malformed.status().code()) == 404);

  // The pool heard both cancels, from the state each had.
  std::vector<std::optional<TaskState>> from;
  for (const TaskChange& c : f.pools.heard()) {
    if (c.to == TaskState::kCanceled) from.push_back(c.from);
  }
  CHECK(from == std::vector<std::optional<TaskState>>{TaskState::kQueued, TaskState::kRunning});
}

TEST_CASE("task service: lists page newest first by cursor - filtered - a foreign cursor is 422") {
  Fixture f;
  std::vector<std::string> ids;  // oldest first
  for (int i = 0; i < 5; ++i) ids.push_back(f.submit(image(std::to_string(i))).task.task_id);
  NewTask audio = image();
  audio.type = "audio";
  std::string audio_id = f.submit(audio).task.task_id;
  REQUIRE(f.service->cancel(ids[1]).ok());

  std::vector<std::string> seen;
  std::optional<std::string> cursor;
  int pages = 0;
  do {
    auto page = f.service->list(std::nullopt, std::string("image"), 2, cursor);
    REQUIRE(page.ok());
    CHECK(page->tasks.size() <= 2);
    for (const Task& t : page->tasks) seen.push_back(t.task_id);
    cursor = page->next_cursor;
    REQUIRE(++pages <= 5);
  } while (cursor);
  CHECK(pages == 3);  // 2 + 2 + 1: a short page has no cursor
  CHECK(seen == std::vector<std::string>{ids[4], ids[3], ids[2], ids[1], ids[0]});

  // A page exactly `limit` long hands out a cursor; the page after it is empty and has none.
  auto full = f.service->list(std::nullopt, std::nullopt, 6, std::nullopt);
  REQUIRE(full.ok());
  CHECK(full->tasks.size() == 6);
  CHECK(full->tasks.front().task_id == audio_id);
  REQUIRE(full->next_cursor);
  auto after = f.service->list(std::nullopt, std::nullopt, 6, full->next_cursor);
  REQUIRE(after.ok());
  CHECK(after->tasks.empty());
  CHECK_FALSE(after->next_cursor);

  auto canceled = f.service->list(TaskState::kCanceled, std::nullopt, 10, std::nullopt);
  REQUIRE(canceled.ok());
  REQUIRE(canceled->tasks.size() == 1);
  CHECK(canceled->tasks[0].task_id == ids[1]);

  for (const std::string& bad : {std::string("garbage"), std::string(""),
                                 TaskService::encode_cursor(0), std::string(100, 'A')}) {
    auto page = f.service->list(std::nullopt, std::nullopt, 2, bad);
    REQUIRE_FALSE(page.ok());
    CHECK(http_status(page.status().code()) == 422);
    CHECK(page.status().field() == "cursor");
  }
  CHECK(TaskService::decode_cursor(TaskService::encode_cursor(42)) == 42);
}

TEST_CASE("task service: totals follow the commits - and forget purged tasks") {
  Fixture f;
  auto totals_match_store = [&] {
    auto counted = f.store->count_by_status();
    REQUIRE(counted.ok());
    auto totals = f.service->totals();
    for (TaskState s : kTaskStates) {
      int64_t n = counted->count(s) ? counted->at(s) : 0;
      CHECK_MESSAGE(totals[s] == n, std::string(to_string(s)));
    }
  };
  auto totals = f.service->totals();
  for (TaskState s : kTaskStates) CHECK(totals[s] == 0);

  Task a = f.submit(image("a")).task;
  Task b = f.submit(image("b")).task;
  auto batch = f.service->submit_batch({image("c"), image("d")});
  REQUIRE(batch.ok());
  CHECK(f.service->totals()[TaskState::kQueued] == 4);
  totals_match_store();

  Task running = f.run(a);
  REQUIRE(f.service->cancel(b.task_id).ok());
  CHECK(f.service->totals()[TaskState::kRunning] == 1);
  CHECK(f.service->totals()[TaskState::kQueued] == 2);
  Attempt at{running.attempt, "http://backend", "failed", "boom", f.clock.now_ms(), 1};
  auto failed = f.store->finish_failed(a.seq, at, "boom");
  REQUIRE(failed.ok());
  REQUIRE(*failed);
  totals = f.service->totals();
  CHECK(totals[TaskState::kQueued] == 2);
  CHECK(totals[TaskState::kRunning] == 0);
  CHECK(totals[TaskState::kFailed] == 1);
  CHECK(totals[TaskState::kCanceled] == 1);
  totals_match_store();

  f.service->forget_purged({{b.task_id, TaskState::kCanceled}});
  CHECK(f.service->totals()[TaskState::kCanceled] == 0);
  CHECK(f.service->totals()[TaskState::kFailed] == 1);
}

TEST_CASE("task service: recover() puts back tasks a crash left RUNNING - and counts them") {
  Fixture f;
  NewTask once = image("once");
  once.max_attempts = 1;
  Task spent = f.run(f.submit(once).task);
  Task again = f.run(f.submit(image("again")).task);
  Task waiting = f.submit(image("waiting")).task;
  CHECK(f.service->totals()[TaskState::kRunning] == 2);
  CHECK(f.service->recovered_requeued() == 0);
  CHECK(f.service->recovered_failed() == 0);

  f.restart();
  CHECK(f.service->recovered_requeued() == 1);
  CHECK(f.service->recovered_failed() == 1);
  auto totals = f.service->totals();
  CHECK(totals[TaskState::kQueued] == 2);
  CHECK(totals[TaskState::kRunning] == 0);
  CHECK(totals[TaskState::kFailed] == 1);

  auto t = f.stored(spent.task_id);
  REQUIRE(t);
  CHECK(t->status == TaskState::kFailed);
  t = f.stored(again.task_id);
  REQUIRE(t);
  CHECK(t->status == TaskState::kQueued);
  CHECK(t->attempt == 1);  // the interrupted attempt is spent
  t = f.stored(waiting.task_id);
  REQUIRE(t);
  CHECK(t->status == TaskState::kQueued);
  CHECK(t->attempt == 0);

  // Nothing left to recover on the next start.
  f.restart();
  CHECK(f.service->recovered_requeued() == 0);
  CHECK(f.service->recovered_failed() == 0);
  CHECK(f.service->totals()[TaskState::kQueued] == 2);
}

TEST_CASE("task service: after begin_shutdown submits are 503 - waits answer at once") {
  Fixture f;
  Task t = f.submit(image()).task;
  f.service->begin_shutdown();
  CHECK(f.service->shutting_down());
  auto st = f.service->submit(image());
  REQUIRE_FALSE(st.ok());
  CHECK(http_status(st.status().code()) == 503);
  CHECK(st.status().slug() == "shutting_down");
  auto batch = f.service->submit_batch({image()});
  CHECK(http_status(batch.status().code()) == 503);
  Answer a;
  f.service->get_async(t.task_id, 10s, a.done());
  REQUIRE(a.answered());
  CHECK(a.get()->task.status == TaskState::kQueued);
  CHECK(f.rows() == 1);
}
