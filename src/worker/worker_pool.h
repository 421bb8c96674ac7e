#pragma once
// WorkerPool runs the tasks of one pool: its ReadyQueue (fed from the store), its Balancer and
// HealthChecker, a fixed set of worker threads and a watchdog for attempt deadlines.
//
// A worker's cycle: claim a task (mark it RUNNING: one guarded UPDATE; a task canceled
// meanwhile is dropped) → wait for a backend slot → call the backend, streaming its answer →
// free the slot → store the result (in the store when small, a file when large) with the DONE,
// or FAILED, or back to QUEUED after a backoff, preferring another backend.
//
// The claim is made while the slot is still busy with the call before it: a pool holds at most
// one claimed task per slot that can take tasks, so the next call starts the moment a slot
// frees and the RUNNING commit never sits between two calls on a GPU. Claimed tasks wait for
// slots in claim order (their queue order). A claim that gets no slot (the backends went down)
// is given back without spending its attempt; one left by a crash before its call started is
// given back by recovery (see TaskTransitions::note_started).
//
// Thread-safe. The store's commit listener feeds on_change() in commit order; cancel() and the
// stats may be called from any thread. Pools share nothing but the store: a dead or slow pool
// never blocks another. worker_pool.cpp holds the pool's lifecycle, bookkeeping and estimates;
// attempt.cpp one attempt and what its outcome does to the task.

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend_client.h"
#include "balancer/balancer.h"
#include "balancer/health_checker.h"
#include "core/clock.h"
#include "core/mutex.h"
#include "queue/backlog_ranks.h"
#include "queue/ready_queue.h"
#include "store/blob_store.h"
#include "store/task_store.h"

namespace ts {

struct RetryPolicy {
  int64_t base_ms = 1'000;
  int64_t cap_ms = 60'000;
};

struct PoolOptions {
  std::string name;
  std::string request_path = "/v1/images/generations";
  std::vector<BackendSpec> backends;
  HealthCheckOptions health;
  HealthPolicy health_policy;
  int workers = 0;  // 0: twice the pool's total backend slots (one calling, one claimed ahead)
  size_t queue_capacity = 1024;
  int64_t max_queued = 100'000;
  int default_timeout_s = 300;
  int max_timeout_s = 3600;
  int default_max_attempts = 3;
  RetryPolicy retry;
  int64_t connect_timeout_ms = 5'000;
  size_t max_answer_bytes = 128u << 20;
  // Answers up to this many bytes are stored in the store with the DONE; larger ones are
  // streamed to a file. 0: every answer to a file.
  size_t inline_result_max = 256u << 10;
  // An images pool takes a 2xx as a result only when it is an images answer (png.h).
  bool expect_images = false;
};

// Something a pool observed that the rest of the server reports (metrics, logs).
struct AttemptReport {
  std::string pool;
  std::string task_id;
  std::string backend;
  std::string outcome;  // as Attempt::outcome
  int64_t duration_ms = 0;
};

struct PoolStats {
  std::string name;
  int64_t queued = 0;    // QUEUED rows in the store (the whole backlog)
  size_t in_memory = 0;  // of which in the channel
  int64_t running = 0;
  int workers = 0;
  int workers_busy = 0;
  int64_t max_queued = 0;
  std::optional<int64_t> oldest_queued_ms;     // created_at of the oldest QUEUED task
  int64_t completed_last_minute = 0;           // tasks that ended DONE or FAILED
  std::vector<int64_t> throughput_per_minute;  // the last 15 minutes, oldest first
  std::vector<BackendSnapshot> backends;
};

class WorkerPool {
 public:
  using AttemptListener = std::function<void(const AttemptReport&)>;

  // `transitions` and `backlog` are usually one store; a test may give a fake.
  WorkerPool(PoolOptions options, TaskTransitions& transitions, BacklogSource& backlog,
             const BlobStore& results, const BlobStore& inputs, const Clock& clock);
  ~WorkerPool();

  // Set once, before start().
  void set_attempt_listener(AttemptListener listener) { attempt_listener_ = std::move(listener); }
  // Counts the store's backlog, then starts the feeder, the health checker and the workers.
  Status start();
  // No task starts after this; running attempts go on.
  void stop_taking();
  // Waits up to `grace` for running attempts, aborts the rest (they return to QUEUED without
  // spending an attempt) and joins every thread.
  void shutdown(std::chrono::milliseconds grace);

