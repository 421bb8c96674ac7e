#include "api/task_json.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/task_fields.h"
#include "core/time_format.h"

namespace ts {

std::string result_url(const Task& task) {
  if (task.type == "image") return "/api/images/" + task.task_id;
  return "/api/v1/tasks/" + task.task_id + "/result";
}

namespace {

// One field's value, as the task JSON shows it.
void write_value(JsonWriter& w, const TaskField& f, const Task& t) {
  std::visit(
      [&](auto member) {
        const auto& v = t.*member;
        using M = std::remove_cv_t<std::remove_reference_t<decltype(v)>>;
        if constexpr (std::is_same_v<M, TaskState>) {
          w.string(to_string(v));
        } else if constexpr (std::is_same_v<M, WebhookState>) {
          if (v == WebhookState::kNone) {
            w.null();
          } else {
            w.string(to_string(v));
          }
        } else if constexpr (std::is_same_v<M, std::string>) {
          if (f.type == FieldType::kJson) {
            // Stored as the dump of a parsed JSON object: valid JSON, embedded as is.
            w.raw(v.empty() ? "{}" : v);
          } else {
            w.string(v);
          }
        } else if constexpr (std::is_same_v<M, int> || std::is_same_v<M, int64_t>) {
          if (f.type == FieldType::kTime) {
            w.time(v);
          } else {
            w.number(int64_t{v});
          }
        } else {  // optional
          if (!v) {
            w.null();
          } else if constexpr (std::is_same_v<M, std::optional<std::string>>) {
            w.string(*v);
          } else if (f.type == FieldType::kTime) {
            w.time(*v);
          } else {
            w.number(int64_t{*v});
          }
        }
      },
      f.member);
}

bool is_set(const TaskField& f, const Task& t) {
  return std::visit(
      [&](auto member) {
        const auto& v = t.*member;
        using M = std::remove_cv_t<std::remove_reference_t<decltype(v)>>;
        if constexpr (std::is_same_v<M, std::optional<std::string>> ||
                      std::is_same_v<M, std::optional<int>> ||
                      std::is_same_v<M, std::optional<int64_t>>) {
          return v.has_value();
        } else {
          return true;
        }
      },
      f.member);
}

// A group's fields as one object ("result": {"size", "content_type"}); an unset member shows
// as "" or 0.
void write_group(JsonWriter& w, const FieldGroup& g, const Task& t) {
  const TaskField* first = nullptr;
  for (const TaskField& f : task_fields()) {
    if (f.shown == Shown::kGrouped && f.group == g.name) {
      first = &f;
      break;
    }
  }
  if (!first || !is_set(*first, t)) {
    if (g.null_when_unset) w.key(g.name).null();
    return;
  }
  w.key(g.name).begin_object();
  for (const TaskField& f : task_fields()) {
    if (f.shown != Shown::kGrouped || f.group != g.name) continue;
    w.key(f.name);
    if (is_set(f, t)) {
      write_value(w, f, t);
    } else if (f.type == FieldType::kText) {
      w.string("");
    } else {
      w.number(int64_t{0});
    }
  }
  w.end_object();
}

}  // namespace

void write_task(JsonWriter& w, const Task& t, bool details, const TaskView* view,
                std::optional<bool> created) {
  w.begin_object();
  std::vector<std::string_view> groups_done;
  for (const TaskField& f : task_fields()) {
    switch (f.shown) {
      case Shown::kNever:
        break;
      case Shown::kAlways:
        w.key(f.name);
        write_value(w, f, t);
        break;
      case Shown::kWhenQueued:
        w.key(f.name);
        if (t.status == TaskState::kQueued) {
          write_value(w, f, t);
        } else {
          w.null();
        }
        break;
      case Shown::kGrouped:
        if (std::find(groups_done.begin(), groups_done.end(), f.group) != groups_done.end()) break;
        groups_done.push_back(f.group);
        for (const FieldGroup& g : task_field_groups()) {
          if (g.name == f.group) write_group(w, g, t);
        }
        if (f.group == "result") {
          w.field("result_url", t.status == TaskState::kDone
                                    ? std::optional<std::string>(result_url(t))
                                    : std::nullopt);
        }
        break;
    }
  }
  w.key("labels").begin_object();
  for (const auto& [k, v] : t.labels) w.field(k, v);
  w.end_object();
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
      w.key("state");
      if (t.webhook_state == WebhookState::kNone) {
        w.null();
      } else {
        w.string(to_string(t.webhook_state));
      }
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
