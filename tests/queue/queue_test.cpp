#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "queue/backlog_ranks.h"
#include "queue/channel.h"
#include "queue/ready_queue.h"
#include "support/harness.h"

using namespace ts;

TEST_CASE("the channel orders by priority then age and keeps its best items when full") {
  Channel ch(3);
  std::optional<QueueItem> evicted;
  CHECK(ch.offer({1, 5, "a", ""}, &evicted) == Channel::Offer::kAdded);
  CHECK(ch.offer({2, 9, "b", ""}, &evicted) == Channel::Offer::kAdded);
  CHECK(ch.offer({3, 5, "c", ""}, &evicted) == Channel::Offer::kAdded);
  CHECK_FALSE(evicted);
  // Full: a lower-ranked item is rejected (it stays in the store).
  CHECK(ch.offer({4, 1, "d", ""}, &evicted) == Channel::Offer::kRejected);
  CHECK(ch.offer({5, 5, "e", ""}, &evicted) == Channel::Offer::kRejected);  // younger than 3
  // A better one displaces the worst.
  CHECK(ch.offer({6, 7, "f", ""}, &evicted) == Channel::Offer::kAdded);
  REQUIRE(evicted);
  CHECK(evicted->seq == 3);
  CHECK(ch.size() == 3);
  CHECK(ch.pop_front()->seq == 2);
  CHECK(ch.pop_front()->seq == 6);
  CHECK(ch.remove(1));
  CHECK_FALSE(ch.remove(1));
  CHECK(ch.size() == 0);
}

// A fake backlog standing in for the store: the queue must page through it.
struct FakeBacklog {
  std::mutex mu;
  std::vector<QueueItem> rows;  // best first
  std::atomic<int> fetches{0};
  ReadyQueue::Source source() {
    return {[this](size_t limit, const std::unordered_set<int64_t>& exclude, int64_t) {
              ++fetches;
              std::lock_guard<std::mutex> lock(mu);
              std::vector<QueueItem> out;
              for (const auto& r : rows) {
                if (out.size() >= limit) break;
                if (!exclude.count(r.seq)) out.push_back(r);
              }
              return StatusOr<std::vector<QueueItem>>(out);
            },
            [](int64_t) { return StatusOr<std::optional<int64_t>>(std::optional<int64_t>()); }};
  }
  void erase(int64_t seq) {
    std::lock_guard<std::mutex> lock(mu);
    std::erase_if(rows, [&](const QueueItem& r) { return r.seq == seq; });
  }
};

TEST_CASE("the feeder pages a backlog larger than the channel through it - in order") {
  FakeBacklog backlog;
  for (int i = 1; i <= 100; ++i) backlog.rows.push_back({i, 5, std::to_string(i), ""});
  ManualClock clock;
  ReadyQueue q({"test", 8}, backlog.source(), clock);
  q.start();
  std::vector<int64_t> taken;
  auto always = [](const QueueItem&) { return true; };
  while (taken.size() < 100) {
    auto item = q.take(always, 2000);
    REQUIRE(item);
    CHECK(q.size() <= 8);
    taken.push_back(item->seq);
    backlog.erase(item->seq);  // the worker marks it RUNNING in the store
    q.release(item->seq);
  }
  for (int i = 0; i < 100; ++i) CHECK(taken[i] == i + 1);
  q.stop();
}

TEST_CASE("take waits for a slot: a task leaves the queue only when it can start") {
  FakeBacklog backlog;
  ManualClock clock;
  ReadyQueue q({"test", 8}, backlog.source(), clock);
  q.start();
  q.offer({1, 5, "a", ""});
  std::atomic<bool> slot{false};
  auto gate = [&](const QueueItem&) { return slot.load(); };
  CHECK_FALSE(q.take(gate, 50));
  CHECK(q.size() == 1);  // still queued, still cancellable
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    slot = true;
    q.wake();
  });
  auto item = q.take(gate, 5000);
  opener.join();
  REQUIRE(item);
  CHECK(item->seq == 1);
  q.stop();
  CHECK_FALSE(q.take(gate, 10));  // stopped: nothing more
}

