#pragma once
// PoolDirectory: what the service needs of the pools, so that service sees only store and queue
// (the pools are implemented over the worker pools by src/app/). Implementations are
// thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "store/task_store.h"

namespace ts {

class PoolDirectory {
 public:
  virtual ~PoolDirectory() = default;
  virtual bool has_pool(const std::string& type) const = 0;
  virtual std::vector<std::string> pool_names() const = 0;
  // Room for one more queued task of `type`? A true must be paired with unreserve().
  virtual bool try_reserve(const std::string& type) = 0;
  virtual void unreserve(const std::string& type) = 0;
  virtual int default_max_attempts(const std::string& type) const = 0;
  virtual int max_timeout_s(const std::string& type) const = 0;
  // A committed change, in commit order: feeds the pool's queue and counters; a cancel takes
  // the task out of the queue or aborts its backend call.
  virtual void on_change(const TaskChange& change) = 0;
  // QUEUED tasks of `type` that run before a queued one of this priority and seq.
  virtual StatusOr<int64_t> queue_position(const std::string& type, int priority,
                                           int64_t seq) const = 0;
  virtual std::optional<int64_t> estimate_start_ms(const std::string& type,
                                                   int64_t position) const = 0;
};

}  // namespace ts
