// SqliteTaskStore: the backlog of each pool in dispatch order, read through the partial index
// tasks_ready (type, priority DESC, seq) WHERE status = 'QUEUED' AND scheduled = 0. Scheduled
// tasks waiting for their run_at are not in it; the scheduler's promote_scheduled (here too)
// lets them in.

#include <SQLiteCpp/Transaction.h>

#include "store/sqlite/sqlite_task_store.h"

namespace ts::sqlite {
namespace {

// The predicate of tasks_ready, in its text, so the planner matches the index.
const std::string& queued() {
  static const std::string guard = sql_guard(TaskState::kQueued) + " AND scheduled = 0";
  return guard;
}

// With two terms in the index's predicate, SQLite 3.40 prices tasks_by_status (status, seq)
// below tasks_ready for a range of seqs, and then reads every row of the range to check type
// and priority: start-up with 1,000,000 queued went from ~0.3 s to 2.8 s. Named, it is used.
const char* const kFromReady = "FROM tasks INDEXED BY tasks_ready WHERE ";

// QUEUED tasks of `type` and `priority` with from_seq <= seq < before_seq: a range of
// tasks_ready.
int64_t count_queued_in(Connection& conn, const std::string& type, int priority, int64_t from_seq,
                        int64_t before_seq) {
  StmtUse s(conn.cache.stmt(std::string("SELECT COUNT(*) ") + kFromReady + queued() +
                            " AND type = ? AND priority = ? AND seq >= ? AND seq < ?"));
  s->bind(1, type);
  s->bind(2, priority);
  s->bind(3, from_seq);
  s->bind(4, before_seq);
  s->executeStep();
  return s->getColumn(0).getInt64();
}

}  // namespace

StatusOr<std::vector<ReadyRow>> SqliteTaskStore::fetch_ready(
    const std::string& type, size_t limit, const std::unordered_set<int64_t>& exclude,
    int64_t now_ms) {
  return guarded([&]() -> StatusOr<std::vector<ReadyRow>> {
    auto conn = readers_->lease();
    StmtUse s(
        conn->cache.stmt(std::string("SELECT seq, priority, task_id, COALESCE(backend, '') ") +
                         kFromReady + queued() +
                         " AND type = ?1 "
                         "AND (next_attempt_at IS NULL OR next_attempt_at <= ?2) "
                         "ORDER BY priority DESC, seq LIMIT ?3"));
    s->bind(1, type);
    s->bind(2, now_ms);
    s->bind(3, static_cast<int64_t>(limit + exclude.size()));
    std::vector<ReadyRow> out;
    while (out.size() < limit && s->executeStep()) {
      int64_t seq = s->getColumn(0).getInt64();
      if (exclude.count(seq)) continue;
      out.push_back({seq, s->getColumn(1).getInt(), s->getColumn(2).getString(),
                     s->getColumn(3).getString()});
    }
    return out;
  });
}

StatusOr<std::optional<int64_t>> SqliteTaskStore::next_due(const std::string& type,
                                                           int64_t now_ms) {
  return guarded([&]() -> StatusOr<std::optional<int64_t>> {
    auto conn = readers_->lease();
    StmtUse s(conn->cache.stmt("SELECT MIN(next_attempt_at) FROM tasks WHERE " + queued() +
                               " AND type = ?1 AND next_attempt_at IS NOT NULL "
                               "AND next_attempt_at > ?2"));
    s->bind(1, type);
    s->bind(2, now_ms);
    if (!s->executeStep()) return std::optional<int64_t>();
    return opt_i64(s->getColumn(0));
  });
}

StatusOr<int64_t> SqliteTaskStore::queue_position(const std::string& type, int priority,
                                                  int64_t seq) {
  return guarded([&]() -> StatusOr<int64_t> {
    auto conn = readers_->lease();
    // Two range counts on tasks_ready instead of one OR, which SQLite cannot range-scan.
    StmtUse s(conn->cache.stmt(std::string("SELECT (SELECT COUNT(*) ") + kFromReady + queued() +
                               " AND type = ?1 AND priority > ?2) + (SELECT COUNT(*) " +
                               kFromReady + queued() +
                               " AND type = ?1 AND priority = ?2 "
                               "AND seq < ?3)"));
    s->bind(1, type);
    s->bind(2, priority);
    s->bind(3, seq);
    s->executeStep();
    return s->getColumn(0).getInt64();
  });
}

StatusOr<std::vector<QueuedBlock>> SqliteTaskStore::queued_blocks(const std::string& type,
                                                                  int block_bits) {
  return guarded([&]() -> StatusOr<std::vector<QueuedBlock>> {
    auto conn = readers_->lease();
    // A skip-scan of tasks_ready: the next priority, the next seq from a block on, and a range
    // COUNT per non-empty block, all in one snapshot. A GROUP BY on `seq >> bits` visits the
    // same entries through a temporary b-tree, at three times the cost.
    SQLite::Transaction snapshot(conn->db);  // a read transaction; rolled back at the end
    StmtUse next_priority(conn->cache.stmt(std::string("SELECT priority ") + kFromReady + queued() +
                                           " AND type = ? AND priority < ? "
                                           "ORDER BY priority DESC LIMIT 1"));
    StmtUse next_seq(conn->cache.stmt(std::string("SELECT seq ") + kFromReady + queued() +
                                      " AND type = ? AND priority = ? AND seq >= ? "
                                      "ORDER BY seq LIMIT 1"));
    std::vector<QueuedBlock> out;
    int64_t below = INT64_MAX;
    for (;;) {
      next_priority->reset();
      next_priority->bind(1, type);
      next_priority->bind(2, below);
      if (!next_priority->executeStep()) break;
      int priority = next_priority->getColumn(0).getInt();
      below = priority;
      int64_t from = INT64_MIN;
      for (;;) {
        next_seq->reset();
        next_seq->bind(1, type);
        next_seq->bind(2, priority);
        next_seq->bind(3, from);
        if (!next_seq->executeStep()) break;
        int64_t block = next_seq->getColumn(0).getInt64() >> block_bits;
        int64_t first = block << block_bits, end = (block + 1) << block_bits;
        out.push_back({priority, block, count_queued_in(*conn, type, priority, first, end)});
        from = end;
      }
    }
    return out;
  });
}

StatusOr<int64_t> SqliteTaskStore::count_queued_between(const std::string& type, int priority,
                                                        int64_t from_seq, int64_t before_seq) {
  return guarded([&]() -> StatusOr<int64_t> {
    auto conn = readers_->lease();
    return count_queued_in(*conn, type, priority, from_seq, before_seq);
  });
}

StatusOr<std::optional<int64_t>> SqliteTaskStore::oldest_queued_created_at(
    const std::string& type) {
  return guarded([&]() -> StatusOr<std::optional<int64_t>> {
    auto conn = readers_->lease();
    StmtUse s(conn->cache.stmt(std::string("SELECT created_at ") + kFromReady + queued() +
                               " AND type = ? ORDER BY seq LIMIT 1"));
    s->bind(1, type);
    if (!s->executeStep()) return std::optional<int64_t>();
    return std::optional<int64_t>(s->getColumn(0).getInt64());
  });
}

StatusOr<int> SqliteTaskStore::promote_scheduled(int64_t now_ms, int limit) {
  int promoted = 0;
  Status st = write(false, [&](WriteContext& ctx) -> Status {
    promoted = 0;
    StmtUse s(ctx.stmt(
        "UPDATE tasks SET scheduled = 0 WHERE seq IN (SELECT seq FROM tasks WHERE scheduled = 1 "
        "AND run_at <= ?1 ORDER BY run_at LIMIT ?2) AND " +
        sql_guard(TaskState::kQueued) + returning_clause()));
    s->bind(1, now_ms);
    s->bind(2, limit);
    while (s->executeStep()) {
      TaskChange c = change_from_returning(*s, TaskState::kQueued, TaskState::kQueued, now_ms);
      c.from_scheduled = true;
      ctx.changes->push_back(std::move(c));
      ++promoted;
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return promoted;
}

StatusOr<std::optional<int64_t>> SqliteTaskStore::next_scheduled() {
  return guarded([&]() -> StatusOr<std::optional<int64_t>> {
    auto conn = readers_->lease();
    StmtUse s(conn->cache.stmt("SELECT MIN(run_at) FROM tasks WHERE scheduled = 1"));
    if (!s->executeStep()) return std::optional<int64_t>();
    return opt_i64(s->getColumn(0));
  });
}

}  // namespace ts::sqlite
