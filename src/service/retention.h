#pragma once
// Retention (--retain-final): deletes final tasks, with their results and uploads, once they
// finished longer ago than `keep`, in rounds on a thread of its own, a few per transaction.
// Tasks whose webhook is still to be delivered are kept until it is.
//
// Thread-safe: start() once; stop() (also from the destructor) ends and joins the thread.

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/mutex.h"
#include "store/blob_store.h"
#include "store/task_store.h"

namespace ts {

class Retention {
 public:
  // After each transaction that deleted tasks, with those tasks (their files already removed).
  using OnPurged = std::function<void(const std::vector<PurgedTask>&)>;
  Retention(RetentionStore& store, const BlobStore& results, const BlobStore& inputs,
            const Clock& clock, OnPurged on_purged);
  ~Retention();

  void start(std::chrono::seconds keep);
  void stop();
  // One round: every final task that finished before before_ms, in batches of a transaction
  // each. Returns how many. Ends early once stop() was called.
  StatusOr<int64_t> purge(int64_t before_ms);

 private:
  RetentionStore& store_;
  const BlobStore& results_;
  const BlobStore& inputs_;
  const Clock& clock_;
  const OnPurged on_purged_;
  Mutex mu_;
  CondVar cv_;
  std::atomic<bool> stop_{false};  // set under mu_
  std::thread thread_;
};

}  // namespace ts
