#include "store/sqlite/rows.h"

#include <sqlite3.h>

#include <type_traits>

#include "core/task_fields.h"

namespace ts::sqlite {

SQLite::Statement& StatementCache::stmt(const std::string& sql) {
  auto it = stmts_.find(sql);
  if (it == stmts_.end()) {
    it = stmts_.emplace(sql, std::make_unique<SQLite::Statement>(db_, sql)).first;
  }
  return *it->second;
}

Connection::Connection(const std::string& path)
    : db(path, SQLite::OPEN_READWRITE, 5000), cache(db) {}

std::optional<int64_t> opt_i64(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getInt64();
}

std::optional<std::string> opt_str(const SQLite::Column& c) {
  if (c.isNull()) return std::nullopt;
  return c.getString();
}

void bind_text_or_null(SQLite::Statement& s, int index, const std::string& v) {
  if (v.empty()) {
    s.bind(index);
  } else {
    s.bind(index, v);
  }
}

namespace {

std::string join_columns(bool inserted_only) {
  std::string out;
  for (const TaskField& f : task_fields()) {
    if (inserted_only && !f.inserted) continue;
    if (!out.empty()) out += ", ";
    out += f.column;
  }
  return out;
}

// One column into the member the field names.
void read_field(const TaskField& f, const SQLite::Column& c, Task& t) {
  std::visit(
      [&](auto member) {
        using M = std::remove_reference_t<decltype(t.*member)>;
        if constexpr (std::is_same_v<M, std::string>) {
          t.*member = c.isNull() ? std::string() : c.getString();
        } else if constexpr (std::is_same_v<M, std::optional<std::string>>) {
          t.*member = opt_str(c);
        } else if constexpr (std::is_same_v<M, int>) {
          t.*member = c.getInt();
        } else if constexpr (std::is_same_v<M, std::optional<int>>) {
          t.*member = c.isNull() ? std::nullopt : std::optional<int>(c.getInt());
        } else if constexpr (std::is_same_v<M, int64_t>) {
          t.*member = c.getInt64();
        } else if constexpr (std::is_same_v<M, std::optional<int64_t>>) {
          t.*member = opt_i64(c);
        } else if constexpr (std::is_same_v<M, TaskState>) {
          // A state this binary does not know is shown as FAILED rather than run.
          t.*member =
              parse_task_state(c.isNull() ? "" : c.getString()).value_or(TaskState::kFailed);
        } else if constexpr (std::is_same_v<M, WebhookState>) {
          t.*member = parse_webhook_state(c.isNull() ? "" : c.getString());
        }
      },
      f.member);
}

void bind_field(const TaskField& f, SQLite::Statement& s, int index, const Task& t) {
  std::visit(
      [&](auto member) {
        const auto& v = t.*member;
        using M = std::remove_cv_t<std::remove_reference_t<decltype(v)>>;
        if constexpr (std::is_same_v<M, TaskState>) {
          s.bind(index, std::string(to_string(v)));
        } else if constexpr (std::is_same_v<M, WebhookState>) {
          bind_text_or_null(s, index, std::string(to_string(v)));
        } else if constexpr (std::is_same_v<M, std::optional<std::string>> ||
                             std::is_same_v<M, std::optional<int>> ||
                             std::is_same_v<M, std::optional<int64_t>>) {
          bind_opt(s, index, v);
        } else {
          s.bind(index, v);
        }
      },
      f.member);
}

}  // namespace

const std::string& task_columns() {
  static const std::string columns = join_columns(false);
  return columns;
}

const std::string& inserted_columns() {
  static const std::string columns = join_columns(true);
  return columns;
}

int inserted_count() {
  static const int n = [] {
    int k = 0;
    for (const TaskField& f : task_fields()) k += f.inserted ? 1 : 0;
    return k;
  }();
  return n;
}

Task read_task(SQLite::Statement& s, int first) {
  Task t;
  int i = first;
  for (const TaskField& f : task_fields()) read_field(f, s.getColumn(i++), t);
  return t;
}

void bind_inserted(SQLite::Statement& s, int base, const Task& task) {
  int i = base;
  for (const TaskField& f : task_fields()) {
    if (f.inserted) bind_field(f, s, ++i, task);
  }
}

Status sql_error(const SQLite::Exception& e) {
  int code = e.getErrorCode();
  if (code == SQLITE_FULL || code == SQLITE_IOERR || code == SQLITE_READONLY ||
      code == SQLITE_BUSY || code == SQLITE_LOCKED || code == SQLITE_CANTOPEN) {
    return Status::Unavailable("store_unavailable",
                               std::string("the task store cannot take writes: ") + e.what());
  }
  return Status::Internal(std::string("store: ") + e.what());
}

const std::string& returning_clause() {
  static const std::string clause =
      " RETURNING seq, task_id, type, priority, attempt, backend, error, next_attempt_at, "
      "webhook_state = '" +
      std::string(to_string(WebhookState::kPending)) + "'";
  return clause;
}

TaskChange change_from_returning(SQLite::Statement& s, TaskState from, TaskState to,
                                 int64_t at_ms) {
  TaskChange c;
  c.seq = s.getColumn(0).getInt64();
  c.task_id = s.getColumn(1).getString();
  c.type = s.getColumn(2).getString();
  c.priority = s.getColumn(3).getInt();
  c.attempt = s.getColumn(4).getInt();
  c.backend = s.getColumn(5).isNull() ? "" : s.getColumn(5).getString();
  c.error = s.getColumn(6).isNull() ? "" : s.getColumn(6).getString();
  c.next_attempt_at = opt_i64(s.getColumn(7));
  c.webhook_pending = !s.getColumn(8).isNull() && s.getColumn(8).getInt() != 0;
  c.from = from;
  c.to = to;
  c.at_ms = at_ms;
  return c;
}

Task read_row(StatementCache& c, int64_t seq) {
  static const std::string sql = "SELECT " + task_columns() + " FROM tasks WHERE seq = ?";
  StmtUse s(c.stmt(sql));
  s->bind(1, seq);
  s->executeStep();
  return read_task(*s);
}

TaskChange change_of_row(StatementCache& c, int64_t seq, TaskState from, TaskState to,
                         int64_t at_ms) {
  // The columns of returning_clause(), in its order, for change_from_returning.
  static const std::string sql =
      "SELECT seq, task_id, type, priority, attempt, backend, error, next_attempt_at, "
      "webhook_state = '" +
      std::string(to_string(WebhookState::kPending)) + "' FROM tasks WHERE seq = ?";
  StmtUse s(c.stmt(sql));
  s->bind(1, seq);
  s->executeStep();
  return change_from_returning(*s, from, to, at_ms);
}

void insert_attempt(StatementCache& c, int64_t seq, const Attempt& a) {
  StmtUse s(c.stmt(
      "INSERT OR REPLACE INTO attempts (task_seq, number, backend, outcome, error, started_at, "
      "duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"));
  s->bind(1, seq);
  s->bind(2, a.number);
  s->bind(3, a.backend);
  s->bind(4, a.outcome);
  bind_text_or_null(*s, 5, a.error);
  s->bind(6, a.started_at);
  s->bind(7, a.duration_ms);
  s->exec();
}

}  // namespace ts::sqlite
