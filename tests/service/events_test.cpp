// EventHub (service/events.h): the numbered ring of committed state changes that streams,
// long-polls and the dashboard read.
#include "service/events.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "core/blocking.h"
#include "support/harness.h"

using namespace ts;
using namespace std::chrono_literals;

namespace {

TaskChange change(const std::string& task_id, TaskState to, const std::string& type = "image") {
  TaskChange c;
  c.task_id = task_id;
  c.type = type;
  c.to = to;
  if (to != TaskState::kQueued) c.from = TaskState::kQueued;
  return c;
}

// Counts how often threads that installed it were about to wait in wait_after (core/blocking.h):
// the notice comes with the hub's lock held until the wait begins, so once it is counted a
// publish or close() can only come while that thread waits.
struct BlockCount {
  std::atomic<int> n{0};
  void install() {
    t_blocking_notice = {[](void* ctx) { ++static_cast<BlockCount*>(ctx)->n; }, this};
  }
  bool reaches(int k) {
    return tst::eventually([&] { return n.load() >= k; }, 10s, 1ms);
  }
};

std::vector<std::string> ids_of(const std::vector<TaskEvent>& events) {
  std::vector<std::string> out;
  for (const TaskEvent& e : events) out.push_back(e.task_id);
  return out;
}

}  // namespace

TEST_CASE("events: numbered in publish order - a reader gets each once - oldest first") {
  EventHub hub;
  CHECK(hub.last_id() == 0);
  TaskChange c = change("a", TaskState::kRunning);
  c.attempt = 2;
  c.at_ms = 1234;
  c.backend = "http://b0";
  c.error = "why";
  hub.publish({c, change("b", TaskState::kQueued)});
  hub.publish({change("c", TaskState::kDone)});
  CHECK(hub.last_id() == 3);

  uint64_t cursor = 0;
  bool lost = true;
  auto got = hub.wait_after(&cursor, 0ms, nullptr, &lost);
  CHECK_FALSE(lost);
  CHECK(cursor == 3);
  REQUIRE(got.size() == 3);
  CHECK(ids_of(got) == std::vector<std::string>{"a", "b", "c"});
  for (size_t i = 0; i < got.size(); ++i) CHECK(got[i].id == i + 1);
  // Every field of the change reaches the event.
  CHECK(got[0].type == "image");
  CHECK(got[0].from == TaskState::kQueued);
  CHECK(got[0].status == TaskState::kRunning);
  CHECK(got[0].attempt == 2);
  CHECK(got[0].at_ms == 1234);
  CHECK(got[0].backend == "http://b0");
  CHECK(got[0].error == "why");
  CHECK_FALSE(got[1].from.has_value());

  // From a cursor in the middle: only what came after it.
  uint64_t mid = 1;
  got = hub.wait_after(&mid, 0ms, nullptr, nullptr);
  CHECK(ids_of(got) == std::vector<std::string>{"b", "c"});
  CHECK(mid == 3);
}

TEST_CASE("events: a waiting reader sees every batch of a publisher - in order - none twice") {
  EventHub hub;
  constexpr int kBatches = 200;
  std::vector<uint64_t> seen;
  std::thread reader([&] {
    uint64_t cursor = 0;
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (seen.size() < 2 * kBatches && std::chrono::steady_clock::now() < deadline) {
      bool lost = false;
      for (const TaskEvent& e : hub.wait_after(&cursor, 1s, nullptr, &lost)) seen.push_back(e.id);
      CHECK_FALSE(lost);
    }
  });
  for (int i = 0; i < kBatches; ++i) {
    hub.publish({change("t" + std::to_string(i), TaskState::kQueued),
                 change("t" + std::to_string(i), TaskState::kRunning)});
  }
  reader.join();
  REQUIRE(seen.size() == 2 * kBatches);
  for (size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == i + 1);
}

