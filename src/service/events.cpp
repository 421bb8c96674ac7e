#include "service/events.h"

#include <algorithm>

#include "core/blocking.h"

namespace ts {

void EventHub::publish(const std::vector<TaskChange>& changes) {
  {
    MutexLock lock(mu_);
    for (const TaskChange& c : changes) {
      TaskEvent e;
      e.id = next_id_++;
      e.task_id = c.task_id;
      e.type = c.type;
      e.from = c.from;
      e.status = c.to;
      e.attempt = c.attempt;
      e.at_ms = c.at_ms;
      e.backend = c.backend;
      e.error = c.error;
      ring_.push_back(std::move(e));
    }
    while (ring_.size() > capacity_) ring_.pop_front();
  }
  cv_.notify_all();
}

uint64_t EventHub::last_id() const {
  MutexLock lock(mu_);
  return next_id_ - 1;
}

std::vector<TaskEvent> EventHub::wait_after(uint64_t* cursor, std::chrono::milliseconds timeout,
                                            const std::function<bool(const TaskEvent&)>& filter,
                                            bool* lost) {
  std::vector<TaskEvent> out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  uint64_t after = *cursor;
  MutexLock lock(mu_);
  if (lost) *lost = false;
  for (;;) {
    if (!ring_.empty() && after + 1 < ring_.front().id && lost) *lost = true;
    for (auto it = ring_.rbegin(); it != ring_.rend() && it->id > after; ++it) {
      if (!filter || filter(*it)) out.push_back(*it);
    }
    if (!out.empty() || closed_) break;
    // Nothing of interest yet: skip what was scanned and wait for more.
    if (!ring_.empty()) after = std::max(after, ring_.back().id);
    about_to_block();
    if (cv_.wait_until(mu_, deadline) == std::cv_status::timeout) break;
  }
  if (!ring_.empty()) after = std::max(after, ring_.back().id);
  *cursor = after;
  std::reverse(out.begin(), out.end());
  return out;
}

void EventHub::close() {
  {
    MutexLock lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

bool EventHub::closed() const {
  MutexLock lock(mu_);
  return closed_;
}

}  // namespace ts
