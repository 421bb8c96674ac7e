#pragma once
// TaskStore is the durable record of every task: one SQLite file in WAL mode.
//
// Thread-safe. Every write goes through one writer thread that owns the write connection and
// commits all writes waiting at that moment in one transaction (group commit); a notifier
// thread then answers each caller while the writer goes on with the next transaction. A lone
// write is committed at once, never after a timer. Reads use a small pool
// of their own connections and never wait for the writer.
//
// Each state change is one UPDATE guarded by the state it expects (`WHERE status = ...`): a
// lost race comes back as "nothing changed", never as a task in two states. After each commit
// the CommitListener hears every change of that transaction, in order, before the callers are
// answered.

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "core/task.h"

namespace ts {

struct StoreOptions {
  std::string path;         // the SQLite file; its folder must exist
  bool sync_full = true;    // PRAGMA synchronous=FULL (durable on power loss) or NORMAL
  int read_connections = 8;
  size_t max_batch = 2048;  // most writes in one transaction
};

// One committed change of a task's state, as the CommitListener hears it.
struct TaskChange {
  int64_t seq = 0;
  std::string task_id;
  std::string type;
  int priority = 0;
  std::optional<TaskState> from;  // nullopt for a new task
  TaskState to = TaskState::kQueued;
  int attempt = 0;
  int64_t at_ms = 0;
  std::optional<int64_t> next_attempt_at;
  std::string backend;
  std::string error;
  bool webhook_pending = false;
};

// A queued task as the feeder needs it.
struct ReadyRow {
  int64_t seq = 0;
  int priority = 0;
  std::string task_id;
  std::string last_backend;
};

struct ListQuery {
  std::optional<TaskState> status;
  std::optional<std::string> type;
  std::optional<int64_t> before_seq;  // cursor: only rows older than this
  int limit = 50;
};

struct ResultMeta {
  int64_t size = 0;
  std::string content_type;
};

class TaskStore {
 public:
  using CommitListener = std::function<void(const std::vector<TaskChange>&)>;

  // Opens (creating if missing) the database, applies the built-in migrations, starts the writer.
  static StatusOr<std::unique_ptr<TaskStore>> open(const StoreOptions& options,
                                                   const Clock& clock);
  ~TaskStore();
  TaskStore(const TaskStore&) = delete;
  TaskStore& operator=(const TaskStore&) = delete;

  // Set once, before the first write.
  void set_commit_listener(CommitListener listener);

  // Finishes the writes already waiting, stops the writer, checkpoints the WAL into the main
  // file and closes every connection. Writes after close() fail with kUnavailable.
  void close();

  // ---- writes (each blocks until its transaction is committed) ----

  struct InsertOutcome {
    bool created = false;
    std::string task_id;  // the new task, or the first one with the same idempotency key
  };
  // Inserts a QUEUED task; sets task.seq. A repeated idempotency key creates nothing and names
  // the first task.
  StatusOr<InsertOutcome> insert(Task& task);
  // insert without waiting for it: `done` is called once with the outcome, on the store's
  // notifier thread once the transaction is durable (or failed), or on this thread when the
  // store is closed. `done` must not block: every caller of the store waits behind it.
  void insert_async(Task task, std::function<void(const StatusOr<InsertOutcome>&)> done);
  // All or nothing: on failure of one, none is written and the Status names its index.
  StatusOr<std::vector<InsertOutcome>> insert_batch(std::vector<Task>& tasks);

  // QUEUED → RUNNING, counting an attempt. Returns the task as it now is, or nullopt when it was
  // no longer QUEUED (canceled meanwhile).
  StatusOr<std::optional<Task>> mark_running(int64_t seq, const std::string& backend,
                                             int64_t now_ms);
  // RUNNING → DONE with its result. False when the task was no longer RUNNING.
  StatusOr<bool> finish_done(int64_t seq, const Attempt& attempt, const ResultMeta& result);
  // RUNNING → FAILED. False when the task was no longer RUNNING.
  StatusOr<bool> finish_failed(int64_t seq, const Attempt& attempt, const std::string& error);
  // RUNNING → QUEUED, eligible again at next_attempt_at (nullopt: at once). With
  // give_back_attempt the attempt counter is decremented: the attempt did not count (busy
  // backend, shutdown).
  StatusOr<bool> requeue(int64_t seq, const Attempt& attempt,
                         std::optional<int64_t> next_attempt_at, bool give_back_attempt,
                         const std::string& error);
  // QUEUED|RUNNING → CANCELED. Returns the state it had. kNotFound, or kConflict when final.
  StatusOr<TaskState> cancel(const std::string& task_id, int64_t now_ms);

  struct RecoveryReport {
    int requeued = 0;
    int failed = 0;
  };
  // At start: rows left RUNNING by a crash have spent their attempt; they go back to QUEUED, or
  // to FAILED when no attempt is left.
  StatusOr<RecoveryReport> recover_running(int64_t now_ms);
  // At shutdown: rows still RUNNING go back to QUEUED without spending their attempt.
  StatusOr<int> release_running(int64_t now_ms);

  // Deletes up to `limit` final tasks (DONE, FAILED, CANCELED) that finished before before_ms,
  // oldest first, with their attempts and webhook deliveries; never one whose webhook is still
  // to be delivered. Returns the tasks deleted: their result and input files are the caller's.
  struct Purged {
    std::string task_id;
    TaskState status;
  };
  StatusOr<std::vector<Purged>> purge_final(int64_t before_ms, int limit);

  // Records one webhook delivery attempt and the new delivery state.
  Status record_webhook(int64_t seq, const WebhookDelivery& delivery,
                        const std::string& new_state, std::optional<int64_t> next_at);

