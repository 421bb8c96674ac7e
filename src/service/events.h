#pragma once
// EventHub: the recent task state changes, numbered, for everything that watches tasks live
// (SSE streams, long-poll waits, the dashboard). The store's commit listener publishes each
// committed batch; readers wait for ids past the last one they saw. A bounded ring: a reader
// that falls more than `capacity` events behind is told it lost some and resumes at the oldest.
//
// Thread-safe. publish() runs on the store's writer thread and only appends and notifies.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/mutex.h"
#include "core/task.h"
#include "store/task_store.h"

namespace ts {

struct TaskEvent {
  uint64_t id = 0;
  std::string task_id;
  std::string type;
  std::optional<TaskState> from;
  TaskState status = TaskState::kQueued;
  int attempt = 0;
  int64_t at_ms = 0;
  std::string backend;
  std::string error;
};

class EventHub {
 public:
  explicit EventHub(size_t capacity = 16384) : capacity_(capacity) {}

  void publish(const std::vector<TaskChange>& changes);
  uint64_t last_id() const;
  // Events with id > *cursor that pass `filter` (all when empty), waiting up to `timeout` for
  // the first; *cursor moves past every event looked at. *lost is set when events after
  // *cursor were dropped from the ring. Returns early, empty, after close().
  std::vector<TaskEvent> wait_after(uint64_t* cursor, std::chrono::milliseconds timeout,
                                    const std::function<bool(const TaskEvent&)>& filter,
                                    bool* lost);
  // Wakes every waiter for good (shutdown).
  void close();
  bool closed() const;

 private:
  const size_t capacity_;
  mutable Mutex mu_;
  CondVar cv_;
  std::deque<TaskEvent> ring_ GUARDED_BY(mu_);  // ids ascending, contiguous
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  bool closed_ GUARDED_BY(mu_) = false;
};

}  // namespace ts
