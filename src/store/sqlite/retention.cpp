// SqliteTaskStore: deletion of old final tasks (--retain-final) and the lookup the orphan-file
// sweep makes.

#include "core/ids.h"
#include "store/sqlite/sqlite_task_store.h"

namespace ts::sqlite {

StatusOr<std::vector<PurgedTask>> SqliteTaskStore::purge_final(int64_t before_ms, int limit) {
  std::vector<PurgedTask> purged;
  // In a savepoint: a delete that fails (a full disk) takes the ones before it back with it,
  // instead of committing rows whose files the caller would then not remove.
  Status st = write(true, [&](WriteContext& ctx) -> Status {
    purged.clear();
    std::vector<int64_t> seqs;
    {
      // The status condition is the one of the index tasks_final_age, which gives the order:
      // without INDEXED BY, SQLite picks tasks_by_status and sorts every final task.
      StmtUse s(ctx.stmt(
          "SELECT seq, task_id, status FROM tasks INDEXED BY tasks_final_age "
          "WHERE " +
          sql_is_final() +
          " AND finished_at < ?1 "
          "AND (webhook_state IS NULL OR webhook_state != '" +
          std::string(to_string(WebhookState::kPending)) + "') ORDER BY finished_at LIMIT ?2"));
      s->bind(1, before_ms);
      s->bind(2, limit);
      while (s->executeStep()) {
        seqs.push_back(s->getColumn(0).getInt64());
        purged.push_back(
            {s->getColumn(1).getString(),
             parse_task_state(s->getColumn(2).getString()).value_or(TaskState::kDone)});
      }
    }
    for (const char* sql :
         {"DELETE FROM attempts WHERE task_seq = ?", "DELETE FROM results WHERE task_seq = ?",
          "DELETE FROM webhook_deliveries WHERE task_seq = ?",
          "DELETE FROM task_labels WHERE task_seq = ?", "DELETE FROM tasks WHERE seq = ?"}) {
      for (int64_t seq : seqs) {
        StmtUse s(ctx.stmt(sql));
        s->bind(1, seq);
        s->exec();
      }
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return purged;
}

StatusOr<std::unordered_set<std::string>> SqliteTaskStore::existing_task_ids(
    const std::vector<std::string>& task_ids) {
  return guarded([&]() -> StatusOr<std::unordered_set<std::string>> {
    auto conn = readers_->lease();
    // One statement for any number of ids: a JSON array, a lookup in the unique index each.
    StmtUse s(conn->cache.stmt(
        "SELECT task_id FROM tasks WHERE task_id IN (SELECT value FROM json_each(?))"));
    std::string array = "[";
    for (const std::string& id : task_ids) {
      if (!is_valid_task_id(id)) continue;  // [0-9a-z] only: nothing to escape
      array += (array.size() > 1 ? ",\"" : "\"") + id + "\"";
    }
    array += "]";
    s->bind(1, array);
    std::unordered_set<std::string> out;
    while (s->executeStep()) out.insert(s->getColumn(0).getString());
    return out;
  });
}

}  // namespace ts::sqlite
