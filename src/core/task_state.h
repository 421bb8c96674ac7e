#pragma once
// The task state machine on one screen: the states, every change allowed between them with the
// store operation that makes it, and the SQL guard that operation's UPDATE carries
// (`WHERE status = <from>`), so a lost race is "0 rows changed", never a task in two states.
// The stores build their status SQL from here and assert can_transition() where they change a
// state. Pure; thread-safe.
//
//   QUEUED ──▶ RUNNING ──▶ DONE | FAILED
//     │           │  └───▶ QUEUED   (retry after backoff, busy backend, shutdown, crash recovery)
//     └───────────┴──────▶ CANCELED
//   FAILED | CANCELED ───▶ QUEUED   (only by an operator's retry: POST /api/v1/tasks/{id}/retry)
//
// DONE, FAILED and CANCELED are final: a task in a final state never runs again by itself; an
// explicit retry is the one way out of FAILED or CANCELED, with a fresh attempt budget. A
// scheduled task is QUEUED (with run_at) from its submit on.

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace ts {

enum class TaskState { kQueued, kRunning, kDone, kFailed, kCanceled };

// Every state, in the order of the diagram (and of TaskState's values).
inline constexpr std::array<TaskState, 5> kTaskStates = {TaskState::kQueued, TaskState::kRunning,
                                                         TaskState::kDone, TaskState::kFailed,
                                                         TaskState::kCanceled};

// The upper-case name the API and the store use ("QUEUED").
std::string_view to_string(TaskState state);
std::optional<TaskState> parse_task_state(std::string_view name);
bool is_final(TaskState state);

// An allowed change and the store operation that makes it.
struct Transition {
  TaskState from;
  TaskState to;
  std::string_view operation;
};
inline constexpr Transition kTransitions[] = {
    {TaskState::kQueued, TaskState::kRunning, "mark_running"},
    {TaskState::kQueued, TaskState::kCanceled, "cancel"},
    {TaskState::kRunning, TaskState::kDone, "finish_done"},
    {TaskState::kRunning, TaskState::kFailed, "finish_failed; recover_running (attempts spent)"},
    {TaskState::kRunning, TaskState::kQueued,
     "requeue (retry, busy); release_running (shutdown); recover_running (crash)"},
    {TaskState::kRunning, TaskState::kCanceled, "cancel"},
    {TaskState::kFailed, TaskState::kQueued, "retry; retry_matching"},
    {TaskState::kCanceled, TaskState::kQueued, "retry; retry_matching"},
};

// The states an operator's retry starts from.
constexpr bool can_retry(TaskState from) {
  return from == TaskState::kFailed || from == TaskState::kCanceled;
}

constexpr bool can_transition(TaskState from, TaskState to) {
  for (const Transition& t : kTransitions) {
    if (t.from == from && t.to == to) return true;
  }
  return false;
}

// The state as an SQL string literal: 'QUEUED'.
std::string sql_literal(TaskState state);
// The guard of a change out of `from`: status = 'QUEUED'. The partial indexes of the schema use
// the same text, so the planner matches them.
std::string sql_guard(TaskState from);
// status IN ('DONE', 'FAILED', 'CANCELED')
std::string sql_is_final();

// Where a final task's webhook delivery stands (kNone: no webhook_url, or not final yet).
enum class WebhookState { kNone, kPending, kDelivered, kFailed };

// "pending", "delivered", "failed"; "" for kNone.
std::string_view to_string(WebhookState state);
WebhookState parse_webhook_state(std::string_view name);

}  // namespace ts