TEST_CASE("offered items reach every waiting worker: a new front wakes one, each take the next") {
  // offer() wakes a worker only for a new front; the others are woken in turn by take(). Without
  // either, a waiting worker would sit out its whole wait with a task it could run.
  FakeBacklog backlog;
  ManualClock clock;
  ReadyQueue q({"test", 8}, backlog.source(), clock);
  q.start();
  std::atomic<bool> slots{false};
  auto gate = [&](const QueueItem&) { return slots.load(); };
  constexpr int kWorkers = 3;
  constexpr int kWaitMs = 10'000;
  std::atomic<int> taken{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < kWorkers; ++i) {
    workers.emplace_back([&] {
      if (q.take(gate, kWaitMs)) taken.fetch_add(1);
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the workers are waiting
  q.offer({1, 5, "a", ""});
  q.offer({2, 5, "b", ""});  // behind the front: wakes nobody
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(taken == 0);  // no slot yet
  slots = true;
  auto t0 = std::chrono::steady_clock::now();
  q.offer({3, 9, "c", ""});  // the new front: one worker wakes, and passes the turn on
  for (auto& w : workers) w.join();
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(taken == kWorkers);
  CHECK(q.size() == 0);
  CHECK(waited < std::chrono::milliseconds(kWaitMs / 2));
  q.stop();
}

TEST_CASE("given back items are not duplicated by the feeder") {
  FakeBacklog backlog;
  backlog.rows.push_back({1, 5, "a", ""});
  ManualClock clock;
  ReadyQueue q({"test", 4}, backlog.source(), clock);
  q.start();
  auto always = [](const QueueItem&) { return true; };
  auto item = q.take(always, 2000);
  REQUIRE(item);
  // While the worker holds it, the feeder must not bring it in again.
  q.wake();
  CHECK_FALSE(q.take(always, 100));
  q.give_back(*item);
  CHECK(q.size() == 1);
  q.stop();
}

TEST_CASE("an item offered while a worker still holds it is found once the worker lets go") {
  FakeBacklog backlog;
  backlog.rows.push_back({1, 5, "a", ""});
  ManualClock clock;
  ReadyQueue q({"test", 4}, backlog.source(), clock);
  q.start();
  auto always = [](const QueueItem&) { return true; };
  auto item = q.take(always, 2000);
  REQUIRE(item);
  // Canceled and retried while its old attempt is still winding down: QUEUED in the store again.
  q.offer(*item);
  CHECK(q.size() == 0);
  q.release(item->seq);
  auto again = q.take(always, 2000);
  REQUIRE(again);
  CHECK(again->seq == 1);
  q.stop();
}

TEST_CASE("backlog ranks count what runs ahead as a scan of every task would") {
  BacklogRanks ranks;
  // Seqs over five blocks, with holes; priorities 0 to 9.
  std::map<int64_t, int> queued;  // seq → priority
  std::mt19937 rng(7);
  for (int64_t seq = 1; seq < 5 * BacklogRanks::kBlockSeqs; seq += 1 + rng() % 5) {
    queued[seq] = static_cast<int>(rng() % 10);
  }
  // Half from a start-up count, half added one by one as the commit listener would.
  std::map<std::pair<int, int64_t>, int64_t> blocks;
  size_t k = 0;
  for (auto& [seq, prio] : queued) {
    if (k++ % 2 == 0) {
      ++blocks[{prio, BacklogRanks::block_of(seq)}];
    }
  }
  std::vector<BacklogRanks::BlockCount> counts;
  for (auto& [key, n] : blocks) counts.push_back({key.first, key.second, n});
  ranks.reset(counts);
  k = 0;
  for (auto& [seq, prio] : queued) {
    if (k++ % 2 == 1) ranks.add(prio, seq, +1);
  }
  // Some leave the queue (run or canceled).
  for (auto it = queued.begin(); it != queued.end();) {
    if (rng() % 3 == 0) {
      ranks.add(it->second, it->first, -1);
      it = queued.erase(it);
    } else {
      ++it;
    }
  }
  CHECK(ranks.total() == static_cast<int64_t>(queued.size()));
  for (auto& [seq, prio] : queued) {
    if (seq % 13 != 0) continue;  // a sample keeps the brute force short
    int64_t want = 0, in_block = 0;
    BacklogRanks::Ahead got = ranks.ahead(prio, seq);
    for (auto& [s2, p2] : queued) {
      if (p2 > prio || (p2 == prio && s2 < seq)) ++want;
      if (p2 == prio && s2 >= got.block_first_seq && s2 < seq) ++in_block;
    }
    CAPTURE(seq);
    CHECK(got.block_first_seq == BacklogRanks::block_of(seq) * BacklogRanks::kBlockSeqs);
    CHECK(got.outside_block + in_block == want);
  }
  // Emptied, it holds nothing.
  for (auto& [seq, prio] : queued) ranks.add(prio, seq, -1);
  CHECK(ranks.total() == 0);
  CHECK(ranks.ahead(9, 1).outside_block == 0);
}
