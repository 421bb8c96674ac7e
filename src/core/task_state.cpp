#include "core/task_state.h"

namespace ts {

std::string_view to_string(TaskState state) {
  switch (state) {
    case TaskState::kQueued:
      return "QUEUED";
    case TaskState::kRunning:
      return "RUNNING";
    case TaskState::kDone:
      return "DONE";
    case TaskState::kFailed:
      return "FAILED";
    case TaskState::kCanceled:
      return "CANCELED";
  }
  return "UNKNOWN";
}

std::optional<TaskState> parse_task_state(std::string_view name) {
  for (TaskState s : kTaskStates) {
    if (to_string(s) == name) return s;
  }
  return std::nullopt;
}

bool is_final(TaskState state) {
  return state == TaskState::kDone || state == TaskState::kFailed || state == TaskState::kCanceled;
}

std::string sql_literal(TaskState state) { return "'" + std::string(to_string(state)) + "'"; }

std::string sql_guard(TaskState from) { return "status = " + sql_literal(from); }

std::string sql_is_final() {
  std::string out = "status IN (";
  bool first = true;
  for (TaskState s : kTaskStates) {
    if (!is_final(s)) continue;
    out += (first ? "" : ", ") + sql_literal(s);
    first = false;
  }
  return out + ")";
}

std::string_view to_string(WebhookState state) {
  switch (state) {
    case WebhookState::kNone:
      return "";
    case WebhookState::kPending:
      return "pending";
    case WebhookState::kDelivered:
      return "delivered";
    case WebhookState::kFailed:
      return "failed";
  }
  return "";
}

WebhookState parse_webhook_state(std::string_view name) {
  for (WebhookState s : {WebhookState::kPending, WebhookState::kDelivered, WebhookState::kFailed}) {
    if (to_string(s) == name) return s;
  }
  return WebhookState::kNone;
}

}  // namespace ts
