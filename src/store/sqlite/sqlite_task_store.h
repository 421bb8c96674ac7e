#pragma once
// SqliteTaskStore: the TaskStore in one SQLite file in WAL mode, the embedded default.
//
// Thread-safe. Every write goes through the GroupCommitter: its writer thread owns the write
// connection and runs each batch through commit_batch() below in one transaction. Reads use a
// small pool of their own connections and never wait for the writer.
//
// The implementation is split by concern: this file's .cpp holds the lifecycle and the batch
// transaction; inserts.cpp, transitions.cpp, backlog.cpp, reads.cpp, webhooks.cpp and
// retention.cpp hold the operations of each interface; rows.{h,cpp} the row mapping;
// migrate.{h,cpp} the schema.

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Statement.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/mutex.h"
#include "store/group_commit.h"
#include "store/migrations.h"
#include "store/sqlite/rows.h"
#include "store/task_store.h"

namespace ts::sqlite {

class SqliteTaskStore final : public TaskStore, private BatchExecutor {
 public:
  // Opens (creating if missing) the database, applies the built-in migrations, starts the writer.
  static StatusOr<std::unique_ptr<SqliteTaskStore>> open(const StoreOptions& options,
                                                         const Clock& clock);
  // Applies the built-in migrations to the file and closes it, without serving.
  static StatusOr<MigrationReport> migrate(const std::string& path);
  ~SqliteTaskStore() override;

  // TaskStore
  void set_commit_listener(CommitListener listener) override;
  void close() override;
  Status check_writable() override;
  int64_t memory_bytes() const override;

  // TaskTransitions (transitions.cpp)
  StatusOr<std::optional<Task>> mark_running(int64_t seq, const std::string& backend,
                                             int64_t now_ms) override;
  void note_started(int64_t seq, int attempt, const std::string& backend, int64_t at_ms) override;
  StatusOr<bool> release_claim(int64_t seq, int attempt, int64_t now_ms) override;
  StatusOr<bool> finish_done(int64_t seq, const Attempt& attempt,
                             const ResultMeta& result) override;
  StatusOr<bool> finish_failed(int64_t seq, const Attempt& attempt,
                               const std::string& error) override;
  StatusOr<bool> requeue(int64_t seq, const Attempt& attempt,
                         std::optional<int64_t> next_attempt_at, bool give_back_attempt,
                         const std::string& error) override;

  // BacklogSource (backlog.cpp)
  StatusOr<std::vector<ReadyRow>> fetch_ready(const std::string& type, size_t limit,
                                              const std::unordered_set<int64_t>& exclude,
                                              int64_t now_ms) override;
  StatusOr<std::optional<int64_t>> next_due(const std::string& type, int64_t now_ms) override;
  StatusOr<std::vector<QueuedBlock>> queued_blocks(const std::string& type,
                                                   int block_bits) override;
  StatusOr<int64_t> count_queued_between(const std::string& type, int priority, int64_t from_seq,
                                         int64_t before_seq) override;
  StatusOr<std::optional<int64_t>> oldest_queued_created_at(const std::string& type) override;

  // TaskLedger (inserts.cpp, transitions.cpp, reads.cpp)
  StatusOr<InsertOutcome> insert(Task& task) override;
  void insert_async(Task task, std::function<void(const StatusOr<InsertOutcome>&)> done) override;
  StatusOr<std::vector<InsertOutcome>> insert_batch(std::vector<Task>& tasks) override;
  StatusOr<TaskState> cancel(const std::string& task_id, int64_t now_ms) override;
  StatusOr<TaskState> retry(const std::string& task_id, int64_t now_ms,
                            const RetryAdmit& admit) override;
  StatusOr<RetryOutcome> retry_matching(const RetryFilter& filter, int64_t now_ms,
                                        const RetryAdmit& admit) override;
  // backlog.cpp
  StatusOr<int> promote_scheduled(int64_t now_ms, int limit) override;
  StatusOr<std::optional<int64_t>> next_scheduled() override;
  StatusOr<std::optional<Task>> get(const std::string& task_id, bool details) override;
  StatusOr<std::optional<Task>> get_by_idempotency_key(const std::string& key) override;
  StatusOr<std::vector<Task>> list(const ListQuery& query) override;
  StatusOr<int64_t> queue_position(const std::string& type, int priority, int64_t seq) override;
  StatusOr<std::map<TaskState, int64_t>> count_by_status() override;
  StatusOr<std::optional<std::string>> inline_result(int64_t seq) override;
  StatusOr<RecoveryReport> recover_running(int64_t now_ms) override;
  StatusOr<int> release_running(int64_t now_ms) override;

