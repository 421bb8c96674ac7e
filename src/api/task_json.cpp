#include "api/task_json.h"

#include "core/time_format.h"

namespace ts {
namespace {

using nlohmann::json;

json opt_time(const std::optional<int64_t>& ms) {
  return ms ? json(format_rfc3339_ms(*ms)) : json(nullptr);
}

template <typename T>
json opt(const std::optional<T>& v) {
  return v ? json(*v) : json(nullptr);
}

}  // namespace

std::string result_url(const Task& task) {
  if (task.type == "image") return "/api/images/" + task.task_id;
  return "/api/v1/tasks/" + task.task_id + "/result";
}

json task_to_json(const Task& t, bool details) {
  json j;
  j["task_id"] = t.task_id;
  j["type"] = t.type;
  j["status"] = std::string(to_string(t.status));
  j["priority"] = t.priority;
  j["attempt"] = t.attempt;
  j["max_attempts"] = t.max_attempts;
  j["timeout_s"] = opt(t.timeout_s);
  j["idempotency_key"] = opt(t.idempotency_key);
  j["webhook_url"] = opt(t.webhook_url);
  j["created_at"] = format_rfc3339_ms(t.created_at);
  j["started_at"] = opt_time(t.started_at);
  j["finished_at"] = opt_time(t.finished_at);
  j["next_attempt_at"] = opt_time(t.status == TaskState::kQueued ? t.next_attempt_at
                                                                  : std::nullopt);
  j["backend"] = opt(t.backend);
  j["error"] = opt(t.error);
  if (t.result_size) {
    j["result"] = {{"size", *t.result_size}, {"content_type", t.result_type.value_or("")}};
  } else {
    j["result"] = nullptr;
  }
  j["result_url"] = t.status == TaskState::kDone ? json(result_url(t)) : json(nullptr);
  if (t.input_name) {
    j["input"] = {{"filename", *t.input_name},
                  {"content_type", t.input_type.value_or("")},
                  {"size", t.input_size.value_or(0)}};
  }
  json payload = json::parse(t.payload, nullptr, false);
  j["payload"] = payload.is_discarded() ? json::object() : payload;
  if (details) {
    json attempts = json::array();
    for (const Attempt& a : t.attempts) {
      attempts.push_back({{"number", a.number},
                          {"backend", a.backend},
                          {"outcome", a.outcome},
                          {"error", a.error.empty() ? json(nullptr) : json(a.error)},
                          {"started_at", format_rfc3339_ms(a.started_at)},
                          {"duration_ms", a.duration_ms}});
    }
    j["attempts"] = attempts;
    if (t.webhook_url) {
      json deliveries = json::array();
      for (const WebhookDelivery& d : t.deliveries) {
        deliveries.push_back({{"number", d.number},
                              {"at", format_rfc3339_ms(d.at)},
                              {"status_code", d.status_code == 0 ? json(nullptr) : json(d.status_code)},
                              {"error", d.error.empty() ? json(nullptr) : json(d.error)}});
      }
      j["webhook"] = {{"url", *t.webhook_url},
                      {"state", t.webhook_state.empty() ? json(nullptr) : json(t.webhook_state)},
                      {"deliveries", deliveries}};
    }
  }
  return j;
}

json task_to_json(const TaskView& view, bool details) {
  json j = task_to_json(view.task, details);
  if (view.task.status == TaskState::kQueued) {
    j["queue_position"] = opt(view.queue_position);
    j["estimated_start"] = opt_time(view.estimated_start_ms);
  }
  return j;
}

json error_json(const Status& status) {
  json e = {{"code", status.slug().empty() ? "error" : status.slug()},
            {"message", status.message()}};
  if (!status.field().empty()) e["field"] = status.field();
  return json{{"error", e}};
}

std::string error_body(const Status& status) {
  return error_json(status).dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace ts
