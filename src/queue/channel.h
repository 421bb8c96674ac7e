#pragma once
// Channel is the bounded in-memory part of a pool's queue: the best `capacity` ready tasks,
// ordered by priority (higher first) then age (lower seq first). The store holds the whole
// backlog; the channel is a window onto its head. Not thread-safe: ReadyQueue guards it.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace ts {

struct QueueItem {
  int64_t seq = 0;
  int priority = 0;
  std::string task_id;
  std::string avoid_backend;  // the backend of the previous attempt, tried last
};

class Channel {
 public:
  explicit Channel(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}

  enum class Offer { kAdded, kRejected };
  // Adds the item. When full, the item displaces the last one if it ranks before it (the
  // displaced one is returned in *evicted: it stays in the store); otherwise it is rejected.
  // An item already present is not added twice (kAdded).
  Offer offer(QueueItem item, std::optional<QueueItem>* evicted);
  const QueueItem* front() const;
  std::optional<QueueItem> pop_front();
  bool remove(int64_t seq);
  bool contains(int64_t seq) const { return priority_of_.count(seq) != 0; }
  size_t size() const { return items_.size(); }
  size_t capacity() const { return capacity_; }
  bool full() const { return items_.size() >= capacity_; }
  std::vector<QueueItem> items() const { return {items_.begin(), items_.end()}; }

 private:
  struct Before {
    bool operator()(const QueueItem& a, const QueueItem& b) const {
      if (a.priority != b.priority) return a.priority > b.priority;
      return a.seq < b.seq;
    }
  };
  const size_t capacity_;
  std::set<QueueItem, Before> items_;
  std::unordered_map<int64_t, int> priority_of_;  // seq → priority of the items present
};

}  // namespace ts
