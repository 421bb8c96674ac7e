#include "api/task_json.h"

#include "core/time_format.h"

namespace ts {

std::string result_url(const Task& task) {
  if (task.type == "image") return "/api/images/" + task.task_id;
  return "/api/v1/tasks/" + task.task_id + "/result";
}

void write_task(JsonWriter& w, const Task& t, bool details, const TaskView* view,
                std::optional<bool> created) {
  w.begin_object();
  w.field("task_id", t.task_id);
  w.field("type", t.type);
  w.field("status", to_string(t.status));
  w.field("priority", int64_t{t.priority});
  w.field("attempt", int64_t{t.attempt});
  w.field("max_attempts", int64_t{t.max_attempts});
  w.field("timeout_s", t.timeout_s ? std::optional<int64_t>(*t.timeout_s) : std::nullopt);
  w.field("idempotency_key", t.idempotency_key);
  w.field("webhook_url", t.webhook_url);
  w.field_time("created_at", t.created_at);
  w.field_time("started_at", t.started_at);
  w.field_time("finished_at", t.finished_at);
  w.field_time("next_attempt_at",
               t.status == TaskState::kQueued ? t.next_attempt_at : std::nullopt);
  w.field("backend", t.backend);
  w.field("error", t.error);
  w.key("result");
  if (t.result_size) {
    w.begin_object();
    w.field("size", *t.result_size);
    w.field("content_type", t.result_type.value_or(""));
    w.end_object();
  } else {
    w.null();
  }
  w.field("result_url",
          t.status == TaskState::kDone ? std::optional<std::string>(result_url(t)) : std::nullopt);
  if (t.input_name) {
    w.key("input").begin_object();
    w.field("filename", *t.input_name);
    w.field("content_type", t.input_type.value_or(""));
    w.field("size", t.input_size.value_or(0));
    w.end_object();
  }
  // The payload was stored as the dump of a parsed JSON object: valid JSON, embedded as is.
  w.key("payload").raw(t.payload.empty() ? "{}" : t.payload);
  if (view && t.status == TaskState::kQueued) {
    w.field("queue_position", view->queue_position);
    w.field_time("estimated_start", view->estimated_start_ms);
  }
  if (created) w.key("created").boolean(*created);
  if (details) {
    w.key("attempts").begin_array();
    for (const Attempt& a : t.attempts) {
      w.begin_object();
      w.field("number", int64_t{a.number});
      w.field("backend", a.backend);
      w.field("outcome", a.outcome);
      w.field("error", a.error.empty() ? std::nullopt : std::optional<std::string>(a.error));
      w.field_time("started_at", a.started_at);
      w.field("duration_ms", a.duration_ms);
      w.end_object();
    }
    w.end_array();
    if (t.webhook_url) {
      w.key("webhook").begin_object();
      w.field("url", *t.webhook_url);
      w.field("state", t.webhook_state.empty() ? std::nullopt
                                               : std::optional<std::string>(t.webhook_state));
      w.key("deliveries").begin_array();
      for (const WebhookDelivery& d : t.deliveries) {
        w.begin_object();
        w.field("number", int64_t{d.number});
        w.field_time("at", d.at);
        w.field("status_code",
                d.status_code == 0 ? std::nullopt : std::optional<int64_t>(d.status_code));
        w.field("error", d.error.empty() ? std::nullopt : std::optional<std::string>(d.error));
        w.end_object();
      }
      w.end_array();
      w.end_object();
    }
  }
  w.end_object();
}

std::string task_json(const Task& task, bool details) {
  std::string out;
  out.reserve(640 + task.payload.size());
  JsonWriter w(out);
  write_task(w, task, details);
  return out;
}

std::string task_json(const TaskView& view, bool details) {
  std::string out;
  out.reserve(640 + view.task.payload.size());
  JsonWriter w(out);
  write_task(w, view.task, details, &view);
  return out;
}

void write_event(JsonWriter& w, const TaskEvent& e) {
  w.begin_object();
  w.field("id", static_cast<int64_t>(e.id));
  w.field("task_id", e.task_id);
  w.field("type", e.type);
  w.field("status", to_string(e.status));
  w.field("previous_status",
          e.from ? std::optional<std::string>(std::string(to_string(*e.from))) : std::nullopt);
  w.field("attempt", int64_t{e.attempt});
  w.field_time("at", e.at_ms);
  if (!e.backend.empty()) w.field("backend", e.backend);
  if (!e.error.empty()) w.field("error", e.error);
  w.end_object();
}

std::string error_body(const Status& status) {
  std::string out;
  JsonWriter w(out);
  w.begin_object().key("error").begin_object();
  w.field("code", status.slug().empty() ? std::string("error") : status.slug());
  w.field("message", status.message());
  if (!status.field().empty()) w.field("field", status.field());
  w.end_object().end_object();
  return out;
}

}  // namespace ts
