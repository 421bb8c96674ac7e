// SqliteTaskStore: the webhook outbox. A final task with a webhook_url is 'pending' with a due
// time (webhook_next_at) until a delivery succeeds or the attempts run out.

#include "store/sqlite/sqlite_task_store.h"

namespace ts::sqlite {
namespace {

const std::string& pending() {
  static const std::string guard =
      "webhook_state = '" + std::string(to_string(WebhookState::kPending)) + "'";
  return guard;
}

}  // namespace

StatusOr<std::vector<int64_t>> SqliteTaskStore::webhooks_due(int64_t now_ms, int limit) {
  return guarded([&]() -> StatusOr<std::vector<int64_t>> {
    auto conn = readers_->lease();
    StmtUse s(conn->cache.stmt("SELECT seq FROM tasks WHERE " + pending() +
                               " AND webhook_next_at <= ? ORDER BY webhook_next_at LIMIT ?"));
    s->bind(1, now_ms);
    s->bind(2, limit);
    std::vector<int64_t> out;
    while (s->executeStep()) out.push_back(s->getColumn(0).getInt64());
    return out;
  });
}

StatusOr<std::optional<int64_t>> SqliteTaskStore::next_webhook_due() {
  return guarded([&]() -> StatusOr<std::optional<int64_t>> {
    auto conn = readers_->lease();
    StmtUse s(conn->cache.stmt("SELECT MIN(webhook_next_at) FROM tasks WHERE " + pending()));
    if (!s->executeStep()) return std::optional<int64_t>();
    return opt_i64(s->getColumn(0));
  });
}

Status SqliteTaskStore::record_webhook(int64_t seq, const WebhookDelivery& delivery,
                                       WebhookState new_state, std::optional<int64_t> next_at) {
  return write(true, [&](WriteContext& ctx) -> Status {
    {
      StmtUse s(ctx.stmt(
          "INSERT OR REPLACE INTO webhook_deliveries (task_seq, number, at, status_code, error) "
          "VALUES (?, ?, ?, ?, ?)"));
      s->bind(1, seq);
      s->bind(2, delivery.number);
      s->bind(3, delivery.at);
      s->bind(4, delivery.status_code);
      bind_text_or_null(*s, 5, delivery.error);
      s->exec();
    }
    StmtUse s(ctx.stmt("UPDATE tasks SET webhook_state = ?, webhook_next_at = ? WHERE seq = ?"));
    bind_text_or_null(*s, 1, std::string(to_string(new_state)));
    bind_opt(*s, 2, next_at);
    s->bind(3, seq);
    s->exec();
    return Status::Ok();
  });
}

}  // namespace ts::sqlite