  // WebhookOutbox (webhooks.cpp)
  StatusOr<std::vector<int64_t>> webhooks_due(int64_t now_ms, int limit) override;
  StatusOr<std::optional<int64_t>> next_webhook_due() override;
  StatusOr<std::optional<Task>> delivery_of(int64_t seq) override;
  Status record_webhook(int64_t seq, const WebhookDelivery& delivery, WebhookState new_state,
                        std::optional<int64_t> next_at) override;

  // RetentionStore (retention.cpp)
  StatusOr<std::vector<PurgedTask>> purge_final(int64_t before_ms, int limit) override;
  StatusOr<std::unordered_set<std::string>> existing_task_ids(
      const std::vector<std::string>& task_ids) override;

 private:
  // The writer's connection and statements, with the changes of the transaction under way.
  struct WriteContext : StatementCache {
    using StatementCache::StatementCache;
    std::vector<TaskChange>* changes = nullptr;  // set by commit_batch for its transaction
  };

  // Read connections, kept up to StoreOptions::read_connections.
  class ReaderPool {
   public:
    ReaderPool(std::string path, int keep) : path_(std::move(path)), keep_(keep) {}
    class Lease {
     public:
      Lease(ReaderPool& pool, std::unique_ptr<Connection> c) : pool_(pool), c_(std::move(c)) {}
      ~Lease() { pool_.give_back(std::move(c_)); }
      Connection& operator*() { return *c_; }
      Connection* operator->() { return c_.get(); }

     private:
      ReaderPool& pool_;
      std::unique_ptr<Connection> c_;
    };
    Lease lease();

   private:
    void give_back(std::unique_ptr<Connection> c);
    const std::string path_;
    const int keep_;
    Mutex mu_;
    std::vector<std::unique_ptr<Connection>> idle_ GUARDED_BY(mu_);
  };

  SqliteTaskStore(StoreOptions options, const Clock& clock);
  Status start();

  // BatchExecutor: the batch's transaction (see the comment in the .cpp).
  Status commit_batch(const std::vector<WriteOp*>& batch,
                      std::vector<TaskChange>* changes) override;
  // On the writer thread: inserts the plain-insert ops, many rows per statement. False when a
  // statement failed: that undid the whole transaction.
  bool insert_run(const std::vector<WriteOp*>& ops);
  // Runs fn on the writer thread inside a batch transaction, blocking until it is committed.
  Status write(bool savepoint, const std::function<Status(WriteContext&)>& fn);
  // RUNNING → `to` by one guarded UPDATE (`set_clause` binds ?2.. through `bind`; ?1 is the
  // time, ?9 the row), recording the attempt, then `also` in the same savepoint. False when the
  // task was no longer RUNNING.
  StatusOr<bool> leave_running(int64_t seq, const Attempt& attempt, TaskState to,
                               const std::string& set_clause,
                               const std::function<void(SQLite::Statement&)>& bind,
                               const std::function<void(WriteContext&)>& also = nullptr);

  StoreOptions options_;
  const Clock& clock_;
  std::unique_ptr<SQLite::Database> write_db_;  // the writer thread's only
  std::unique_ptr<WriteContext> write_ctx_;     // likewise
  std::unique_ptr<SQLite::Statement> begin_;    // likewise: BEGIN IMMEDIATE, prepared once
  std::unique_ptr<SQLite::Statement> commit_;   // likewise: COMMIT
  std::unique_ptr<ReaderPool> readers_;
  std::unique_ptr<GroupCommitter> committer_;
};

// On the writer thread, inside a transaction: inserts `task` unless its idempotency key is
// taken, recording the change. Throws SQLite::Exception. (inserts.cpp)
InsertOutcome insert_one(StatementCache& c, std::vector<TaskChange>& changes, Task& task);

}  // namespace ts::sqlite
