// SqliteTaskStore: every change of a task's state, each one UPDATE guarded by the state it
// expects (core/task_state.h), with the change recorded for the commit listener.

#include <algorithm>
#include <cassert>

#include "store/sqlite/sqlite_task_store.h"

namespace ts::sqlite {
namespace {

std::string lit(TaskState s) { return sql_literal(s); }

// A final state: the webhook, if any, falls due now (?1).
const std::string& webhook_due_now() {
  static const std::string clause =
      "webhook_state = CASE WHEN webhook_url IS NULL THEN NULL ELSE '" +
      std::string(to_string(WebhookState::kPending)) +
      "' END, webhook_next_at = CASE WHEN webhook_url IS NULL THEN NULL ELSE ?1 END";
  return clause;
}

}  // namespace

StatusOr<std::optional<Task>> SqliteTaskStore::mark_running(int64_t seq, const std::string& backend,
                                                            int64_t now_ms) {
  static_assert(can_transition(TaskState::kQueued, TaskState::kRunning));
  std::optional<Task> task;
  Status st = write(false, [&](WriteContext& ctx) -> Status {
    // A claim (no backend yet) leaves started_at unset and the backend of the last attempt.
    static const std::string sql =
        "UPDATE tasks SET status = " + lit(TaskState::kRunning) +
        ", attempt = attempt + 1, started_at = ?1, backend = COALESCE(?2, backend), "
        "next_attempt_at = NULL WHERE seq = ?3 AND " +
        sql_guard(TaskState::kQueued) + " AND scheduled = 0";
    {
      StmtUse s(ctx.stmt(sql));
      if (backend.empty()) {
        s->bind(1);
        s->bind(2);
      } else {
        s->bind(1, now_ms);
        s->bind(2, backend);
      }
      s->bind(3, seq);
      s->exec();
      if (ctx.db().getChanges() == 0) return Status::Ok();
    }
    task = read_row(ctx, seq);
    TaskChange c;
    c.seq = task->seq;
    c.task_id = task->task_id;
    c.type = task->type;
    c.priority = task->priority;
    c.from = TaskState::kQueued;
    c.to = TaskState::kRunning;
    c.attempt = task->attempt;
    c.at_ms = now_ms;
    c.backend = backend;
    ctx.changes->push_back(std::move(c));
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return task;
}

void SqliteTaskStore::note_started(int64_t seq, int attempt, const std::string& backend,
                                   int64_t at_ms) {
  committer_->write_async(
      [this, seq, attempt, backend, at_ms]() -> Status {
        static const std::string sql =
            "UPDATE tasks SET started_at = ?, backend = ? WHERE seq = ? "
            "AND attempt = ? AND " +
            sql_guard(TaskState::kRunning);
        StmtUse s(write_ctx_->stmt(sql));
        s->bind(1, at_ms);
        s->bind(2, backend);
        s->bind(3, seq);
        s->bind(4, attempt);
        s->exec();
        return Status::Ok();
      },
      /*lazy=*/true);
}

StatusOr<bool> SqliteTaskStore::release_claim(int64_t seq, int attempt, int64_t now_ms) {
  static_assert(can_transition(TaskState::kRunning, TaskState::kQueued));
  bool changed = false;
  Status st = write(false, [&](WriteContext& ctx) -> Status {
    static const std::string sql =
        "UPDATE tasks SET status = " + lit(TaskState::kQueued) +
        ", attempt = attempt - 1, error = NULL WHERE seq = ?1 AND attempt = ?2 AND "
        "started_at IS NULL AND " +
        sql_guard(TaskState::kRunning) + returning_clause();
    StmtUse s(ctx.stmt(sql));
    s->bind(1, seq);
    s->bind(2, attempt);
    if (!s->executeStep()) return Status::Ok();
    ctx.changes->push_back(
        change_from_returning(*s, TaskState::kRunning, TaskState::kQueued, now_ms));
    changed = true;
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return changed;
}

StatusOr<bool> SqliteTaskStore::leave_running(int64_t seq, const Attempt& attempt, TaskState to,
                                              const std::string& set_clause,
                                              const std::function<void(SQLite::Statement&)>& bind,
                                              const std::function<void(WriteContext&)>& also) {
  assert(can_transition(TaskState::kRunning, to));
  bool changed = false;
  Status st = write(true, [&](WriteContext& ctx) -> Status {
    int64_t now = attempt.started_at + attempt.duration_ms;
    {
      // ?1 is the time of the change, ?9 the row, ?8 the attempt (a late end of an attempt
      // before a cancel and a retry does not touch the attempt that runs now); the SET clause
      // binds the rest.
      StmtUse s(ctx.stmt("UPDATE tasks SET status = " + lit(to) + ", " + set_clause +
                         " WHERE seq = ?9 AND attempt = ?8 AND " + sql_guard(TaskState::kRunning)));
      s->bind(1, now);
      s->bind(8, attempt.number);
      s->bind(9, seq);
      bind(*s);
      s->exec();
      if (ctx.db().getChanges() == 0) return Status::Ok();
    }
    ctx.changes->push_back(change_of_row(ctx, seq, TaskState::kRunning, to, now));
    changed = true;
    insert_attempt(ctx, seq, attempt);
    if (also) also(ctx);
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return changed;
}

StatusOr<bool> SqliteTaskStore::finish_done(int64_t seq, const Attempt& attempt,
                                            const ResultMeta& result) {
  return leave_running(
      seq, attempt, TaskState::kDone,
      "finished_at = ?1, result_size = ?2, result_type = ?3, error = NULL, " + webhook_due_now(),
      [&](SQLite::Statement& s) {
        s.bind(2, result.size);
        s.bind(3, result.content_type);
      },
      [&](WriteContext& ctx) {
        if (!result.inline_bytes) return;
        StmtUse s(ctx.stmt("INSERT OR REPLACE INTO results (task_seq, content) VALUES (?, ?)"));
        s->bind(1, seq);
        s->bind(2, result.inline_bytes->data(), static_cast<int>(result.inline_bytes->size()));
        s->exec();
      });
}

StatusOr<bool> SqliteTaskStore::finish_failed(int64_t seq, const Attempt& attempt,
                                              const std::string& error) {
  return leave_running(seq, attempt, TaskState::kFailed,
                       "finished_at = ?1, error = ?2, " + webhook_due_now(),
                       [&](SQLite::Statement& s) { s.bind(2, error); });
}

StatusOr<bool> SqliteTaskStore::requeue(int64_t seq, const Attempt& attempt,
                                        std::optional<int64_t> next_attempt_at,
                                        bool give_back_attempt, const std::string& error) {
  return leave_running(seq, attempt, TaskState::kQueued,
                       "attempt = attempt - ?2, next_attempt_at = ?3, error = ?4",
                       [&](SQLite::Statement& s) {
                         s.bind(2, give_back_attempt ? 1 : 0);
                         bind_opt(s, 3, next_attempt_at);
                         bind_text_or_null(s, 4, error);
                       });
}

StatusOr<TaskState> SqliteTaskStore::cancel(const std::string& task_id, int64_t now_ms) {
  TaskState before = TaskState::kQueued;
  Status st = write(false, [&](WriteContext& ctx) -> Status {
    int64_t seq = 0;
    bool scheduled = false;
    {
      StmtUse s(ctx.stmt("SELECT seq, status, scheduled FROM tasks WHERE task_id = ?"));
      s->bind(1, task_id);
      if (!s->executeStep()) return Status::NotFound("no task with id " + task_id);
      seq = s->getColumn(0).getInt64();
      before = parse_task_state(s->getColumn(1).getString()).value_or(TaskState::kFailed);
      scheduled = s->getColumn(2).getInt() != 0;
    }
    if (!can_transition(before, TaskState::kCanceled)) {
      return Status::Conflict("task_final", "task " + task_id + " is already " +
                                                std::string(to_string(before)) +
                                                " and cannot be canceled");
    }
    StmtUse s(ctx.stmt("UPDATE tasks SET status = " + lit(TaskState::kCanceled) +
                       ", finished_at = ?1, error = 'canceled by request', "
                       "next_attempt_at = NULL, scheduled = 0, " +
                       webhook_due_now() + " WHERE seq = ?2 AND status = ?3" + returning_clause()));
    s->bind(1, now_ms);
    s->bind(2, seq);
    s->bind(3, std::string(to_string(before)));
    if (!s->executeStep()) return Status::Internal("cancel lost a race inside its transaction");
    TaskChange c = change_from_returning(*s, before, TaskState::kCanceled, now_ms);
    c.from_scheduled = scheduled;
    ctx.changes->push_back(std::move(c));
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return before;
}

namespace {

// FAILED|CANCELED → QUEUED for row `seq` in state `from`, with a fresh budget: the attempts
// spent so far become the base the budget counts from. A task whose run_at is still ahead (a
// scheduled task canceled before its time) waits for it again. The change, or nullopt when the
// row was no longer in `from`.
std::optional<TaskChange> retry_row(StatementCache& c, int64_t seq, TaskState from,
                                    int64_t now_ms) {
  assert(can_transition(from, TaskState::kQueued) && can_retry(from));
  StmtUse s(c.stmt("UPDATE tasks SET status = " + sql_literal(TaskState::kQueued) +
                   ", attempt_base = attempt, retries = retries + 1, finished_at = NULL, "
                   "next_attempt_at = NULL, scheduled = COALESCE(run_at > ?3, 0), error = NULL, "
                   "result_size = NULL, result_type = NULL, webhook_state = NULL, "
                   "webhook_next_at = NULL WHERE seq = ?1 AND status = ?2" +
                   returning_clause() + ", scheduled, run_at"));
  s->bind(1, seq);
  s->bind(2, std::string(to_string(from)));
  s->bind(3, now_ms);
  if (!s->executeStep()) return std::nullopt;
  TaskChange change = change_from_returning(*s, from, TaskState::kQueued, now_ms);
  change.to_scheduled = s->getColumn(9).getInt() != 0;
  if (change.to_scheduled) change.next_attempt_at = opt_i64(s->getColumn(10));
  return change;
}

}  // namespace

StatusOr<TaskState> SqliteTaskStore::retry(const std::string& task_id, int64_t now_ms,
                                           const RetryAdmit& admit) {
  static_assert(can_transition(TaskState::kFailed, TaskState::kQueued) &&
                can_transition(TaskState::kCanceled, TaskState::kQueued));
  TaskState before = TaskState::kQueued;
  Status st = write(false, [&](WriteContext& ctx) -> Status {
    int64_t seq = 0;
    std::string type;
    {
      StmtUse s(ctx.stmt("SELECT seq, status, type FROM tasks WHERE task_id = ?"));
      s->bind(1, task_id);
      if (!s->executeStep()) return Status::NotFound("no task with id " + task_id);
      seq = s->getColumn(0).getInt64();
      before = parse_task_state(s->getColumn(1).getString()).value_or(TaskState::kDone);
      type = s->getColumn(2).getString();
    }
    if (!can_retry(before)) {
      return Status::Conflict("not_retryable", "task " + task_id + " is " +
                                                   std::string(to_string(before)) +
                                                   "; only FAILED or CANCELED tasks are retried");
    }
    if (admit && !admit(type)) {
      Status full(Code::kBacklogFull, "backlog_full",
                  "the " + type + " pool's backlog is full; retry later");
      full.with_retry_after(5);
      return full;
    }
    auto change = retry_row(ctx, seq, before, now_ms);
    if (!change) return Status::Internal("retry lost a race inside its transaction");
    ctx.changes->push_back(std::move(*change));
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return before;
}

StatusOr<RetryOutcome> SqliteTaskStore::retry_matching(const RetryFilter& f, int64_t now_ms,
                                                       const RetryAdmit& admit) {
  RetryOutcome out;
  Status st = write(true, [&](WriteContext& ctx) -> Status {
    out = RetryOutcome{};
    // Candidates oldest first, through tasks_by_status (status, seq) for each final state that
    // can be retried; labels through task_labels' primary key.
    std::vector<TaskState> states;
    if (f.status) {
      states.push_back(*f.status);
    } else {
      states = {TaskState::kFailed, TaskState::kCanceled};
    }
    struct Row {
      int64_t seq;
      TaskState from;
      std::string task_id, type;
    };
    std::vector<Row> rows;
    std::string sql = "SELECT seq, task_id, type FROM tasks WHERE status = ?1";
    if (f.type) sql += " AND type = ?2";
    for (size_t i = 0; i < f.labels.size(); ++i) {
      std::string k = std::to_string(10 + 2 * i), v = std::to_string(11 + 2 * i);
      sql += " AND EXISTS (SELECT 1 FROM task_labels WHERE task_seq = tasks.seq AND key = ?" + k +
             " AND value = ?" + v + ")";
    }
    sql += " ORDER BY seq LIMIT ?3";
    for (TaskState from : states) {
      if (!can_retry(from)) continue;
      StmtUse s(ctx.stmt(sql));
      s->bind(1, std::string(to_string(from)));
      if (f.type) s->bind(2, *f.type);
      s->bind(3, static_cast<int64_t>(f.limit));
      for (size_t i = 0; i < f.labels.size(); ++i) {
        s->bind(static_cast<int>(10 + 2 * i), f.labels[i].first);
        s->bind(static_cast<int>(11 + 2 * i), f.labels[i].second);
      }
      while (s->executeStep()) {
        rows.push_back({s->getColumn(0).getInt64(), from, s->getColumn(1).getString(),
                        s->getColumn(2).getString()});
      }
    }
    std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.seq < b.seq; });
    if (rows.size() > static_cast<size_t>(f.limit)) rows.resize(static_cast<size_t>(f.limit));
    for (const Row& r : rows) {
      if (admit && !admit(r.type)) {
        ++out.skipped_backlog_full;
        continue;
      }
      auto change = retry_row(ctx, r.seq, r.from, now_ms);
      if (!change) continue;
      ctx.changes->push_back(std::move(*change));
      out.task_ids.push_back(r.task_id);
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return out;
}

StatusOr<RecoveryReport> SqliteTaskStore::recover_running(int64_t now_ms) {
  static_assert(can_transition(TaskState::kRunning, TaskState::kQueued) &&
                can_transition(TaskState::kRunning, TaskState::kFailed));
  RecoveryReport report;
  Status st = write(true, [&](WriteContext& ctx) -> Status {
    struct Row {
      int64_t seq, started_at;
      int attempt;
      std::string backend;
      bool started;
    };
    std::vector<Row> rows;
    {
      StmtUse s(
          ctx.stmt("SELECT seq, COALESCE(started_at, ?1), attempt, COALESCE(backend, ''), "
                   "started_at IS NOT NULL FROM tasks WHERE " +
                   sql_guard(TaskState::kRunning)));
      s->bind(1, now_ms);
      while (s->executeStep()) {
        rows.push_back({s->getColumn(0).getInt64(), s->getColumn(1).getInt64(),
                        s->getColumn(2).getInt(), s->getColumn(3).getString(),
                        s->getColumn(4).getInt() != 0});
      }
    }
    // A claim whose call had not started (started_at unset) gives its attempt back; an attempt
    // that started is spent: FAILED when it was the last.
    const std::string spent = "started_at IS NOT NULL AND attempt - attempt_base >= max_attempts";
    for (const Row& r : rows) {
      StmtUse s(ctx.stmt(
          "UPDATE tasks SET status = CASE WHEN " + spent + " THEN " + lit(TaskState::kFailed) +
          " ELSE " + lit(TaskState::kQueued) + " END, error = CASE WHEN " + spent +
          " THEN 'interrupted by a restart; all ' || max_attempts || ' attempts are spent' "
          "WHEN started_at IS NULL THEN 'interrupted by a restart before its call started' "
          "ELSE 'interrupted by a restart' END, "
          "attempt = attempt - (started_at IS NULL), finished_at = CASE WHEN " +
          spent + " THEN ?1 END, next_attempt_at = NULL, webhook_state = CASE WHEN " + spent +
          " AND webhook_url IS NOT NULL THEN '" + std::string(to_string(WebhookState::kPending)) +
          "' END, webhook_next_at = CASE WHEN " + spent +
          " AND webhook_url IS NOT NULL THEN ?1 END WHERE seq = ?2 AND " +
          sql_guard(TaskState::kRunning) + returning_clause() + ", status"));
      s->bind(1, now_ms);
      s->bind(2, r.seq);
      if (!s->executeStep()) continue;
      TaskState to = parse_task_state(s->getColumn(9).getString()).value_or(TaskState::kFailed);
      ctx.changes->push_back(change_from_returning(*s, TaskState::kRunning, to, now_ms));
      (to == TaskState::kQueued ? report.requeued : report.failed) += 1;
      s->tryReset();
      if (!r.started) continue;  // no call was made: no attempt to list
      insert_attempt(ctx, r.seq,
                     Attempt{r.attempt, r.backend, "interrupted", "the server stopped (crash)",
                             r.started_at, now_ms - r.started_at});
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return report;
}

StatusOr<int> SqliteTaskStore::release_running(int64_t now_ms) {
  static_assert(can_transition(TaskState::kRunning, TaskState::kQueued));
  int released = 0;
  Status st = write(true, [&](WriteContext& ctx) -> Status {
    StmtUse s(ctx.stmt("UPDATE tasks SET status = " + lit(TaskState::kQueued) +
                       ", attempt = attempt - 1, next_attempt_at = NULL, "
                       "error = 'interrupted by shutdown' WHERE " +
                       sql_guard(TaskState::kRunning) + returning_clause()));
    while (s->executeStep()) {
      ctx.changes->push_back(
          change_from_returning(*s, TaskState::kRunning, TaskState::kQueued, now_ms));
      ++released;
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return released;
}

}  // namespace ts::sqlite
