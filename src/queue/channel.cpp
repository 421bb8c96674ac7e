#include "queue/channel.h"

namespace ts {

Channel::Offer Channel::offer(QueueItem item, std::optional<QueueItem>* evicted) {
  if (contains(item.seq)) return Offer::kAdded;
  if (full()) {
    auto last = std::prev(items_.end());
    if (!Before()(item, *last)) return Offer::kRejected;
    if (evicted) *evicted = *last;
    priority_of_.erase(last->seq);
    items_.erase(last);
  }
  priority_of_[item.seq] = item.priority;
  items_.insert(std::move(item));
  return Offer::kAdded;
}

const QueueItem* Channel::front() const { return items_.empty() ? nullptr : &*items_.begin(); }

std::optional<QueueItem> Channel::pop_front() {
  if (items_.empty()) return std::nullopt;
  QueueItem item = *items_.begin();
  items_.erase(items_.begin());
  priority_of_.erase(item.seq);
  return item;
}

bool Channel::remove(int64_t seq) {
  auto it = priority_of_.find(seq);
  if (it == priority_of_.end()) return false;
  QueueItem key;
  key.seq = seq;
  key.priority = it->second;
  items_.erase(key);
  priority_of_.erase(it);
  return true;
}

}  // namespace ts
