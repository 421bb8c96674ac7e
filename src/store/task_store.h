#pragma once
// The durable record of every task, as its consumers see it: store-neutral types and one narrow
// interface per consumer, which every store implements (SqliteTaskStore in src/store/sqlite/,
// PostgreSQL later) and tests/store/ checks through one conformance suite.
//
//   TaskTransitions  a pool's workers: QUEUED → RUNNING → DONE | FAILED | QUEUED
//   BacklogSource    a pool's feeder, queue positions and stats: the QUEUED rows in order
//   TaskLedger       the service: submits, cancels, reads, recovery at start, release at stop
//   WebhookOutbox    the webhook dispatcher: deliveries due, and their record
//   RetentionStore   retention and the orphan-file sweep: old final tasks, ids that exist
//   TaskStore        all of them, plus the commit listener and the lifecycle
//
// Every implementation is thread-safe, and keeps these promises:
// - A write returns (or calls back) only once its transaction is committed, durably under
//   sync_full. Many concurrent writes share one transaction (group commit).
// - Each state change is one update guarded by the state it expects (core/task_state.h): a lost
//   race comes back as "nothing changed", never as a task in two states.
// - The CommitListener hears every change of a committed transaction, in commit order, before
//   any caller of that transaction is answered; a rolled-back change is never heard.
// Errors are Status values: kUnavailable when the store cannot take writes (disk full, I/O
// error, closed), kNotFound/kConflict where an operation says so, kInternal otherwise.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/status.h"
#include "core/task.h"

namespace ts {

struct StoreOptions {
  std::string path;       // SQLite: the database file; its folder must exist
  bool sync_full = true;  // durable on power loss (SQLite: synchronous=FULL), or not (NORMAL)
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
  // The QUEUED end of the change is a scheduled task waiting for its run_at, outside the
  // backlog: not counted, not dispatched. A scheduled task that falls due is a change QUEUED
  // (from_scheduled) → QUEUED (not to_scheduled): it enters the backlog then.
  bool from_scheduled = false;
  bool to_scheduled = false;
};
using CommitListener = std::function<void(const std::vector<TaskChange>&)>;

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
  std::vector<std::pair<std::string, std::string>> labels;  // every one must match
  std::optional<int64_t> before_seq;                        // cursor: only rows older than this
  int limit = 50;
};

// A DONE task's result as finish_done records it: its size and type, and its bytes when they
// are kept in the store (small answers) rather than in a file the caller put in place first.
struct ResultMeta {
  int64_t size = 0;
  std::string content_type;
  const std::string* inline_bytes = nullptr;  // not owned; read before finish_done returns
};

struct InsertOutcome {
  bool created = false;
  std::string task_id;  // the new task, or the first one with the same idempotency key
};

// The QUEUED tasks of a type counted by priority and by block of 2^block_bits seqs.
struct QueuedBlock {
  int priority = 0;
  int64_t block = 0;  // seq >> block_bits
  int64_t count = 0;
};

// Which FAILED or CANCELED tasks a bulk retry puts back (every set filter must match).
struct RetryFilter {
  std::optional<TaskState> status;  // FAILED or CANCELED; both when unset
  std::optional<std::string> type;
  std::vector<std::pair<std::string, std::string>> labels;
  int limit = 100;
};

// Asked on the writer thread, per task about to be retried: is there room in its pool's
// backlog? A true is a reservation the caller releases once the write returns.
using RetryAdmit = std::function<bool(const std::string& type)>;

struct RetryOutcome {
  std::vector<std::string> task_ids;  // retried, oldest first
  int skipped_backlog_full = 0;
};

struct RecoveryReport {
  int requeued = 0;
  int failed = 0;
};

struct PurgedTask {
  std::string task_id;
  TaskState status = TaskState::kDone;
};

