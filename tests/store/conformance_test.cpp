// The store conformance suite: what every TaskStore promises (store/task_store.h), run on each
// store of TS_STORES (tests/support/stores.h). A new store passes these before anything else.

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "core/clock.h"
#include "core/ids.h"
#include "support/stores.h"

using namespace ts;

namespace {

Task make_task(const Clock& clock, const std::string& type = "image", int priority = 5) {
  Task t;
  t.task_id = new_task_id(clock.now_ms());
  t.type = type;
  t.payload = R"({"prompt":"x"})";
  t.priority = priority;
  t.created_at = clock.now_ms();
  return t;
}

// Every task in the store, counted by state.
int64_t count_all(TaskStore& store) {
  auto counts = store.count_by_status();
  REQUIRE(counts.ok());
  int64_t n = 0;
  for (const auto& [state, k] : *counts) n += k;
  return n;
}

// What a store's commit listener hears (on the writer thread), in order.
struct Heard {
  explicit Heard(TaskStore& store) {
    store.set_commit_listener([this](const std::vector<TaskChange>& c) {
      std::lock_guard<std::mutex> lock(mu);
      changes.insert(changes.end(), c.begin(), c.end());
    });
  }
  std::vector<TaskChange> take() {
    std::lock_guard<std::mutex> lock(mu);
    return std::exchange(changes, {});
  }
  std::mutex mu;
  std::vector<TaskChange> changes;  // guarded by mu
};

// Each task inserted by the threads is in the store under the seq it was handed back, and no
// seq was handed out twice. Returns the seqs.
std::set<int64_t> check_inserted(TaskStore& store, const std::vector<std::vector<Task>>& made) {
  std::set<int64_t> seqs;
  for (const auto& list : made) {
    for (const Task& t : list) {
      CHECK(seqs.insert(t.seq).second);
      auto got = store.get(t.task_id, false);
      REQUIRE(got.ok());
      REQUIRE(got->has_value());
      CHECK((*got)->seq == t.seq);  // the seq handed back is the row's
      CHECK((*got)->priority == t.priority);
    }
  }
  return seqs;
}

}  // namespace

TEST_CASE_TEMPLATE("state changes are guarded by the state they expect", Stores, TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  std::vector<TaskChange> heard;
  store->set_commit_listener(
      [&](const std::vector<TaskChange>& c) { heard.insert(heard.end(), c.begin(), c.end()); });
  Task t = make_task(clock);
  auto ins = store->insert(t);
  REQUIRE(ins.ok());
  CHECK(ins->created);
  CHECK(t.seq > 0);

  auto running = store->mark_running(t.seq, "http://b1", clock.now_ms());
  REQUIRE(running.ok());
  REQUIRE(running->has_value());
  CHECK((*running)->attempt == 1);
  CHECK((*running)->status == TaskState::kRunning);
  // A second worker loses the race: nothing changes.
  auto again = store->mark_running(t.seq, "http://b2", clock.now_ms());
  REQUIRE(again.ok());
  CHECK_FALSE(again->has_value());

  Attempt a{1, "http://b1", "done", "", clock.now_ms(), 5};
  auto done = store->finish_done(t.seq, a, ResultMeta{10, "application/json"});
  REQUIRE(done.ok());
  CHECK(*done);
  // Final is final: no requeue, no second finish, no cancel.
  CHECK_FALSE(*store->requeue(t.seq, a, std::nullopt, false, "late"));
  CHECK_FALSE(*store->finish_failed(t.seq, a, "late"));
  auto c = store->cancel(t.task_id, clock.now_ms());
  CHECK(c.status().code() == Code::kConflict);

  auto got = store->get(t.task_id, true);
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->status == TaskState::kDone);
  CHECK((*got)->result_size == 10);
  REQUIRE((*got)->attempts.size() == 1);
  CHECK((*got)->attempts[0].backend == "http://b1");

  REQUIRE(heard.size() == 3);
  CHECK_FALSE(heard[0].from.has_value());
  CHECK(heard[1].to == TaskState::kRunning);
  CHECK(heard[2].to == TaskState::kDone);
}

