#pragma once
// BacklogRanks counts one pool's QUEUED tasks by priority and by block of seqs, so that a
// task's queue position is a sum of a few counts here plus one count over at most kBlockSeqs
// entries of the store's ready index, however long the backlog. A single COUNT over the index
// visits every task ahead: 60 ms for the last of 1,000,000, and a client polling it held a
// core for that long per request.
//
// Memory is one entry per priority and non-empty block: a backlog of 1,000,000 consecutive
// tasks is 245 entries per priority. Thread-safe: the commit listener adds and removes, any
// thread asks.

#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "core/mutex.h"

namespace ts {

class BacklogRanks {
 public:
  static constexpr int kBlockBits = 12;
  static constexpr int64_t kBlockSeqs = int64_t{1} << kBlockBits;
  static int64_t block_of(int64_t seq) { return seq >> kBlockBits; }

  struct BlockCount {
    int priority = 0;
    int64_t block = 0;
    int64_t count = 0;
  };
  // Replaces every count (read from the store at start).
  void reset(const std::vector<BlockCount>& counts);
  // A task of this priority and seq became QUEUED (+1) or left QUEUED (-1).
  void add(int priority, int64_t seq, int64_t delta);

  // What runs before a task of `priority` and `seq`: the QUEUED tasks of higher priorities and
  // those of its own priority in earlier blocks. Those of its own block with a smaller seq are
  // the caller's to count, from `block_first_seq` on.
  struct Ahead {
    int64_t outside_block = 0;
    int64_t block_first_seq = 0;
  };
  Ahead ahead(int priority, int64_t seq) const;
  int64_t total() const;

 private:
  struct Priority {
    int64_t total = 0;
    std::map<int64_t, int64_t> blocks;  // block → QUEUED tasks in it; no zero entries
  };
  mutable Mutex mu_;
  std::map<int, Priority, std::greater<int>> by_priority_ GUARDED_BY(mu_);  // highest first
};

}  // namespace ts
