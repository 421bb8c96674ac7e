#include "service/retention.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/thread_name.h"

namespace ts {

Retention::Retention(RetentionStore& store, const BlobStore& results, const BlobStore& inputs,
                     const Clock& clock, OnPurged on_purged)
    : store_(store),
      results_(results),
      inputs_(inputs),
      clock_(clock),
      on_purged_(std::move(on_purged)) {}

Retention::~Retention() { stop(); }

void Retention::stop() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

StatusOr<int64_t> Retention::purge(int64_t before_ms) {
  // Small batches: each is one transaction of the writer, which submits wait behind.
  constexpr int kBatch = 100;
  int64_t total = 0;
  for (;;) {
    auto purged = store_.purge_final(before_ms, kBatch);
    if (!purged.ok()) return purged.status();
    for (const PurgedTask& p : *purged) {
      // After the commit: a crash in between leaves a file without its task, never the reverse.
      results_.remove(p.task_id);
      inputs_.remove(p.task_id);
    }
    total += static_cast<int64_t>(purged->size());
    if (on_purged_ && !purged->empty()) on_purged_(*purged);
    // A long backlog of old tasks (the first round after --retain-final is set) must not hold
    // up a shutdown: the next round goes on where this one stopped.
    if (purged->size() < static_cast<size_t>(kBatch) || stop_.load()) return total;
  }
}

void Retention::start(std::chrono::seconds keep) {
  // A tenth of the retention between rounds, from 1 s to 1 min: a task is deleted at most that
  // long after it is due.
  auto every = std::clamp<std::chrono::milliseconds>(keep / 10, std::chrono::seconds(1),
                                                     std::chrono::minutes(1));
  thread_ = std::thread([this, keep, every] {
    name_this_thread("ts-retention");
    MutexLock lock(mu_);
    while (!stop_.load()) {
      lock.unlock();
      int64_t before =
          clock_.now_ms() - std::chrono::duration_cast<std::chrono::milliseconds>(keep).count();
      auto n = purge(before);
      if (!n.ok()) {
        spdlog::warn("retention: cannot delete old tasks: {}", n.status().message());
      } else if (*n > 0) {
        spdlog::info("retention: deleted {} final tasks that finished over {} s ago", *n,
                     keep.count());
      }
      lock.lock();
      const auto deadline = std::chrono::steady_clock::now() + every;
      while (!stop_.load()) {
        if (cv_.wait_until(mu_, deadline) == std::cv_status::timeout) break;
      }
    }
  });
}

}  // namespace ts