TEST_CASE("events: the filter picks events - the cursor still moves past the rest") {
  EventHub hub;
  auto audio = [](const TaskEvent& e) { return e.type == "audio"; };
  hub.publish({change("i1", TaskState::kQueued), change("a1", TaskState::kQueued, "audio"),
               change("i2", TaskState::kQueued)});
  uint64_t cursor = 0;
  auto got = hub.wait_after(&cursor, 0ms, audio, nullptr);
  CHECK(ids_of(got) == std::vector<std::string>{"a1"});
  CHECK(cursor == 3);

  // Only filtered-out events: the wait runs to its timeout, empty, but past them.
  hub.publish({change("i3", TaskState::kQueued)});
  got = hub.wait_after(&cursor, 20ms, audio, nullptr);
  CHECK(got.empty());
  CHECK(cursor == 4);

  // A waiter woken by events the filter refuses waits on for one it takes.
  BlockCount blocked;
  std::atomic<bool> returned{false};
  std::vector<TaskEvent> later;
  std::thread waiter([&] {
    blocked.install();
    later = hub.wait_after(&cursor, 10s, audio, nullptr);
    returned = true;
  });
  REQUIRE(blocked.reaches(1));
  hub.publish({change("i4", TaskState::kQueued), change("i5", TaskState::kQueued)});
  REQUIRE(blocked.reaches(2));  // looked at them and waits again
  CHECK_FALSE(returned);
  hub.publish({change("a2", TaskState::kDone, "audio")});
  waiter.join();
  CHECK(ids_of(later) == std::vector<std::string>{"a2"});
  CHECK(cursor == 7);
}

TEST_CASE("events: a reader that fell behind the ring is told so - and resumes at the oldest") {
  EventHub hub(4);
  for (int i = 1; i <= 10; ++i) hub.publish({change("t" + std::to_string(i), TaskState::kQueued)});
  CHECK(hub.last_id() == 10);

  uint64_t cursor = 2;
  bool lost = false;
  auto got = hub.wait_after(&cursor, 0ms, nullptr, &lost);
  CHECK(lost);
  REQUIRE(got.size() == 4);
  CHECK(got.front().id == 7);  // the oldest the ring still holds
  CHECK(got.back().id == 10);
  CHECK(cursor == 10);

  // Caught up: no loss reported any more.
  hub.publish({change("t11", TaskState::kQueued)});
  got = hub.wait_after(&cursor, 0ms, nullptr, &lost);
  CHECK_FALSE(lost);
  CHECK(ids_of(got) == std::vector<std::string>{"t11"});

  // A cursor just before the oldest held event has lost nothing.
  uint64_t edge = 7;  // the ring holds 8..11
  got = hub.wait_after(&edge, 0ms, nullptr, &lost);
  CHECK_FALSE(lost);
  CHECK(got.size() == 4);

  // Loss is reported even when the filter takes none of what is left.
  uint64_t behind = 1;
  got = hub.wait_after(
      &behind, 0ms, [](const TaskEvent&) { return false; }, &lost);
  CHECK(lost);
  CHECK(got.empty());
  CHECK(behind == 11);
}

TEST_CASE("events: a wait times out empty - the cursor stays where it was") {
  EventHub hub;
  uint64_t cursor = 0;
  bool lost = true;
  auto t0 = std::chrono::steady_clock::now();
  auto got = hub.wait_after(&cursor, 30ms, nullptr, &lost);
  CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
  CHECK(got.empty());
  CHECK_FALSE(lost);
  CHECK(cursor == 0);

  hub.publish({change("a", TaskState::kQueued)});
  cursor = hub.last_id();
  got = hub.wait_after(&cursor, 10ms, nullptr, &lost);
  CHECK(got.empty());
  CHECK(cursor == 1);
}

TEST_CASE("events: close() wakes every waiter at once - later waits do not block") {
  EventHub hub;
  constexpr int kWaiters = 3;
  BlockCount blocked;
  std::atomic<int> woken{0};
  std::vector<std::thread> waiters;
  for (int i = 0; i < kWaiters; ++i) {
    waiters.emplace_back([&] {
      blocked.install();
      uint64_t cursor = 0;
      auto got = hub.wait_after(&cursor, 60s, nullptr, nullptr);
      CHECK(got.empty());
      ++woken;
    });
  }
  // Every one waits before close(): it must wake waiters, not only keep new ones from waiting.
  REQUIRE(blocked.reaches(kWaiters));
  CHECK(woken == 0);
  CHECK_FALSE(hub.closed());
  auto t0 = std::chrono::steady_clock::now();
  hub.close();
  for (auto& t : waiters) t.join();
  CHECK(woken == kWaiters);
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  CHECK(hub.closed());

  uint64_t cursor = 0;
  t0 = std::chrono::steady_clock::now();
  CHECK(hub.wait_after(&cursor, 60s, nullptr, nullptr).empty());
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  // What was published before is still handed out after close.
  hub.publish({change("late", TaskState::kQueued)});
  CHECK(ids_of(hub.wait_after(&cursor, 60s, nullptr, nullptr)) == std::vector<std::string>{"late"});
}
