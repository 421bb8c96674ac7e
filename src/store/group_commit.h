#pragma once
// GroupCommitter: the engine that gives a store its group commit, knowing nothing of the
// database behind it. Callers queue writes; one writer thread takes every write waiting at that
// moment and has the store's BatchExecutor run them in one transaction; the listener hears the
// transaction's changes; then a notifier thread answers each caller while the writer goes on
// with the next transaction. A lone write is committed at once, never after a timer.
//
// Thread-safe. The executor and the listener run on the writer thread only; async completions
// run on the notifier thread (or on the caller's, when the committer is closed).

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "core/mutex.h"
#include "core/status.h"
#include "core/task.h"
#include "store/task_store.h"

namespace ts {

// One write waiting for its transaction.
struct WriteOp {
  // Runs on the writer thread inside the batch's transaction (empty for a plain insert).
  std::function<Status()> fn;
  // A new task: the executor may insert runs of these together instead of calling fn.
  Task* plain_insert = nullptr;
  // A failing fn leaves no trace in the transaction (the executor wraps it in a savepoint).
  bool savepoint = false;
  // Not worth a transaction of its own: it waits for the next write (or kLazyDelay) to commit
  // with it.
  bool lazy = false;
  Status result;          // written by the writer before completion
  InsertOutcome outcome;  // of a plain_insert, with result

  // Engine bookkeeping. A waiting caller sleeps on the bell of the batch it joined (every op
  // queued while the writer is busy joins the same one), and the notifier rings each bell once
  // per transaction: one futex call wakes the batch's callers, where a call per caller cost
  // the notifier a system call each.
  std::atomic<uint32_t> done{0};          // 1 once committed (or failed)
  std::atomic<uint32_t>* bell = nullptr;  // set when queued; lives in the committer
  // An insert nobody waits for: the notifier calls on_done instead of ringing a bell, then
  // deletes the op, which owns its task.
  std::function<void(const StatusOr<InsertOutcome>&)> on_done;
  std::unique_ptr<Task> owned_task;
};

// Runs a batch of writes in one transaction. Implemented by each store.
class BatchExecutor {
 public:
  virtual ~BatchExecutor() = default;
  // On the writer thread: one transaction for `batch`, each op's result set. Returns the error
  // of the batch when it failed as a whole (then no change of it is durable). `changes` gets the
  // committed transaction's changes, in order.
  virtual Status commit_batch(const std::vector<WriteOp*>& batch,
                              std::vector<TaskChange>* changes) = 0;
};

class GroupCommitter {
 public:
  struct Options {
    size_t max_batch = 2048;
    std::string writer_thread = "ts-writer";
    std::string notifier_thread = "ts-notifier";
  };
  GroupCommitter(Options options, BatchExecutor& executor);
  ~GroupCommitter();
  GroupCommitter(const GroupCommitter&) = delete;
  GroupCommitter& operator=(const GroupCommitter&) = delete;

  // Set once, before start(): hears each committed transaction's changes, on the writer thread,
  // before its callers are answered.
  void set_listener(CommitListener listener) { listener_ = std::move(listener); }
  void start();
  // Finishes the writes already queued, answers their callers and joins both threads. Writes
  // after close() fail with kUnavailable.
  void close();

  // Queues the op that `fill` describes and blocks until its transaction is committed; a plain
  // insert's outcome goes to *outcome.
  Status write(const std::function<void(WriteOp&)>& fill, InsertOutcome* outcome = nullptr);
  // A write of fn, blocking; with savepoint a failing fn leaves no trace.
  Status write(bool savepoint, std::function<Status()> fn);
  // Inserts `task` without waiting: `done` is called once (see WriteOp::on_done).
  void insert_async(Task task, std::function<void(const StatusOr<InsertOutcome>&)> done);
  // Runs fn in a batch without waiting for it (in a savepoint: a failure leaves no trace). It is
  // queued behind the writes queued before it, so it commits with or after them; a lazy one
  // opens no transaction of its own: it commits with the next write, or after kLazyDelay.
  void write_async(std::function<Status()> fn, bool lazy = false);
  static constexpr std::chrono::milliseconds kLazyDelay{50};

 private:
  // Hands an op to the writer; false when closed (the op is not taken).
  bool queue(WriteOp* op);
  void writer_loop();
  // Wakes the callers of committed ops, off the writer's path.
  void notifier_loop();

  const Options options_;
  BatchExecutor& executor_;
  CommitListener listener_;
  std::vector<TaskChange> changes_;  // the writer thread's only

  Mutex mu_;
  CondVar cv_;
  std::deque<WriteOp*> pending_ GUARDED_BY(mu_);
  size_t urgent_ GUARDED_BY(mu_) = 0;  // of pending_, the ops that are not lazy
  // Futex words callers sleep on, one per transaction in turn; a bell is reused every 64
  // transactions, which can only wake a caller early, never miss one.
  std::array<std::atomic<uint32_t>, 64> bells_{};
  uint64_t open_bell_ GUARDED_BY(mu_) = 0;  // the bell of the ops queued now
  bool stopping_ GUARDED_BY(mu_) = false;
  bool closed_ GUARDED_BY(mu_) = false;
  std::thread writer_;

  Mutex notify_mu_;
  CondVar notify_cv_;
  std::vector<WriteOp*> to_notify_ GUARDED_BY(notify_mu_);  // committed, callers not yet woken
  bool notifier_stop_ GUARDED_BY(notify_mu_) = false;
  std::thread notifier_;
};

// The error of a write to a closed store.
Status store_closed();

}  // namespace ts