// What a pool's workers do to the tasks they run.
class TaskTransitions {
 public:
  virtual ~TaskTransitions() = default;
  // QUEUED → RUNNING, counting an attempt. The task as it now is, or nullopt when it was no
  // longer QUEUED (canceled meanwhile). With a backend, the attempt started on it at now_ms;
  // with "" the task is claimed ahead of its call (a worker waits for a slot with it) and
  // note_started says when the call starts: until then recover_running gives the attempt back.
  virtual StatusOr<std::optional<Task>> mark_running(int64_t seq, const std::string& backend,
                                                     int64_t now_ms) = 0;
  // The call of attempt `attempt` of a claimed task started on `backend` at at_ms. Not waited
  // for: it commits with the next transaction, between the claim and the attempt's end.
  virtual void note_started(int64_t seq, int attempt, const std::string& backend,
                            int64_t at_ms) = 0;
  // RUNNING → QUEUED for a claim whose call never started (no slot came): the attempt is given
  // back and none is listed. False when it was no longer a claim of that attempt.
  virtual StatusOr<bool> release_claim(int64_t seq, int attempt, int64_t now_ms) = 0;
  // RUNNING → DONE with its result's size and type, and its bytes when inline (committed with
  // the DONE). False when it was no longer RUNNING.
  virtual StatusOr<bool> finish_done(int64_t seq, const Attempt& attempt,
                                     const ResultMeta& result) = 0;
  // RUNNING → FAILED. False when it was no longer RUNNING.
  virtual StatusOr<bool> finish_failed(int64_t seq, const Attempt& attempt,
                                       const std::string& error) = 0;
  // RUNNING → QUEUED, eligible again at next_attempt_at (nullopt: at once). With
  // give_back_attempt the attempt does not count (busy backend, shutdown).
  virtual StatusOr<bool> requeue(int64_t seq, const Attempt& attempt,
                                 std::optional<int64_t> next_attempt_at, bool give_back_attempt,
                                 const std::string& error) = 0;
};

// The QUEUED rows of one type (pool), in dispatch order: priority, then age.
class BacklogSource {
 public:
  virtual ~BacklogSource() = default;
  // Up to `limit` QUEUED tasks of `type` due by now_ms, best first, skipping `exclude`.
  virtual StatusOr<std::vector<ReadyRow>> fetch_ready(const std::string& type, size_t limit,
                                                      const std::unordered_set<int64_t>& exclude,
                                                      int64_t now_ms) = 0;
  // When the next delayed retry of `type` falls due, if one waits past now_ms.
  virtual StatusOr<std::optional<int64_t>> next_due(const std::string& type, int64_t now_ms) = 0;
  virtual StatusOr<std::vector<QueuedBlock>> queued_blocks(const std::string& type,
                                                           int block_bits) = 0;
  // QUEUED tasks of `type` and `priority` with from_seq <= seq < before_seq.
  virtual StatusOr<int64_t> count_queued_between(const std::string& type, int priority,
                                                 int64_t from_seq, int64_t before_seq) = 0;
  virtual StatusOr<std::optional<int64_t>> oldest_queued_created_at(const std::string& type) = 0;
};

// What the service does: submits, cancels and reads; recovery at start, release at shutdown.
class TaskLedger {
 public:
  virtual ~TaskLedger() = default;
  // Inserts a QUEUED task and sets task.seq. A repeated idempotency key creates nothing and
  // names the first task.
  virtual StatusOr<InsertOutcome> insert(Task& task) = 0;
  // insert without waiting: `done` is called once with the outcome, on the store's notifier
  // thread once the transaction is durable (or failed), or on this thread when the store is
  // closed. `done` must not block: every caller of the store waits behind it.
  virtual void insert_async(Task task,
                            std::function<void(const StatusOr<InsertOutcome>&)> done) = 0;
  // All or nothing: on failure of one, none is written and the Status names its index.
  virtual StatusOr<std::vector<InsertOutcome>> insert_batch(std::vector<Task>& tasks) = 0;
  // QUEUED|RUNNING → CANCELED. The state it had; kNotFound, or kConflict when final.
  virtual StatusOr<TaskState> cancel(const std::string& task_id, int64_t now_ms) = 0;
  // FAILED|CANCELED → QUEUED with a fresh attempt budget (its attempts stay listed); the state
  // it had. kNotFound; kConflict in any other state; kBacklogFull when admit says no.
  virtual StatusOr<TaskState> retry(const std::string& task_id, int64_t now_ms,
                                    const RetryAdmit& admit) = 0;
  // retry for up to filter.limit tasks that match, oldest first, in one transaction.
  virtual StatusOr<RetryOutcome> retry_matching(const RetryFilter& filter, int64_t now_ms,
                                                const RetryAdmit& admit) = 0;
  // Scheduled tasks whose run_at is by now_ms enter the backlog (up to `limit`, soonest
  // first); how many did.
  virtual StatusOr<int> promote_scheduled(int64_t now_ms, int limit) = 0;
  // The earliest run_at of a task still waiting for it.
  virtual StatusOr<std::optional<int64_t>> next_scheduled() = 0;

