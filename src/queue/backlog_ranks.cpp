#include "queue/backlog_ranks.h"

namespace ts {

void BacklogRanks::reset(const std::vector<BlockCount>& counts) {
  MutexLock lock(mu_);
  by_priority_.clear();
  for (const BlockCount& c : counts) {
    if (c.count <= 0) continue;
    Priority& p = by_priority_[c.priority];
    p.total += c.count;
    p.blocks[c.block] += c.count;
  }
}

void BacklogRanks::add(int priority, int64_t seq, int64_t delta) {
  MutexLock lock(mu_);
  Priority& p = by_priority_[priority];
  p.total += delta;
  auto [it, added] = p.blocks.try_emplace(block_of(seq), 0);
  it->second += delta;
  if (it->second <= 0) p.blocks.erase(it);
  if (p.total <= 0 && p.blocks.empty()) by_priority_.erase(priority);
}

BacklogRanks::Ahead BacklogRanks::ahead(int priority, int64_t seq) const {
  MutexLock lock(mu_);
  Ahead out;
  int64_t block = block_of(seq);
  out.block_first_seq = block << kBlockBits;
  for (const auto& [prio, p] : by_priority_) {
    if (prio < priority) break;
    if (prio > priority) {
      out.outside_block += p.total;
      continue;
    }
    for (auto it = p.blocks.begin(); it != p.blocks.end() && it->first < block; ++it) {
      out.outside_block += it->second;
    }
  }
  return out;
}

int64_t BacklogRanks::total() const {
  MutexLock lock(mu_);
  int64_t n = 0;
  for (const auto& [prio, p] : by_priority_) n += p.total;
  return n;
}

}  // namespace ts
