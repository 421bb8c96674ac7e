#include "worker/worker_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/backoff.h"
#include "core/thread_name.h"

namespace ts {
namespace {

constexpr int kTakeWaitMs = 200;  // workers re-check timed health changes this often
constexpr int kWatchdogTickMs = 50;
}  // namespace

WorkerPool::WorkerPool(PoolOptions options, TaskTransitions& transitions, BacklogSource& backlog,
                       const BlobStore& results, const BlobStore& inputs, const Clock& clock)
    : options_(std::move(options)),
      transitions_(transitions),
      backlog_(backlog),
      results_(results),
      inputs_(inputs),
      clock_(clock),
      balancer_(options_.name, options_.backends, options_.health_policy, clock),
      queue_(
          ReadyQueue::Options{options_.name, options_.queue_capacity},
          ReadyQueue::Source{[this](size_t limit, const std::unordered_set<int64_t>& exclude,
                                    int64_t now) -> StatusOr<std::vector<QueueItem>> {
                               auto rows = backlog_.fetch_ready(options_.name, limit, exclude, now);
                               if (!rows.ok()) return rows.status();
                               std::vector<QueueItem> items;
                               items.reserve(rows->size());
                               for (auto& r : *rows) {
                                 items.push_back({r.seq, r.priority, std::move(r.task_id),
                                                  std::move(r.last_backend)});
                               }
                               return items;
                             },
                             [this](int64_t now) { return backlog_.next_due(options_.name, now); }},
          clock),
      rng_(std::random_device{}()) {
  worker_count_ =
      options_.workers > 0 ? options_.workers : std::max(1, 2 * balancer_.total_slots());
  balancer_.set_listener([this](Balancer::Change change) {
    if (change == Balancer::Change::kSlotFreed) return wake_first_waiter();
    queue_.wake();  // more or fewer tasks may be claimed now
    wake_slot_waiters();
  });
}

WorkerPool::~WorkerPool() { shutdown(std::chrono::milliseconds(0)); }

Status WorkerPool::start() {
  auto blocks = backlog_.queued_blocks(options_.name, BacklogRanks::kBlockBits);
  if (!blocks.ok()) return blocks.status();
  std::vector<BacklogRanks::BlockCount> counts;
  counts.reserve(blocks->size());
  for (const QueuedBlock& b : *blocks) counts.push_back({b.priority, b.block, b.count});
  ranks_.reset(counts);
  queued_.store(ranks_.total());
  running_count_.store(0);  // recovery put every RUNNING row back before the pools start
  queue_.start();
  checker_ = std::make_unique<HealthChecker>(balancer_, options_.health);
  checker_->start();
  for (int i = 0; i < worker_count_; ++i)
    workers_.emplace_back([this] {
      name_this_thread("ts-work-" + options_.name);
      worker_loop();
    });
  watchdog_ = std::thread([this] {
    name_this_thread("ts-watch-" + options_.name);
    watchdog_loop();
  });
  return Status::Ok();
}

void WorkerPool::stop_taking() {
  taking_.store(false);
  queue_.stop();
  wake_slot_waiters();
}

void WorkerPool::shutdown(std::chrono::milliseconds grace) {
  stop_taking();
  {
    MutexLock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (!running_.empty()) {
      if (cv_.wait_until(mu_, deadline) == std::cv_status::timeout) break;
    }
    for (auto& [seq, r] : running_) r.call->abort(AbortReason::kShutdown);
  }
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (checker_) checker_->stop();
}

void WorkerPool::on_change(const TaskChange& c) {
  // A scheduled task waiting for its run_at is outside the backlog: not counted, not queued.
  bool left_backlog = c.from == TaskState::kQueued && !c.from_scheduled;
  bool entered_backlog = c.to == TaskState::kQueued && !c.to_scheduled;
  if (left_backlog) {
    queued_.fetch_sub(1);
    ranks_.add(c.priority, c.seq, -1);
  }
  if (entered_backlog) {
    queued_.fetch_add(1);
    ranks_.add(c.priority, c.seq, +1);
  }
  if (c.from == TaskState::kRunning) running_count_.fetch_sub(1);
  if (c.to == TaskState::kRunning) running_count_.fetch_add(1);
  // New tasks, scheduled ones falling due and retried ones go straight into the channel;
  // requeued ones are handed back by their worker, and a backlog left in the store is found by
  // the feeder.
  if (entered_backlog && (!c.from || c.from_scheduled || is_final(*c.from))) {
    queue_.offer(QueueItem{c.seq, c.priority, c.task_id, ""});
  }
  if (c.to == TaskState::kCanceled && c.from) canceled(c.seq, *c.from);
  if (c.to == TaskState::kDone || c.to == TaskState::kFailed) {
    int64_t minute = c.at_ms / 60'000;
    MutexLock lock(throughput_mu_);
    if (throughput_.empty() || throughput_.back().first < minute) {
      throughput_.emplace_back(minute, 0);
    }
    ++throughput_.back().second;
    while (throughput_.size() > kThroughputMinutes) throughput_.pop_front();
  }
}

bool WorkerPool::try_reserve() {
  int64_t r = reserved_.fetch_add(1) + 1;
  if (queued_.load() + r > options_.max_queued) {
    reserved_.fetch_sub(1);
    return false;
  }
  return true;
}

void WorkerPool::unreserve() { reserved_.fetch_sub(1); }

void WorkerPool::canceled(int64_t seq, TaskState was) {
  if (was == TaskState::kQueued) {
    queue_.remove(seq);
    return;
  }
  {
    MutexLock lock(mu_);
    auto it = running_.find(seq);
    if (it != running_.end()) it->second.call->abort(AbortReason::kCanceled);
  }
  wake_slot_waiters();  // a claim waiting for a slot stops waiting
}

int64_t WorkerPool::backoff_ms(int attempt) {
  int64_t ms = doubling_delay_ms(options_.retry.base_ms, attempt, options_.retry.cap_ms);
  MutexLock lock(mu_);
  return equal_jitter_ms(ms, rng_);
}

bool WorkerPool::try_claim() {
  // Serialised by the queue's lock: only the count's decrements race, and they only make room.
  if (claimed_.load() >= balancer_.claimable_slots()) return false;
  claimed_.fetch_add(1);
  return true;
}

void WorkerPool::unclaim() {
  claimed_.fetch_sub(1);
  queue_.wake_one();
}

void WorkerPool::wake_slot_waiters() {
  MutexLock lock(slot_mu_);
  for (SlotWaiter* w : slot_line_) w->cv.notify_one();
}

void WorkerPool::wake_first_waiter() {
  MutexLock lock(slot_mu_);
  if (!slot_line_.empty()) slot_line_.front()->cv.notify_one();
}

void WorkerPool::leave_line(SlotWaiter* me) {
  bool was_first = slot_line_.front() == me;
  slot_line_.erase(std::find(slot_line_.begin(), slot_line_.end(), me));
  if (was_first && !slot_line_.empty()) slot_line_.front()->cv.notify_one();
}

std::optional<Lease> WorkerPool::wait_for_slot(const std::string& avoid, const BackendCall& call) {
  // The first in line looks again this often for slots that free by time (an ejection or a
  // rest ends); the others are woken when they become first.
  constexpr auto kFirstLook = std::chrono::milliseconds(50);
  constexpr auto kOthersLook = std::chrono::milliseconds(1000);
  SlotWaiter me;
  MutexLock lock(slot_mu_);
  slot_line_.push_back(&me);
  for (;;) {
    bool first = slot_line_.front() == &me;
    if (call.abort_reason() != AbortReason::kNone || !taking_.load()) {
      leave_line(&me);
      return std::nullopt;
    }
    if (first) {
      if (auto lease = balancer_.acquire(avoid)) {
        leave_line(&me);  // the next in line may find a slot too
        return lease;
      }
    }
    // Fewer slots than claims (backends went down or rest): the newest claim gives its task
    // back.
    if (slot_line_.back() == &me && claimed_.load() > balancer_.claimable_slots()) {
      leave_line(&me);
      return std::nullopt;
    }
    me.cv.wait_for(slot_mu_, first ? kFirstLook : kOthersLook);
  }
}

void WorkerPool::worker_loop() {
  BackendConnections connections;  // this worker's, kept open between its calls
  while (taking_.load()) {
    auto item = queue_.take([&](const QueueItem&) { return try_claim(); }, kTakeWaitMs);
    if (!item) continue;
    busy_.fetch_add(1);
    run_one(*item, connections);
    busy_.fetch_sub(1);
  }
}

void WorkerPool::report(const std::string& task_id, const std::string& backend,
                        const std::string& outcome, int64_t duration_ms) {
  if (attempt_listener_) {
    attempt_listener_(AttemptReport{options_.name, task_id, backend, outcome, duration_ms});
  }
}

void WorkerPool::watchdog_loop() {
  MutexLock lock(mu_);
  while (!stopping_) {
    int64_t now = clock_.now_ms();
    for (auto& [seq, r] : running_) {
      if (now >= r.deadline_ms && r.call->abort_reason() == AbortReason::kNone) {
        r.call->abort(AbortReason::kTimeout);
      }
    }
    cv_.wait_for(mu_, std::chrono::milliseconds(kWatchdogTickMs));
  }
}

StatusOr<int64_t> WorkerPool::queue_position(int priority, int64_t seq) const {
  BacklogRanks::Ahead ahead = ranks_.ahead(priority, seq);
  auto in_block =
      backlog_.count_queued_between(options_.name, priority, ahead.block_first_seq, seq);
  if (!in_block.ok()) return in_block.status();
  // The counts follow commits a moment after a reader sees them: never below zero.
  return std::max<int64_t>(0, ahead.outside_block + *in_block);
}

std::optional<int64_t> WorkerPool::estimate_start_ms(int64_t position) const {
  auto backends = balancer_.snapshot();
  double mean = 0;
  int samples = 0, slots = 0, busy = 0;
  for (const auto& b : backends) {
    if (!is_healthy(b.state)) continue;
    slots += b.slots;
    busy += b.slots_busy;
    if (b.latency_mean_ms > 0) {
      mean += b.latency_mean_ms;
      ++samples;
    }
  }
  if (slots == 0 || samples == 0) return std::nullopt;
  mean /= samples;
  int64_t now = clock_.now_ms();
  int64_t free_slots = slots - busy;
  if (position < free_slots) return now;
  // Each round of `slots` tasks takes about one mean duration; the running ones are, on
  // average, half done.
  int64_t rounds = (position - free_slots) / slots;
  return now + static_cast<int64_t>(mean * (0.5 + static_cast<double>(rounds)));
}

PoolStats WorkerPool::stats() const {
  PoolStats s;
  s.name = options_.name;
  s.queued = queued_.load();
  s.in_memory = queue_.size();
  s.running = running_count_.load();
  s.workers = worker_count_;
  s.workers_busy = busy_.load();
  s.max_queued = options_.max_queued;
  s.backends = balancer_.snapshot();
  if (s.queued > 0) {
    auto oldest = backlog_.oldest_queued_created_at(options_.name);
    if (oldest.ok()) s.oldest_queued_ms = *oldest;
  }
  int64_t now_minute = clock_.now_ms() / 60'000;
  s.throughput_per_minute.assign(kThroughputMinutes, 0);
  {
    MutexLock lock(throughput_mu_);
    for (const auto& [minute, n] : throughput_) {
      int64_t age = now_minute - minute;
      if (age >= 0 && age < kThroughputMinutes) {
        s.throughput_per_minute[kThroughputMinutes - 1 - age] = n;
      }
    }
  }
  s.completed_last_minute = s.throughput_per_minute.back();
  return s;
}

}  // namespace ts