  // ---- reads ----

  // With details, also the attempts and webhook deliveries.
  StatusOr<std::optional<Task>> get(const std::string& task_id, bool details);
  // Those of `task_ids` that name a task in the store (an invalid id names none).
  StatusOr<std::unordered_set<std::string>> existing_task_ids(
      const std::vector<std::string>& task_ids);
  StatusOr<std::optional<Task>> get_by_seq(int64_t seq);
  StatusOr<std::optional<Task>> get_by_idempotency_key(const std::string& key);
  StatusOr<std::vector<Task>> list(const ListQuery& query);
  // Up to `limit` QUEUED tasks of `type` due by now_ms, priority then age, skipping `exclude`.
  StatusOr<std::vector<ReadyRow>> fetch_ready(const std::string& type, size_t limit,
                                              const std::unordered_set<int64_t>& exclude,
                                              int64_t now_ms);
  // When the next delayed retry of `type` falls due, if any is waiting past now_ms.
  StatusOr<std::optional<int64_t>> next_due(const std::string& type, int64_t now_ms);
  // Number of QUEUED tasks of `type` that run before one of this priority and seq. Visits each
  // of them: a pool answers from its BacklogRanks instead (queued_blocks, count_queued_between).
  StatusOr<int64_t> queue_position(const std::string& type, int priority, int64_t seq);
  // The QUEUED tasks of `type` counted by priority and by block of 2^block_bits seqs.
  struct QueuedBlock {
    int priority = 0;
    int64_t block = 0;  // seq >> block_bits
    int64_t count = 0;
  };
  StatusOr<std::vector<QueuedBlock>> queued_blocks(const std::string& type, int block_bits);
  // QUEUED tasks of `type` and `priority` with from_seq <= seq < before_seq.
  StatusOr<int64_t> count_queued_between(const std::string& type, int priority,
                                         int64_t from_seq, int64_t before_seq);
  StatusOr<std::optional<int64_t>> oldest_queued_created_at(const std::string& type);
  StatusOr<std::map<std::string, int64_t>> count_by_status();
  // Tasks whose webhook delivery is due by now_ms.
  StatusOr<std::vector<int64_t>> webhooks_due(int64_t now_ms, int limit);
  StatusOr<std::optional<int64_t>> next_webhook_due();
  StatusOr<int64_t> count_all();
  // A cheap write-path check for readiness: the writer runs and the file takes a transaction.
  Status check_writable();
  // Bytes of heap SQLite holds in this process (every connection's page cache included); the
  // write connection's cache grows with the database up to its cache_size of 64 MiB.
  static int64_t sqlite_memory_bytes();

  const std::string& path() const { return options_.path; }

 private:
  class WriteContext;
  struct WriteOp;
  class ReaderPool;

  TaskStore(StoreOptions options, const Clock& clock);
  Status start();
  // Runs fn on the writer thread inside the batch transaction and blocks until it is committed.
  // With savepoint, a failing fn leaves no trace in the transaction.
  Status write(bool savepoint, std::function<Status(WriteContext&)> fn);
  // Queues the op `fill` describes and blocks until its transaction is committed; a plain
  // insert's outcome goes to *outcome.
  Status write_op(const std::function<void(WriteOp&)>& fill, InsertOutcome* outcome = nullptr);
  // Hands an op to the writer; false when the store is closed (the op is not taken).
  bool queue(WriteOp* op);
  // On the writer thread: the batch's transaction; the error of the batch if it failed as a
  // whole (each op's own outcome is in its result).
  Status commit_batch(const std::vector<WriteOp*>& batch);
  // On the writer thread: inserts the plain-insert ops, many rows per statement. False when a
  // statement failed: that undid the whole transaction.
  bool insert_run(const std::vector<WriteOp*>& ops);
  // RUNNING → `to` by one guarded UPDATE (`set_clause` binds ?2.. through `bind`; ?1 is the
  // time, ?9 the row), recording the attempt. False when the task was no longer RUNNING.
  StatusOr<bool> leave_running(int64_t seq, const Attempt& attempt, TaskState to,
                               const std::string& set_clause,
                               const std::function<void(SQLite::Statement&)>& bind);
  void writer_loop();
  // Wakes the callers of committed ops, off the writer's path.
  void notifier_loop();

  StoreOptions options_;
  const Clock& clock_;
  CommitListener listener_;
  std::unique_ptr<SQLite::Database> write_db_;  // used by the writer thread only
  std::unique_ptr<WriteContext> write_ctx_;     // likewise
  std::unique_ptr<SQLite::Statement> begin_;    // likewise: BEGIN IMMEDIATE, prepared once
  std::unique_ptr<SQLite::Statement> commit_;   // likewise: COMMIT
  std::unique_ptr<ReaderPool> readers_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<WriteOp*> pending_;  // guarded by mu_
  // Futex words callers sleep on, one per transaction in turn (see WriteOp); a bell is reused
  // every 64 transactions, which can only wake a caller early, never miss one.
  std::array<std::atomic<uint32_t>, 64> bells_{};
  uint64_t open_bell_ = 0;  // guarded by mu_: the bell of the ops queued now
  bool stopping_ = false;         // guarded by mu_
  bool closed_ = false;           // guarded by mu_
  std::thread writer_;

  std::mutex notify_mu_;
  std::condition_variable notify_cv_;
  std::vector<WriteOp*> to_notify_;  // guarded by notify_mu_: committed, callers not yet woken
  bool notifier_stop_ = false;       // guarded by notify_mu_
  std::thread notifier_;
};

}  // namespace ts
