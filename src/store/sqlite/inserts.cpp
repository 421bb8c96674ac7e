// SqliteTaskStore: the inserts of new tasks (plain, batched by the writer, async, all-or-none).

#include <algorithm>

#include "store/sqlite/sqlite_task_store.h"

namespace ts::sqlite {
namespace {

// The insert of a submitted task: the head, then one row of parameters per task (insert_one
// uses one, insert_run up to kInsertChunk), bound by bind_inserted.
constexpr size_t kInsertChunk = 32;

const std::string& insert_head() {
  static const std::string head = " INTO tasks (" + inserted_columns() + ") VALUES ";
  return head;
}

const std::string& insert_row() {
  static const std::string row = [] {
    std::string r = "(";
    for (int i = 0; i < inserted_count(); ++i) r += i ? ", ?" : "?";
    return r + ")";
  }();
  return row;
}

// The statement text for one task: a failure undoes this statement alone.
const std::string& insert_one_sql() {
  static const std::string sql = "INSERT" + insert_head() + insert_row();
  return sql;
}

// The statement text for `rows` tasks, 1 <= rows <= kInsertChunk, OR ROLLBACK: a failure undoes
// the whole transaction (see commit_batch).
const std::string& insert_run_sql(size_t rows) {
  static const std::vector<std::string> all = [] {
    std::vector<std::string> v(kInsertChunk + 1);
    for (size_t n = 1; n <= kInsertChunk; ++n) {
      v[n] = "INSERT OR ROLLBACK" + insert_head();
      for (size_t r = 0; r < n; ++r) v[n] += (r ? ", " : "") + insert_row();
    }
    return v;
  }();
  return all[rows];
}

// The change an inserted task (its seq assigned) makes: none -> QUEUED.
TaskChange queued_change(const Task& task) {
  TaskChange c;
  c.seq = task.seq;
  c.task_id = task.task_id;
  c.type = task.type;
  c.priority = task.priority;
  c.to = TaskState::kQueued;
  c.at_ms = task.created_at;
  c.next_attempt_at = task.run_at;
  c.to_scheduled = task.scheduled != 0;
  return c;
}

// The labels of an inserted task. `sql_verb` is INSERT, or INSERT OR ROLLBACK inside a run
// whose failure must undo the whole transaction.
void insert_labels(StatementCache& c, const char* sql_verb, const Task& task) {
  if (task.labels.empty()) return;
  StmtUse s(
      c.stmt(std::string(sql_verb) + " INTO task_labels (task_seq, key, value) VALUES (?, ?, ?)"));
  for (const auto& [key, value] : task.labels) {
    s->bind(1, task.seq);
    s->bind(2, key);
    s->bind(3, value);
    s->exec();
    s->reset();
  }
}

std::optional<std::string> find_by_key(StatementCache& c, const std::string& key) {
  StmtUse use(c.stmt("SELECT task_id FROM tasks WHERE idempotency_key = ?"));
  use->bind(1, key);
  if (use->executeStep()) return use->getColumn(0).getString();
  return std::nullopt;
}

}  // namespace

InsertOutcome insert_one(StatementCache& c, std::vector<TaskChange>& changes, Task& task) {
  if (task.idempotency_key) {
    if (auto existing = find_by_key(c, *task.idempotency_key)) return {false, *existing};
  }
  StmtUse s(c.stmt(insert_one_sql()));
  bind_inserted(*s, 0, task);
  s->exec();
  task.seq = c.db().getLastInsertRowid();
  insert_labels(c, "INSERT", task);
  changes.push_back(queued_change(task));
  return {true, task.task_id};
}

StatusOr<InsertOutcome> SqliteTaskStore::insert(Task& task) {
  InsertOutcome out;
  Status st = committer_->write([&](WriteOp& op) { op.plain_insert = &task; }, &out);
  if (!st.ok()) return st;
  return out;
}

void SqliteTaskStore::insert_async(Task task,
                                   std::function<void(const StatusOr<InsertOutcome>&)> done) {
  committer_->insert_async(std::move(task), std::move(done));
}

bool SqliteTaskStore::insert_run(const std::vector<WriteOp*>& ops) {
  // One statement opens the table's and every index's b-tree once for up to kInsertChunk rows,
  // instead of once per row: most of an insert's cost on this path.
  const size_t n = ops.size();
  const int params = inserted_count();
  for (size_t at = 0; at < n; at += kInsertChunk) {
    size_t k = std::min(kInsertChunk, n - at);
    try {
      StmtUse s(write_ctx_->stmt(insert_run_sql(k)));
      for (size_t r = 0; r < k; ++r) {
        bind_inserted(*s, static_cast<int>(r) * params, *ops[at + r]->plain_insert);
      }
      s->exec();
      // The single writer assigns rowids max+1 in row order: the chunk's are consecutive.
      int64_t last = write_db_->getLastInsertRowid();
      for (size_t r = 0; r < k; ++r) {
        Task& task = *ops[at + r]->plain_insert;
        task.seq = last - static_cast<int64_t>(k - 1 - r);
        insert_labels(*write_ctx_, "INSERT OR ROLLBACK", task);
        write_ctx_->changes->push_back(queued_change(task));
        ops[at + r]->result = Status::Ok();
        ops[at + r]->outcome = {true, task.task_id};
      }
    } catch (const SQLite::Exception&) {
      return false;  // OR ROLLBACK: the transaction is gone, the caller redoes it row by row
    }
  }
  return true;
}

StatusOr<std::vector<InsertOutcome>> SqliteTaskStore::insert_batch(std::vector<Task>& tasks) {
  std::vector<InsertOutcome> outs(tasks.size());
  Status st = write(true, [&](WriteContext& ctx) -> Status {
    size_t changes_before = ctx.changes->size();
    for (size_t i = 0; i < tasks.size(); ++i) {
      try {
        outs[i] = insert_one(ctx, *ctx.changes, tasks[i]);
      } catch (const SQLite::Exception& e) {
        ctx.changes->resize(changes_before);
        Status err = sql_error(e);
        return Status(err.code(), err.slug(), "tasks[" + std::to_string(i) + "]: " + err.message(),
                      "tasks[" + std::to_string(i) + "]");
      }
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return outs;
}

}  // namespace ts::sqlite
