#pragma once
// ReadyQueue is one pool's queue: a bounded Channel in memory, refilled by a feeder thread from
// the store, which holds the whole backlog. Memory stays channel-sized however long the backlog.
//
// Thread-safe. Workers block in take() until an item is at the front *and* the caller's
// try_start accepts it (a backend slot is free), so a task leaves the queue only when it can
// run: queued tasks stay cancellable and their positions true. The queue does not know the
// store: the feeder reads it through the injected Source.
//
// "Held" tasks are those in the channel or taken by a worker and not yet released; the
// feeder never brings a held task in twice.

#include <functional>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include "core/clock.h"
#include "core/mutex.h"
#include "core/status.h"
#include "queue/channel.h"

namespace ts {

class ReadyQueue {
 public:
  struct Options {
    std::string name;  // the pool, for logs
    size_t capacity = 1024;
  };
  struct Source {
    // Ready tasks due by `now`, best first, none of `exclude`, at most `limit`.
    std::function<StatusOr<std::vector<QueueItem>>(
        size_t limit, const std::unordered_set<int64_t>& exclude, int64_t now)>
        fetch;
    // The earliest time after `now` at which a delayed task falls due.
    std::function<StatusOr<std::optional<int64_t>>(int64_t now)> next_due;
  };

  ReadyQueue(Options options, Source source, const Clock& clock);
  ~ReadyQueue();

  // Starts the feeder; the store may hold a backlog (after a restart), so it looks at once.
  void start();
  // Stops the feeder and makes every take() return nullopt.
  void stop();

  // A committed task that is ready now (new, or put back without delay).
  void offer(QueueItem item);
  // A worker gives back a task it held, and it is ready again at once.
  void give_back(QueueItem item);
  // A task that waits in the store until due_ms (a retry after backoff).
  void schedule(int64_t due_ms);
  // A worker is finished with a task it took.
  void release(int64_t seq);
  // A canceled task leaves the channel.
  void remove(int64_t seq);
  // Something outside changed (a backend came back): workers look again.
  void wake();
  // Room for one more worker to start a task: one worker looks again.
  void wake_one();

  // Blocks until the front item is accepted by try_start (called with the lock held; it must
  // not call back into this queue), the queue is stopped, or max_wait_ms passes.
  std::optional<QueueItem> take(const std::function<bool(const QueueItem&)>& try_start,
                                int max_wait_ms);

  size_t size() const;

 private:
  void feeder_loop();
  void offer_locked(QueueItem item) REQUIRES(mu_);
  // take()'s condition: stopping, or the front item accepted by try_start.
  bool front_taken_or_stopping(const std::function<bool(const QueueItem&)>& try_start)
      REQUIRES(mu_);

  const Options options_;
  const Source source_;
  const Clock& clock_;

  mutable Mutex mu_;
  CondVar workers_cv_;
  CondVar feeder_cv_;
  Channel channel_ GUARDED_BY(mu_);
  std::unordered_set<int64_t> taken_ GUARDED_BY(mu_);  // taken by workers, not yet released
  bool more_in_store_ GUARDED_BY(mu_) = true;          // the store may hold ready tasks not here
  uint64_t spill_gen_ GUARDED_BY(mu_) = 0;             // bumped whenever more_in_store_ is set
  std::optional<int64_t> next_due_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread feeder_;
};

}  // namespace ts