  // With details, also the attempts and webhook deliveries.
  virtual StatusOr<std::optional<Task>> get(const std::string& task_id, bool details) = 0;
  virtual StatusOr<std::optional<Task>> get_by_idempotency_key(const std::string& key) = 0;
  // Newest first.
  virtual StatusOr<std::vector<Task>> list(const ListQuery& query) = 0;
  // QUEUED tasks of `type` that run before one of this priority and seq, counted one by one:
  // for a type no pool serves (pools keep their own counts).
  virtual StatusOr<int64_t> queue_position(const std::string& type, int priority, int64_t seq) = 0;
  virtual StatusOr<std::map<TaskState, int64_t>> count_by_status() = 0;
  // The result bytes of a DONE task kept in the store; nullopt when its result is a file (or it
  // has none).
  virtual StatusOr<std::optional<std::string>> inline_result(int64_t seq) = 0;

  // At start: tasks left RUNNING by a crash have spent their attempt; they go back to QUEUED,
  // or to FAILED when no attempt is left.
  virtual StatusOr<RecoveryReport> recover_running(int64_t now_ms) = 0;
  // At shutdown: tasks still RUNNING go back to QUEUED without spending their attempt.
  virtual StatusOr<int> release_running(int64_t now_ms) = 0;
};

// The webhook deliveries of final tasks.
class WebhookOutbox {
 public:
  virtual ~WebhookOutbox() = default;
  // Tasks (seqs) whose delivery is due by now_ms, soonest first.
  virtual StatusOr<std::vector<int64_t>> webhooks_due(int64_t now_ms, int limit) = 0;
  virtual StatusOr<std::optional<int64_t>> next_webhook_due() = 0;
  // The task to deliver, with its earlier deliveries; nullopt when it is gone.
  virtual StatusOr<std::optional<Task>> delivery_of(int64_t seq) = 0;
  // Records one delivery attempt and the state it leaves (kPending with next_at: retried then).
  virtual Status record_webhook(int64_t seq, const WebhookDelivery& delivery,
                                WebhookState new_state, std::optional<int64_t> next_at) = 0;
};

// Deleting what is old, and finding what a file belongs to.
class RetentionStore {
 public:
  virtual ~RetentionStore() = default;
  // Deletes up to `limit` final tasks that finished before before_ms, oldest first, with their
  // attempts and deliveries; never one whose webhook is still pending. The tasks deleted: their
  // files are the caller's to remove.
  virtual StatusOr<std::vector<PurgedTask>> purge_final(int64_t before_ms, int limit) = 0;
  // Those of `task_ids` that name a task in the store (an invalid id names none).
  virtual StatusOr<std::unordered_set<std::string>> existing_task_ids(
      const std::vector<std::string>& task_ids) = 0;
};

class TaskStore : public TaskTransitions,
                  public BacklogSource,
                  public TaskLedger,
                  public WebhookOutbox,
                  public RetentionStore {
 public:
  // Set once, before the first write.
  virtual void set_commit_listener(CommitListener listener) = 0;
  // Finishes the writes already waiting and closes. Writes after close() fail kUnavailable.
  virtual void close() = 0;
  // A cheap write-path check for readiness: the writer runs and the store takes a transaction.
  virtual Status check_writable() = 0;
  // Bytes of heap the store's engine holds in this process (caches included), for /metrics.
  virtual int64_t memory_bytes() const = 0;
};

}  // namespace ts
