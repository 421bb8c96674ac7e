#include "service/scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "core/thread_name.h"

namespace ts {
namespace {

// The store is asked again this often even without a note, so that a missed note (a write that
// failed half-way, a clock step) delays a task by at most this much.
constexpr int64_t kIdleRecheckMs = 1000;

}  // namespace

Scheduler::Scheduler(TaskLedger& store, const Clock& clock) : store_(store), clock_(clock) {}

Scheduler::~Scheduler() { stop(); }

void Scheduler::start() {
  {
    MutexLock lock(mu_);
    next_ = clock_.now_ms();  // whatever fell due while the server was down goes in at once
  }
  thread_ = std::thread([this] {
    name_this_thread("ts-schedule");
    loop();
  });
}

void Scheduler::stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::note(int64_t run_at_ms) {
  bool sooner;
  {
    MutexLock lock(mu_);
    sooner = !next_ || run_at_ms < *next_;
    if (sooner) next_ = run_at_ms;
  }
  if (sooner) cv_.notify_one();
}

void Scheduler::loop() {
  MutexLock lock(mu_);
  int64_t last_check = clock_.now_ms();
  while (!stop_) {
    int64_t now = clock_.now_ms();
    bool due = next_ && now >= *next_;
    bool recheck = now - last_check >= kIdleRecheckMs;
    if (!due && !recheck) {
      int64_t wait_ms = kIdleRecheckMs - (now - last_check);
      if (next_) wait_ms = std::min(wait_ms, *next_ - now);
      cv_.wait_for(mu_, std::chrono::milliseconds(std::max<int64_t>(1, wait_ms)));
      continue;
    }
    if (due) next_.reset();
    lock.unlock();
    // Only a due task costs a write; the idle recheck is one read of tasks_scheduled.
    StatusOr<int> promoted = 0;
    if (due) {
      promoted = store_.promote_scheduled(now, kBatch);
      if (!promoted.ok()) {
        spdlog::warn("scheduler: cannot promote due tasks: {}", promoted.status().message());
      } else if (*promoted > 0) {
        spdlog::debug("scheduler: {} scheduled tasks fell due", *promoted);
      }
    }
    auto earliest = store_.next_scheduled();
    lock.lock();
    last_check = now;
    if (!promoted.ok()) {
      next_ = now + kIdleRecheckMs;
      continue;
    }
    std::optional<int64_t> next = earliest.ok() ? *earliest : std::nullopt;
    if (*promoted == kBatch) next = now;  // a full batch: the rest at once
    if (next && (!next_ || *next < *next_)) next_ = next;
  }
}

}  // namespace ts