TEST_CASE_TEMPLATE("idempotency keys: a repeat names the first task - also under concurrency",
                   Stores, TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  std::atomic<int> created{0};
  std::vector<std::string> named(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      Task t = make_task(clock);
      t.idempotency_key = "same-key";
      auto r = store->insert(t);
      REQUIRE(r.ok());
      if (r->created) ++created;
      named[i] = r->task_id;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(created == 1);
  for (const auto& n : named) CHECK(n == named[0]);
  CHECK(count_all(*store) == 1);
}

TEST_CASE_TEMPLATE("concurrent plain inserts are grouped and each gets its own row", Stores,
                   TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Heard heard_changes(*store);
  constexpr int kThreads = 24, kEach = 40;
  std::vector<std::vector<Task>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        Task task = make_task(clock, "image", i % 10);
        auto r = store->insert(task);
        REQUIRE(r.ok());
        CHECK(r->created);
        made[t].push_back(task);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<int64_t> seqs = check_inserted(*store, made);
  CHECK(seqs.size() == size_t{kThreads * kEach});
  std::vector<TaskChange> heard = heard_changes.take();
  REQUIRE(heard.size() == size_t{kThreads * kEach});
  for (size_t i = 1; i < heard.size(); ++i) CHECK(heard[i - 1].seq < heard[i].seq);
  // A duplicate id in a group fails that insert alone.
  Task a = make_task(clock), b = make_task(clock);
  b.task_id = made[0][0].task_id;
  std::thread ta([&] { CHECK(store->insert(a).ok()); });
  std::thread tb([&] { CHECK_FALSE(store->insert(b).ok()); });
  ta.join();
  tb.join();
  CHECK(count_all(*store) == kThreads * kEach + 1);
}

TEST_CASE_TEMPLATE("a duplicate among grouped plain inserts fails alone, however the group falls",
                   Stores, TS_STORES) {
  // The writer inserts new tasks many rows per statement, OR ROLLBACK; when one row fails the
  // whole transaction is undone and redone row by row. With 16 threads inserting at once the
  // duplicates land in groups with other rows: only the duplicates may fail.
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Heard heard(*store);
  Task seed = make_task(clock);
  REQUIRE(store->insert(seed).ok());
  heard.take();
  constexpr int kThreads = 16, kEach = 60;
  std::atomic<int> ok_new{0}, failed_dups{0}, wrong{0};
  std::vector<std::vector<Task>> made(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        Task task = make_task(clock);
        bool dup = i % 6 == t % 6;
        if (dup) task.task_id = seed.task_id;
        auto r = store->insert(task);
        if (dup) {
          (r.ok() ? wrong : failed_dups).fetch_add(1);
        } else if (r.ok() && r->created) {
          ok_new.fetch_add(1);
          made[t].push_back(task);
        } else {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
  CHECK(failed_dups == kThreads * kEach / 6);
  CHECK(ok_new == kThreads * kEach - kThreads * kEach / 6);
  CHECK(count_all(*store) == 1 + ok_new);
  std::set<int64_t> seqs = check_inserted(*store, made);
  std::vector<TaskChange> changes = heard.take();
  REQUIRE(changes.size() == seqs.size());  // one change per row that exists, none for a failure
  for (const TaskChange& c : changes) CHECK(seqs.count(c.seq) == 1);
}

TEST_CASE_TEMPLATE("insert_async: the callback hears the outcome once the row is committed", Stores,
                   TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Task seed = make_task(clock);
  seed.idempotency_key = "key-0";
  REQUIRE(store->insert(seed).ok());

  // Each callback runs once, on the notifier, after its transaction: the row is there (or, for
  // the duplicate, the failure is reported and nothing changed).
  using Outcome = StatusOr<InsertOutcome>;
  std::mutex mu;
  std::map<std::string, Outcome> heard;  // guarded by mu
  std::atomic<int> calls{0}, visible_when_told{0};
  auto record = [&](const std::string& id) {
    return [&, id](const Outcome& out) {
      auto now = store->get(id, false);  // a reader sees committed rows only
      if (now.ok() && now->has_value()) ++visible_when_told;
      std::lock_guard<std::mutex> lock(mu);
      heard.emplace(id, out);
      ++calls;
    };
  };
  std::vector<std::string> fresh;
  for (int i = 0; i < 20; ++i) {
    Task t = make_task(clock);
    fresh.push_back(t.task_id);
    store->insert_async(std::move(t), record(fresh.back()));
  }
  Task dup = make_task(clock);
  dup.task_id = seed.task_id;
  dup.payload = R"({"prompt":"not the seed's"})";
  store->insert_async(std::move(dup), record("dup"));
  // Idempotency keys: a repeat of a committed one, and two firsts of a new one, queued back to
  // back (in one batch or two): one is created, the other names it.
  Task again = make_task(clock);
  again.idempotency_key = "key-0";
  store->insert_async(std::move(again), record("again"));
  Task first = make_task(clock), second = make_task(clock);
  first.idempotency_key = second.idempotency_key = "key-1";
  std::string first_id = first.task_id, second_id = second.task_id;
  store->insert_async(std::move(first), record(first_id));
  store->insert_async(std::move(second), record(second_id));
  for (int i = 0; i < 1000 && calls.load() < 24; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(calls.load() == 24);
  // Every fresh row was readable when its caller was told (and the created one of key-1).
  CHECK(visible_when_told.load() == 21);
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& id : fresh) {
    CAPTURE(id);
    const Outcome& out = heard.at(id);
    REQUIRE(out.ok());
    CHECK(out->created);
    CHECK(out->task_id == id);
    auto got = store->get(id, false);
    REQUIRE(got.ok());
    CHECK(got->has_value());
  }
  CHECK_FALSE(heard.at("dup").ok());
  REQUIRE(heard.at("again").ok());
  CHECK_FALSE(heard.at("again")->created);
  CHECK(heard.at("again")->task_id == seed.task_id);
  const Outcome& o1 = heard.at(first_id);
  const Outcome& o2 = heard.at(second_id);
  REQUIRE(o1.ok());
  REQUIRE(o2.ok());
  CHECK(o1->created);  // the first queued is the first inserted
  CHECK_FALSE(o2->created);
  CHECK(o2->task_id == first_id);
  CHECK(count_all(*store) == 22);
  auto kept = store->get(seed.task_id, false);
  REQUIRE(kept.ok());
  REQUIRE(kept->has_value());
  CHECK((*kept)->payload == seed.payload);  // the failed duplicate changed nothing

  // A closed store answers at once, on the calling thread.
  store->close();
  bool answered = false;
  Status closed;
  store->insert_async(make_task(clock), [&](const Outcome& out) {
    answered = true;
    closed = out.status();
  });
  CHECK(answered);
  CHECK(closed.code() == Code::kUnavailable);
}

TEST_CASE_TEMPLATE("a batch is all or nothing", Stores, TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  std::vector<Task> batch = {make_task(clock), make_task(clock), make_task(clock)};
  batch[2].task_id = batch[0].task_id;  // a duplicate id fails the third insert
  auto r = store->insert_batch(batch);
  CHECK_FALSE(r.ok());
  CHECK(r.status().field() == "tasks[2]");
  CHECK(count_all(*store) == 0);
  std::vector<Task> good = {make_task(clock), make_task(clock)};
  REQUIRE(store->insert_batch(good).ok());
  CHECK(count_all(*store) == 2);
}

TEST_CASE_TEMPLATE("the ready order is priority - then age - delayed retries wait", Stores,
                   TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  std::vector<Task> tasks;
  for (int p : {5, 9, 5, 0, 9}) {
    tasks.push_back(make_task(clock, "image", p));
    REQUIRE(store->insert(tasks.back()).ok());
  }
  Task other = make_task(clock, "transcribe", 9);
  REQUIRE(store->insert(other).ok());
  auto rows = store->fetch_ready("image", 10, {}, clock.now_ms());
  REQUIRE(rows.ok());
  std::vector<int64_t> order;
  for (auto& r : *rows) order.push_back(r.seq);
  CHECK(order ==
        std::vector<int64_t>{tasks[1].seq, tasks[4].seq, tasks[0].seq, tasks[2].seq, tasks[3].seq});
  // Excluded rows are skipped, and the limit still holds.
  auto some = store->fetch_ready("image", 2, {tasks[1].seq}, clock.now_ms());
  REQUIRE(some->size() == 2);
  CHECK((*some)[0].seq == tasks[4].seq);
  CHECK(*store->queue_position("image", 5, tasks[2].seq) == 3);
  // The same backlog as counts by priority and block (of 2 seqs here), and a count in a block.
  auto blocks = store->queued_blocks("image", 1);
  REQUIRE(blocks.ok());
  int64_t in_blocks = 0;
  for (const auto& b : *blocks) {
    CHECK(b.count > 0);
    in_blocks += b.count;
    int64_t n = 0;
    for (const Task& t : tasks) n += t.priority == b.priority && (t.seq >> 1) == b.block;
    CHECK(b.count == n);
  }
  CHECK(in_blocks == 5);
  CHECK(*store->count_queued_between("image", 5, tasks[0].seq, tasks[2].seq) == 1);
  CHECK(*store->count_queued_between("image", 5, tasks[0].seq, tasks[2].seq + 1) == 2);
  CHECK(*store->count_queued_between("image", 9, 0, tasks[2].seq) == 1);
  CHECK(*store->count_queued_between("image", 9, 0, tasks[4].seq + 1) == 2);
  // A retry with a backoff is not ready until due.
  REQUIRE(store->mark_running(tasks[1].seq, "b", clock.now_ms())->has_value());
  Attempt a{1, "b", "retry", "boom", clock.now_ms(), 1};
  REQUIRE(*store->requeue(tasks[1].seq, a, clock.now_ms() + 5000, false, "boom"));
  rows = store->fetch_ready("image", 10, {}, clock.now_ms());
  CHECK(rows->size() == 4);
  CHECK(*store->next_due("image", clock.now_ms()) == clock.now_ms() + 5000);
  clock.advance_ms(5000);
  rows = store->fetch_ready("image", 10, {}, clock.now_ms());
  CHECK(rows->size() == 5);
  CHECK((*rows)[0].seq == tasks[1].seq);  // it keeps its age
  CHECK((*rows)[0].last_backend == "b");
}

TEST_CASE_TEMPLATE("recovery: RUNNING rows have spent their attempt", Stores, TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Task keep = make_task(clock);
  Task spent = make_task(clock);
  spent.max_attempts = 1;
  REQUIRE(store->insert(keep).ok());
  REQUIRE(store->insert(spent).ok());
  REQUIRE(store->mark_running(keep.seq, "b", clock.now_ms())->has_value());
  REQUIRE(store->mark_running(spent.seq, "b", clock.now_ms())->has_value());
  auto r = store->recover_running(clock.now_ms());
  REQUIRE(r.ok());
  CHECK(r->requeued == 1);
  CHECK(r->failed == 1);
  auto k = *store->get(keep.task_id, true);
  CHECK(k->status == TaskState::kQueued);
  CHECK(k->attempt == 1);
  auto s = *store->get(spent.task_id, true);
  CHECK(s->status == TaskState::kFailed);
  CHECK(s->error->find("attempts are spent") != std::string::npos);
  CHECK(s->attempts.at(0).outcome == "interrupted");
}

TEST_CASE_TEMPLATE("lists page newest first by cursor", Stores, TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  for (int i = 0; i < 7; ++i) {
    Task t = make_task(clock);
    REQUIRE(store->insert(t).ok());
  }
  ListQuery q;
  q.limit = 3;
  auto p1 = *store->list(q);
  REQUIRE(p1.size() == 3);
  CHECK(p1[0].seq > p1[2].seq);
  q.before_seq = p1.back().seq;
  auto p2 = *store->list(q);
  REQUIRE(p2.size() == 3);
  CHECK(p2[0].seq < p1[2].seq);
  q.status = TaskState::kDone;
  CHECK(store->list(q)->empty());
}

TEST_CASE_TEMPLATE("a claim ahead of its call: started by note_started - given back if never",
                   Stores, TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Task started = make_task(clock), waiting = make_task(clock), released = make_task(clock);
  for (Task* t : {&started, &waiting, &released}) REQUIRE(store->insert(*t).ok());
  for (Task* t : {&started, &waiting, &released}) {
    auto claimed = store->mark_running(t->seq, "", clock.now_ms());
    REQUIRE(claimed.ok());
    REQUIRE(claimed->has_value());
    CHECK((*claimed)->attempt == 1);
    CHECK_FALSE((*claimed)->started_at.has_value());
  }
  store->note_started(started.seq, 1, "http://b1", clock.now_ms() + 5);
  store->note_started(waiting.seq, 2, "http://b1", clock.now_ms());  // another attempt's: no-op
  // A claim that got no slot goes back, its attempt given back; twice is nothing.
  CHECK(*store->release_claim(released.seq, 1, clock.now_ms()));
  CHECK_FALSE(*store->release_claim(released.seq, 1, clock.now_ms()));
  CHECK_FALSE(*store->release_claim(started.seq, 1, clock.now_ms()));  // its call started
  auto r = store->get(released.task_id, true);
  CHECK((*r)->status == TaskState::kQueued);
  CHECK((*r)->attempt == 0);
  CHECK((*r)->attempts.empty());
  // The note commits with the next write (here, the recovery's).
  auto rec = store->recover_running(clock.now_ms() + 10);
  REQUIRE(rec.ok());
  CHECK(rec->requeued == 2);
  auto s = *store->get(started.task_id, true);
  CHECK(s->status == TaskState::kQueued);
  CHECK(s->attempt == 1);  // it started: the attempt is spent
  REQUIRE(s->attempts.size() == 1);
  CHECK(s->attempts[0].backend == "http://b1");
  CHECK(s->attempts[0].outcome == "interrupted");
  auto w = *store->get(waiting.task_id, true);
  CHECK(w->status == TaskState::kQueued);
  CHECK(w->attempt == 0);  // never started: given back, none listed
  CHECK(w->attempts.empty());
}

TEST_CASE_TEMPLATE("inline results commit with the DONE and go with the task", Stores, TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Task a = make_task(clock), b = make_task(clock);
  REQUIRE(store->insert(a).ok());
  REQUIRE(store->insert(b).ok());
  REQUIRE(store->mark_running(a.seq, "x", clock.now_ms())->has_value());
  REQUIRE(store->mark_running(b.seq, "x", clock.now_ms())->has_value());
  std::string bytes("{\"a\":1}\0\xff", 9);  // any bytes, NUL and non-UTF-8 ones too
  Attempt at{1, "x", "done", "", clock.now_ms(), 1};
  REQUIRE(*store->finish_done(a.seq, at, ResultMeta{9, "application/json", &bytes}));
  REQUIRE(*store->finish_done(b.seq, at, ResultMeta{5, "text/plain", nullptr}));  // a file's
  CHECK(*store->inline_result(a.seq) == std::optional<std::string>(bytes));
  CHECK_FALSE(store->inline_result(b.seq)->has_value());
  // A DONE that lost its race stores nothing.
  CHECK_FALSE(*store->finish_done(a.seq, at, ResultMeta{1, "x", &bytes}));
  clock.advance_ms(1000);
  auto purged = store->purge_final(clock.now_ms(), 10);
  REQUIRE(purged.ok());
  CHECK(purged->size() == 2);
  CHECK_FALSE(store->inline_result(a.seq)->has_value());
}

TEST_CASE_TEMPLATE("retry: a late finish of an attempt before the retry changes nothing", Stores,
                   TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Heard heard(*store);
  Task t = make_task(clock);
  t.max_attempts = 1;
  REQUIRE(store->insert(t).ok());
  REQUIRE(store->mark_running(t.seq, "http://b1", clock.now_ms())->has_value());
  CHECK(*store->cancel(t.task_id, clock.now_ms()) == TaskState::kRunning);
  // Only FAILED and CANCELED go back; admit says whether the backlog has room.
  auto full = store->retry(t.task_id, clock.now_ms(), [](const std::string&) { return false; });
  CHECK(full.status().code() == Code::kBacklogFull);
  auto was = store->retry(t.task_id, clock.now_ms(), nullptr);
  REQUIRE(was.ok());
  CHECK(*was == TaskState::kCanceled);
  CHECK(store->retry(t.task_id, clock.now_ms(), nullptr).status().code() == Code::kConflict);
  auto second = store->mark_running(t.seq, "http://b2", clock.now_ms());
  REQUIRE(second.ok());
  REQUIRE(second->has_value());
  CHECK((*second)->attempt == 2);
  CHECK((*second)->attempt_base == 1);
  CHECK((*second)->retries == 1);
  // The first attempt's answer arrives late: it must not finish attempt 2.
  Attempt late{1, "http://b1", "done", "", clock.now_ms(), 5};
  CHECK_FALSE(*store->finish_done(t.seq, late, ResultMeta{1, "text/plain"}));
  Attempt now{2, "http://b2", "failed", "boom", clock.now_ms(), 5};
  CHECK(*store->finish_failed(t.seq, now, "boom"));
  auto got = store->get(t.task_id, true);
  REQUIRE(got->has_value());
  CHECK((*got)->status == TaskState::kFailed);
  REQUIRE((*got)->attempts.size() == 1);  // the canceled attempt 1 was never recorded as done
  CHECK((*got)->attempts[0].number == 2);
  auto bulk = store->retry_matching(RetryFilter{TaskState::kFailed, "image", {}, 10},
                                    clock.now_ms(), nullptr);
  REQUIRE(bulk.ok());
  CHECK(bulk->task_ids == std::vector<std::string>{t.task_id});
  bool heard_retry = false;
  for (const TaskChange& c : heard.take()) {
    heard_retry = heard_retry || (c.from == TaskState::kFailed && c.to == TaskState::kQueued);
  }
  CHECK(heard_retry);
}

TEST_CASE_TEMPLATE("schedule: a scheduled task is outside the backlog until promoted", Stores,
                   TS_STORES) {
  Stores stores;
  ManualClock clock;
  auto store = stores.open(clock);
  Heard heard(*store);
  Task later = make_task(clock);
  later.run_at = clock.now_ms() + 60'000;
  later.scheduled = 1;
  later.labels = {{"kb_id", "kb_1"}};
  REQUIRE(store->insert(later).ok());
  Task now = make_task(clock);
  REQUIRE(store->insert(now).ok());
  auto ready = store->fetch_ready("image", 10, {}, clock.now_ms() + 120'000);
  REQUIRE(ready.ok());
  REQUIRE(ready->size() == 1);
  CHECK((*ready)[0].seq == now.seq);
  CHECK(*store->count_queued_between("image", 5, 0, INT64_MAX) == 1);
  CHECK_FALSE(store->mark_running(later.seq, "http://b", clock.now_ms())->has_value());
  CHECK(*store->next_scheduled() == later.run_at);
  CHECK(*store->promote_scheduled(clock.now_ms(), 10) == 0);
  CHECK(*store->promote_scheduled(*later.run_at, 10) == 1);
  CHECK_FALSE(store->next_scheduled()->has_value());
  ready = store->fetch_ready("image", 10, {}, clock.now_ms());
  CHECK(ready->size() == 2);
  auto changes = heard.take();
  REQUIRE(changes.size() == 3);
  CHECK(changes[0].to_scheduled);
  CHECK(changes[2].from_scheduled);
  CHECK_FALSE(changes[2].to_scheduled);
  ListQuery q;
  q.labels = {{"kb_id", "kb_1"}};
  auto listed = store->list(q);
  REQUIRE(listed->size() == 1);
  CHECK((*listed)[0].labels.at("kb_id") == "kb_1");
}
