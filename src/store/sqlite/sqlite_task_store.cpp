#include "store/sqlite/sqlite_task_store.h"

#include <SQLiteCpp/Exception.h>
#include <sqlite3.h>

#include "store/sqlite/migrate.h"

namespace ts::sqlite {

// ---- connections ----

SqliteTaskStore::ReaderPool::Lease SqliteTaskStore::ReaderPool::lease() {
  {
    MutexLock lock(mu_);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return Lease(*this, std::move(c));
    }
  }
  auto c = std::make_unique<Connection>(path_);
  c->db.exec("PRAGMA query_only = 1");
  return Lease(*this, std::move(c));
}

void SqliteTaskStore::ReaderPool::give_back(std::unique_ptr<Connection> c) {
  MutexLock lock(mu_);
  if (static_cast<int>(idle_.size()) < keep_) idle_.push_back(std::move(c));
}

namespace {

// The write connection, as the server and `taskserver migrate` open it.
std::unique_ptr<SQLite::Database> open_write_connection(const std::string& path) {
  auto db =
      std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, 5000);
  db->exec("PRAGMA journal_mode = WAL");
  return db;
}

}  // namespace

// ---- lifecycle ----

SqliteTaskStore::SqliteTaskStore(StoreOptions options, const Clock& clock)
    : options_(std::move(options)), clock_(clock) {}

StatusOr<std::unique_ptr<SqliteTaskStore>> SqliteTaskStore::open(const StoreOptions& options,
                                                                 const Clock& clock) {
  std::unique_ptr<SqliteTaskStore> store(new SqliteTaskStore(options, clock));
  Status st = store->start();
  if (!st.ok()) return st;
  return store;
}

StatusOr<MigrationReport> SqliteTaskStore::migrate(const std::string& path) {
  auto migrations = builtin_migrations("sqlite");
  if (!migrations.ok()) return migrations.status();
  return guarded([&]() -> StatusOr<MigrationReport> {
    auto db = open_write_connection(path);
    return apply_migrations(*db, *migrations);
  });
}

Status SqliteTaskStore::start() {
  auto migrations = builtin_migrations("sqlite");
  if (!migrations.ok()) return migrations.status();
  Status st = guarded([&]() -> Status {
    write_db_ = open_write_connection(options_.path);
    write_db_->exec(options_.sync_full ? "PRAGMA synchronous = FULL"
                                       : "PRAGMA synchronous = NORMAL");
    // The writer touches the right edge of six b-trees per insert; with SQLite's 2 MB default
    // their pages fall out of the cache once the table passes a million rows and inserts slow
    // down by a third. 64 MiB is a fixed bound, not one that grows with the backlog.
    write_db_->exec("PRAGMA cache_size = -65536");
    auto report = apply_migrations(*write_db_, *migrations);
    if (!report.ok()) return report.status();
    return Status::Ok();
  });
  if (!st.ok()) {
    write_db_.reset();
    return st;
  }
  write_ctx_ = std::make_unique<WriteContext>(*write_db_);
  begin_ = std::make_unique<SQLite::Statement>(*write_db_, "BEGIN IMMEDIATE");
  commit_ = std::make_unique<SQLite::Statement>(*write_db_, "COMMIT");
  readers_ = std::make_unique<ReaderPool>(options_.path, options_.read_connections);
  committer_ = std::make_unique<GroupCommitter>(
      GroupCommitter::Options{options_.max_batch, "ts-writer", "ts-notifier"},
      static_cast<BatchExecutor&>(*this));
  committer_->start();
  return Status::Ok();
}

SqliteTaskStore::~SqliteTaskStore() { close(); }

void SqliteTaskStore::set_commit_listener(CommitListener listener) {
  committer_->set_listener(std::move(listener));
}

void SqliteTaskStore::close() {
  if (committer_) committer_->close();
  begin_.reset();
  commit_.reset();
  write_ctx_.reset();
  readers_.reset();
  if (write_db_) {
    try {
      write_db_->exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch (const SQLite::Exception&) {
      // A reader of another process may hold the WAL; the next start checkpoints instead.
    }
    write_db_.reset();
  }
}

int64_t SqliteTaskStore::memory_bytes() const { return sqlite3_memory_used(); }

Status SqliteTaskStore::check_writable() {
  return write(false, [](WriteContext& ctx) -> Status {
    StmtUse s(ctx.stmt("PRAGMA user_version"));
    s->executeStep();
    return Status::Ok();
  });
}

// ---- the batch transaction ----

Status SqliteTaskStore::write(bool savepoint, const std::function<Status(WriteContext&)>& fn) {
  return committer_->write(savepoint, [this, &fn] { return fn(*write_ctx_); });
}

// One transaction for the batch. The new tasks go first, in their order of arrival, in
// multi-row INSERTs; the other writes follow in theirs. (Nothing in one batch can depend on a
// new task of the same batch: its caller has no id before the commit.) The multi-row INSERTs
// say OR ROLLBACK, which spares SQLite a statement journal (a copy of every page each statement
// touches, a tenth of the writer's time) at the price of undoing the whole transaction when one
// fails; being first, they have nothing else to undo, and the inserts are redone row by row so
// that only the row at fault fails. A repeated idempotency key is such a failure (the UNIQUE
// index): in the redo, insert_one finds the first task instead, also one inserted earlier in the
// same batch.
Status SqliteTaskStore::commit_batch(const std::vector<WriteOp*>& batch,
                                     std::vector<TaskChange>* changes) {
  write_ctx_->changes = changes;
  std::vector<WriteOp*> inserts, others;
  for (WriteOp* op : batch) (op->plain_insert ? inserts : others).push_back(op);
  // After SQLITE_FULL, IOERR or NOMEM, SQLite may have undone the whole transaction itself; the
  // writes after it would then commit one by one while the batch is reported failed. Such an
  // error fails the batch instead of only its op.
  auto op_failed = [&](const SQLite::Exception& e) {
    if (sqlite3_get_autocommit(write_db_->getHandle())) throw;
    return sql_error(e);
  };
  try {
    begin_->exec();
    begin_->reset();
    if (!inserts.empty() && !insert_run(inserts)) {
      write_db_->tryExec("ROLLBACK");
      changes->clear();
      begin_->exec();
      begin_->reset();
      for (WriteOp* op : inserts) {
        try {
          op->outcome = insert_one(*write_ctx_, *changes, *op->plain_insert);
          op->result = Status::Ok();
        } catch (const SQLite::Exception& e) {
          op->result = op_failed(e);
        }
      }
    }
    for (WriteOp* op : others) {
      // A rolled-back op changed nothing: the listener must not hear of what it had recorded.
      size_t changes_before = changes->size();
      if (op->savepoint) write_db_->exec("SAVEPOINT op");
      try {
        op->result = op->fn();
      } catch (const SQLite::Exception& e) {
        op->result = op_failed(e);
      } catch (const std::exception& e) {
        op->result = Status::Internal(std::string("store: ") + e.what());
      }
      if (op->savepoint) {
        if (!op->result.ok()) {
          write_db_->exec("ROLLBACK TO op");
          changes->resize(changes_before);
        }
        write_db_->exec("RELEASE op");
      }
    }
    commit_->exec();
    commit_->reset();
  } catch (const SQLite::Exception& e) {
    begin_->tryReset();
    commit_->tryReset();
    write_db_->tryExec("ROLLBACK");
    return sql_error(e);
  }
  return Status::Ok();
}

}  // namespace ts::sqlite
