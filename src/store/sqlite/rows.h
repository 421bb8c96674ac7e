#pragma once
// Internal to the SQLite store: prepared statements per connection, the mapping between task
// rows and Task (driven by core/task_fields.h), and the SQL error policy. Nothing here is
// thread-safe: a connection and its statements have one user at a time.

#include <SQLiteCpp/Database.h>
#include <SQLiteCpp/Exception.h>
#include <SQLiteCpp/Statement.h>

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/status.h"
#include "core/task.h"
#include "store/task_store.h"

namespace ts::sqlite {

// A cached statement in use: reset and unbound when the scope ends, so no read transaction
// stays open (a stale snapshot would also pin the WAL and starve checkpoints).
class StmtUse {
 public:
  explicit StmtUse(SQLite::Statement& s) : s_(s) {}
  ~StmtUse() {
    s_.tryReset();
    s_.clearBindings();
  }
  SQLite::Statement* operator->() { return &s_; }
  SQLite::Statement& operator*() { return s_; }

 private:
  SQLite::Statement& s_;
};

// Prepared statements of one connection, keyed by SQL text.
class StatementCache {
 public:
  explicit StatementCache(SQLite::Database& db) : db_(db) {}
  SQLite::Database& db() { return db_; }
  SQLite::Statement& stmt(const std::string& sql);

 private:
  SQLite::Database& db_;
  std::unordered_map<std::string, std::unique_ptr<SQLite::Statement>> stmts_;
};

// A read connection with its statements.
struct Connection {
  explicit Connection(const std::string& path);
  SQLite::Database db;
  StatementCache cache;
};

// "seq, task_id, type, ...": every column of core/task_fields.h, in its order.
const std::string& task_columns();
// Reads a row selected with task_columns() (from column `first` on).
Task read_task(SQLite::Statement& s, int first = 0);
// The columns a new task's insert writes, and their number.
const std::string& inserted_columns();
int inserted_count();
// Binds the inserted columns of `task` to parameters base+1 ... base+inserted_count().
void bind_inserted(SQLite::Statement& s, int base, const Task& task);

std::optional<int64_t> opt_i64(const SQLite::Column& c);
std::optional<std::string> opt_str(const SQLite::Column& c);
template <typename T>
void bind_opt(SQLite::Statement& s, int index, const std::optional<T>& v) {
  if (v) {
    s.bind(index, *v);
  } else {
    s.bind(index);
  }
}
// An empty string binds as NULL.
void bind_text_or_null(SQLite::Statement& s, int index, const std::string& v);

// What a failed statement means for the caller: kUnavailable when the file cannot take writes
// (full, I/O error, read-only, locked), kInternal otherwise.
Status sql_error(const SQLite::Exception& e);

// Runs f, turning the exceptions of SQLiteCpp (and others) into a Status.
template <typename F>
auto guarded(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const SQLite::Exception& e) {
    return sql_error(e);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("store: ") + e.what());
  }
}

// The tail of a state change's UPDATE: RETURNING what change_from_returning reads (its columns
// 0-8; a statement may return more after them).
const std::string& returning_clause();
TaskChange change_from_returning(SQLite::Statement& s, TaskState from, TaskState to, int64_t at_ms);

// The row `seq` as it is now (a changed row, read back instead of an UPDATE ... RETURNING,
// which SQLite answers through a temporary table that costs more than the read).
Task read_row(StatementCache& c, int64_t seq);
// The change a state change of row `seq` made, read back the same way.
TaskChange change_of_row(StatementCache& c, int64_t seq, TaskState from, TaskState to,
                         int64_t at_ms);

// Records one attempt of a task.
void insert_attempt(StatementCache& c, int64_t seq, const Attempt& a);

}  // namespace ts::sqlite