  // From the store's commit listener, in commit order. Runs on the writer thread: cheap only.
  void on_change(const TaskChange& change);
  // Admission: room for one more queued task? Pair a true with unreserve() once the insert is
  // committed (or failed).
  bool try_reserve();
  void unreserve();

  // How many QUEUED tasks of this pool run before a queued one of `priority` and `seq`: a few
  // counts in memory and one over at most BacklogRanks::kBlockSeqs rows of the store.
  StatusOr<int64_t> queue_position(int priority, int64_t seq) const;
  // When a task at `position` (0: next) may start, from recent durations and slots.
  std::optional<int64_t> estimate_start_ms(int64_t position) const;
  PoolStats stats() const;
  const PoolOptions& options() const { return options_; }
  const Balancer& balancer() const { return balancer_; }
  // A retry's delay after `attempt` failed attempts: exponential, capped, with jitter.
  int64_t backoff_ms(int attempt);

 private:
  struct Running {
    std::shared_ptr<BackendCall> call;
    int64_t deadline_ms = 0;
  };
  void worker_loop();
  // Called with the queue's lock held: may this worker claim the front task?
  bool try_claim();
  // A claim got its slot or was dropped: another may be made.
  void unclaim();
  // One attempt of a task (attempt.cpp).
  void run_one(const QueueItem& item, BackendConnections& connections);
  // Waits, in claim order, for a slot for a claimed task. nullopt when the call was aborted,
  // the pool stops taking tasks, or the claim must be given back (fewer slots than claims).
  std::optional<Lease> wait_for_slot(const std::string& avoid, const BackendCall& call);
  // Wakes the claims waiting for slots (a backend changed, an abort, a stop), or only the first
  // in line (a slot freed: the others cannot take it before it).
  void wake_slot_waiters();
  void wake_first_waiter();
  void watchdog_loop();
  // A canceled task: out of the channel, or its backend call aborted.
  void canceled(int64_t seq, TaskState was);
  void report(const std::string& task_id, const std::string& backend, const std::string& outcome,
              int64_t duration_ms);

  const PoolOptions options_;
  TaskTransitions& transitions_;
  BacklogSource& backlog_;
  const BlobStore& results_;
  const BlobStore& inputs_;
  const Clock& clock_;
  AttemptListener attempt_listener_;

  Balancer balancer_;
  ReadyQueue queue_;
  std::unique_ptr<HealthChecker> checker_;
  int worker_count_ = 1;

  std::atomic<int64_t> queued_{0};    // QUEUED rows of this pool in the store
  BacklogRanks ranks_;                // the same rows by priority and seq block
  std::atomic<int64_t> reserved_{0};  // admitted submits not yet committed
  std::atomic<int64_t> running_count_{0};
  std::atomic<int> busy_{0};
  std::atomic<bool> taking_{true};
  std::atomic<int> claimed_{0};  // tasks claimed (RUNNING) whose call has not started

  // A claim waiting for a slot; woken alone, so a freed slot wakes one thread, not all.
  struct SlotWaiter {
    CondVar cv;
  };
  // Takes `me` out of the line; the next first in line looks again.
  void leave_line(SlotWaiter* me) REQUIRES(slot_mu_);
  Mutex slot_mu_;
  std::deque<SlotWaiter*> slot_line_ GUARDED_BY(slot_mu_);  // waiting claims, oldest first

  static constexpr int kThroughputMinutes = 15;
  mutable Mutex throughput_mu_;
  // (minute, tasks finished), oldest first.
  std::deque<std::pair<int64_t, int64_t>> throughput_ GUARDED_BY(throughput_mu_);
  mutable Mutex mu_;
  CondVar cv_;
  std::map<int64_t, Running> running_ GUARDED_BY(mu_);  // seq → its backend call
  bool stopping_ GUARDED_BY(mu_) = false;
  std::mt19937_64 rng_ GUARDED_BY(mu_);

  std::vector<std::thread> workers_;
  std::thread watchdog_;
};

}  // namespace ts
