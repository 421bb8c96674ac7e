// SqliteTaskStore: reads of tasks by id, key and page, and the counts by state. Each on a
// connection of the reader pool; none waits for the writer.

#include "store/sqlite/sqlite_task_store.h"

namespace ts::sqlite {
namespace {

// Fills the attempts and webhook deliveries of `task`.
void read_details(Connection& conn, Task& task) {
  {
    StmtUse s(conn.cache.stmt(
        "SELECT number, backend, outcome, COALESCE(error, ''), started_at, duration_ms "
        "FROM attempts WHERE task_seq = ? ORDER BY started_at, number"));
    s->bind(1, task.seq);
    while (s->executeStep()) {
      task.attempts.push_back({s->getColumn(0).getInt(), s->getColumn(1).getString(),
                               s->getColumn(2).getString(), s->getColumn(3).getString(),
                               s->getColumn(4).getInt64(), s->getColumn(5).getInt64()});
    }
  }
  StmtUse s(
      conn.cache.stmt("SELECT number, at, status_code, COALESCE(error, '') FROM webhook_deliveries "
                      "WHERE task_seq = ? ORDER BY number"));
  s->bind(1, task.seq);
  while (s->executeStep()) {
    task.deliveries.push_back({s->getColumn(0).getInt(), s->getColumn(1).getInt64(),
                               s->getColumn(2).getInt(), s->getColumn(3).getString()});
  }
}

// Fills the labels of `task` (a range of task_labels' primary key).
void read_labels(Connection& conn, Task& task) {
  StmtUse s(conn.cache.stmt("SELECT key, value FROM task_labels WHERE task_seq = ?"));
  s->bind(1, task.seq);
  while (s->executeStep())
    task.labels.emplace(s->getColumn(0).getString(), s->getColumn(1).getString());
}

}  // namespace

// The one task whose `column` is `value`, with details if asked.
template <typename V>
static StatusOr<std::optional<Task>> read_one(Connection& conn, const char* column, const V& value,
                                              bool details) {
  std::optional<Task> task;
  {
    StmtUse s(conn.cache.stmt("SELECT " + task_columns() + " FROM tasks WHERE " + column + " = ?"));
    s->bind(1, value);
    if (!s->executeStep()) return task;
    task = read_task(*s);
  }
  read_labels(conn, *task);
  if (details) read_details(conn, *task);
  return task;
}

StatusOr<std::optional<Task>> SqliteTaskStore::get(const std::string& task_id, bool details) {
  return guarded([&]() -> StatusOr<std::optional<Task>> {
    auto conn = readers_->lease();
    return read_one(*conn, "task_id", task_id, details);
  });
}

StatusOr<std::optional<Task>> SqliteTaskStore::get_by_idempotency_key(const std::string& key) {
  return guarded([&]() -> StatusOr<std::optional<Task>> {
    auto conn = readers_->lease();
    return read_one(*conn, "idempotency_key", key, false);
  });
}

StatusOr<std::optional<Task>> SqliteTaskStore::delivery_of(int64_t seq) {
  return guarded([&]() -> StatusOr<std::optional<Task>> {
    auto conn = readers_->lease();
    return read_one(*conn, "seq", seq, true);
  });
}

StatusOr<std::vector<Task>> SqliteTaskStore::list(const ListQuery& q) {
  return guarded([&]() -> StatusOr<std::vector<Task>> {
    // One statement text per filter combination, so SQLite picks the right index for each.
    // With labels, the first one drives: task_labels_by_value (key, value, task_seq) walked
    // newest first from the cursor; the others are looked up by task_labels' primary key.
    std::string sql;
    if (q.labels.empty()) {
      sql = "SELECT " + task_columns() + " FROM tasks WHERE seq < ?1";
    } else {
      sql = "SELECT " + task_columns() +
            " FROM task_labels AS l0 INDEXED BY task_labels_by_value JOIN tasks ON tasks.seq = "
            "l0.task_seq WHERE l0.key = ?10 AND l0.value = ?11 AND l0.task_seq < ?1";
      for (size_t i = 1; i < q.labels.size(); ++i) {
        std::string k = std::to_string(10 + 2 * i), v = std::to_string(11 + 2 * i);
        sql += " AND EXISTS (SELECT 1 FROM task_labels WHERE task_seq = tasks.seq AND key = ?" + k +
               " AND value = ?" + v + ")";
      }
    }
    if (q.status) sql += " AND status = ?2";
    if (q.type) sql += " AND type = ?3";
    sql += q.labels.empty() ? " ORDER BY seq DESC LIMIT ?4" : " ORDER BY l0.task_seq DESC LIMIT ?4";
    auto conn = readers_->lease();
    std::vector<Task> out;
    {
      StmtUse s(conn->cache.stmt(sql));
      s->bind(1, q.before_seq.value_or(INT64_MAX));
      if (q.status) s->bind(2, std::string(to_string(*q.status)));
      if (q.type) s->bind(3, *q.type);
      s->bind(4, q.limit);
      for (size_t i = 0; i < q.labels.size(); ++i) {
        s->bind(static_cast<int>(10 + 2 * i), q.labels[i].first);
        s->bind(static_cast<int>(11 + 2 * i), q.labels[i].second);
      }
      while (s->executeStep()) out.push_back(read_task(*s));
    }
    for (Task& t : out) read_labels(*conn, t);
    return out;
  });
}

StatusOr<std::map<TaskState, int64_t>> SqliteTaskStore::count_by_status() {
  return guarded([&]() -> StatusOr<std::map<TaskState, int64_t>> {
    auto conn = readers_->lease();
    StmtUse s(conn->cache.stmt("SELECT status, COUNT(*) FROM tasks GROUP BY status"));
    std::map<TaskState, int64_t> out;
    while (s->executeStep()) {
      if (auto state = parse_task_state(s->getColumn(0).getString())) {
        out[*state] = s->getColumn(1).getInt64();
      }
    }
    return out;
  });
}

StatusOr<std::optional<std::string>> SqliteTaskStore::inline_result(int64_t seq) {
  return guarded([&]() -> StatusOr<std::optional<std::string>> {
    auto conn = readers_->lease();
    StmtUse s(conn->cache.stmt("SELECT content FROM results WHERE task_seq = ?"));
    s->bind(1, seq);
    if (!s->executeStep()) return std::optional<std::string>();
    const SQLite::Column c = s->getColumn(0);
    return std::optional<std::string>(
        std::string(static_cast<const char*>(c.getBlob()), static_cast<size_t>(c.getBytes())));
  });
}

}  // namespace ts::sqlite
