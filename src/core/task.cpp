#include "core/task.h"

namespace ts {

std::string_view to_string(TaskState state) {
  switch (state) {
    case TaskState::kQueued: return "QUEUED";
    case TaskState::kRunning: return "RUNNING";
    case TaskState::kDone: return "DONE";
    case TaskState::kFailed: return "FAILED";
    case TaskState::kCanceled: return "CANCELED";
  }
  return "UNKNOWN";
}

std::optional<TaskState> parse_task_state(std::string_view name) {
  for (TaskState s : {TaskState::kQueued, TaskState::kRunning, TaskState::kDone,
                      TaskState::kFailed, TaskState::kCanceled}) {
    if (to_string(s) == name) return s;
  }
  return std::nullopt;
}

bool is_final(TaskState state) {
  return state == TaskState::kDone || state == TaskState::kFailed ||
         state == TaskState::kCanceled;
}

bool can_transition(TaskState from, TaskState to) {
  switch (from) {
    case TaskState::kQueued:
      return to == TaskState::kRunning || to == TaskState::kCanceled;
    case TaskState::kRunning:
      return to == TaskState::kDone || to == TaskState::kFailed ||
             to == TaskState::kCanceled || to == TaskState::kQueued;
    default:
      return false;
  }
}

std::optional<int> priority_from_word(std::string_view word) {
  if (word == "low") return 2;
  if (word == "normal") return 5;
  if (word == "high") return 8;
  return std::nullopt;
}

}  // namespace ts
