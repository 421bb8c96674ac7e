#include "queue/ready_queue.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "core/thread_name.h"

namespace ts {
namespace {

// After a due retry, the feeder looks at this many of the best rows even when the channel is
// full, so a due retry that outranks the channel's tail displaces it.
constexpr size_t kDueLookahead = 64;
constexpr int64_t kIdlePollMs = 1000;

}  // namespace

ReadyQueue::ReadyQueue(Options options, Source source, const Clock& clock)
    : options_(std::move(options)),
      source_(std::move(source)),
      clock_(clock),
      channel_(options_.capacity) {}

ReadyQueue::~ReadyQueue() { stop(); }

void ReadyQueue::start() {
  MutexLock lock(mu_);
  more_in_store_ = true;
  ++spill_gen_;
  next_due_ = clock_.now_ms();  // look for due retries at once
  feeder_ = std::thread([this] {
    name_this_thread("ts-feed-" + options_.name);
    feeder_loop();
  });
}

void ReadyQueue::stop() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  workers_cv_.notify_all();
  feeder_cv_.notify_all();
  if (feeder_.joinable()) feeder_.join();
}

void ReadyQueue::offer_locked(QueueItem item) {
  if (taken_.count(item.seq)) {
    // Queued again while a worker still holds its last attempt (a retry right after a cancel):
    // the row waits in the store, and the feeder looks once the worker lets go.
    more_in_store_ = true;
    ++spill_gen_;
    return;
  }
  std::optional<QueueItem> evicted;
  if (channel_.offer(std::move(item), &evicted) == Channel::Offer::kRejected || evicted) {
    more_in_store_ = true;
    ++spill_gen_;
  }
}

void ReadyQueue::offer(QueueItem item) {
  bool new_front;
  {
    MutexLock lock(mu_);
    int64_t seq = item.seq;
    offer_locked(std::move(item));
    const QueueItem* front = channel_.front();
    new_front = front != nullptr && front->seq == seq;
  }
  // A waiting worker looks only at the front, so an item queued behind it changes nothing for
  // it; take() passes the turn on when it pops. The writer calls this once per submitted task,
  // and a wake-up per task that finds no free slot was a tenth of its time under load.
  if (new_front) workers_cv_.notify_one();
}

void ReadyQueue::give_back(QueueItem item) {
  {
    MutexLock lock(mu_);
    taken_.erase(item.seq);
    offer_locked(std::move(item));
  }
  workers_cv_.notify_one();
}

void ReadyQueue::schedule(int64_t due_ms) {
  bool sooner;
  {
    MutexLock lock(mu_);
    sooner = !next_due_ || due_ms < *next_due_;
    if (sooner) next_due_ = due_ms;
  }
  if (sooner) feeder_cv_.notify_one();
}

void ReadyQueue::release(int64_t seq) {
  bool low;
  {
    MutexLock lock(mu_);
    taken_.erase(seq);
    low = more_in_store_ && channel_.size() <= channel_.capacity() / 2;
  }
  if (low) feeder_cv_.notify_one();
}

void ReadyQueue::remove(int64_t seq) {
  MutexLock lock(mu_);
  channel_.remove(seq);
}

void ReadyQueue::wake() {
  { MutexLock lock(mu_); }
  workers_cv_.notify_all();
}

void ReadyQueue::wake_one() {
  { MutexLock lock(mu_); }
  workers_cv_.notify_one();
}

std::optional<QueueItem> ReadyQueue::take(const std::function<bool(const QueueItem&)>& try_start,
                                          int max_wait_ms) {
  MutexLock lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(max_wait_ms);
  bool ready = front_taken_or_stopping(try_start);
  while (!ready) {
    bool timed_out = workers_cv_.wait_until(mu_, deadline) == std::cv_status::timeout;
    ready = front_taken_or_stopping(try_start);
    if (timed_out) break;
  }
  if (!ready || stopping_) return std::nullopt;
  std::optional<QueueItem> item = channel_.pop_front();
  taken_.insert(item->seq);
  bool low = more_in_store_ && channel_.size() <= channel_.capacity() / 2;
  bool more = channel_.size() > 0;
  lock.unlock();
  if (low) feeder_cv_.notify_one();
  // offer() wakes one worker for a new front only: the next front is the next worker's turn.
  if (more) workers_cv_.notify_one();
  return item;
}

bool ReadyQueue::front_taken_or_stopping(const std::function<bool(const QueueItem&)>& try_start) {
  if (stopping_) return true;
  const QueueItem* front = channel_.front();
  return front != nullptr && try_start(*front);
}

size_t ReadyQueue::size() const {
  MutexLock lock(mu_);
  return channel_.size();
}

void ReadyQueue::feeder_loop() {
  MutexLock lock(mu_);
  while (!stopping_) {
    int64_t now = clock_.now_ms();
    bool due = next_due_ && now >= *next_due_;
    bool low = more_in_store_ && channel_.size() <= channel_.capacity() / 2;
    if (!due && !low) {
      int64_t wait_ms = kIdlePollMs;
      if (next_due_) wait_ms = std::clamp<int64_t>(*next_due_ - now, 1, kIdlePollMs);
      feeder_cv_.wait_for(mu_, std::chrono::milliseconds(wait_ms));
      continue;
    }
    if (due) {
      // The due tasks are in the store and not here: let the fill below find them.
      next_due_.reset();
      more_in_store_ = true;
      ++spill_gen_;
    }
    std::unordered_set<int64_t> exclude = taken_;
    for (const QueueItem& item : channel_.items()) exclude.insert(item.seq);
    size_t want = channel_.capacity() - channel_.size();
    if (due) want = std::max(want, std::min(kDueLookahead, channel_.capacity()));
    uint64_t gen = spill_gen_;
    lock.unlock();

    auto rows = source_.fetch(want, exclude, now);
    std::optional<int64_t> next;
    bool next_ok = true;
    if (due) {
      auto nd = source_.next_due(now);
      if (nd.ok()) {
        next = *nd;
      } else {
        next_ok = false;
      }
    }

    lock.lock();
    if (!rows.ok() || !next_ok) {
      spdlog::warn("queue {}: feeder cannot read the store: {}", options_.name,
                   rows.ok() ? "next_due failed" : rows.status().message());
      if (due) next_due_ = now + kIdlePollMs;
      feeder_cv_.wait_for(mu_, std::chrono::milliseconds(kIdlePollMs));
      continue;
    }
    for (QueueItem& item : *rows) offer_locked(std::move(item));
    if (rows->size() < want && spill_gen_ == gen) more_in_store_ = false;
    if (next && (!next_due_ || *next < *next_due_)) next_due_ = next;
    if (!rows->empty()) workers_cv_.notify_all();
  }
}

}  // namespace ts
