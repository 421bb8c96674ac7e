#include "core/task_fields.h"

#include <array>

namespace ts {
namespace {

using F = FieldType;

constexpr std::array<TaskField, 27> kFields = {{
    {"seq", "seq", F::kInteger, &Task::seq, Shown::kNever, "", false, false, false, 0, 0,
     "Insertion order: the age within a priority"},
    {"task_id", "task_id", F::kText, &Task::task_id, Shown::kAlways, "", true, false, false, 0, 0,
     "Time-ordered, URL-safe id"},
    {"type", "type", F::kText, &Task::type, Shown::kAlways, "", true, true, true, 1, kMaxTypeLength,
     "The pool that runs it: image, transcribe, or one from the config file"},
    {"status", "status", F::kState, &Task::status, Shown::kAlways, "", true, false, false, 0, 0,
     "Where the task stands"},
    {"priority", "priority", F::kInteger, &Task::priority, Shown::kAlways, "", true, true, false,
     kMinPriority, kMaxPriority, "Higher first; the words low, normal, high are 2, 5, 8"},
    {"attempt", "attempt", F::kInteger, &Task::attempt, Shown::kAlways, "", true, false, false, 0,
     0, "Attempts started so far (numbers keep growing across retries)"},
    {"attempt_base", "attempt_base", F::kInteger, &Task::attempt_base, Shown::kNever, "", false,
     false, false, 0, 0, "Attempts spent before the latest retry"},
    {"retries", "retries", F::kInteger, &Task::retries, Shown::kAlways, "", false, false, false, 0,
     0, "Times the task was retried after FAILED or CANCELED"},
    {"max_attempts", "max_attempts", F::kInteger, &Task::max_attempts, Shown::kAlways, "", true,
     true, false, kMinMaxAttempts, kMaxMaxAttempts, "Attempts before the task FAILS"},
    {"timeout_s", "timeout_s", F::kInteger, &Task::timeout_s, Shown::kAlways, "", true, true, false,
     kMinTimeoutS, kMaxTimeoutS, "Seconds an attempt may take (the pool's default if unset)"},
    {"idempotency_key", "idempotency_key", F::kText, &Task::idempotency_key, Shown::kAlways, "",
     true, true, false, 1, kMaxIdempotencyKeyBytes,
     "A repeat of the key returns the first task instead of a new one"},
    {"webhook_url", "webhook_url", F::kText, &Task::webhook_url, Shown::kAlways, "", true, true,
     false, 1, kMaxWebhookUrlBytes, "http(s) URL that gets the final task JSON, signed"},
    {"created_at", "created_at", F::kTime, &Task::created_at, Shown::kAlways, "", true, false,
     false, 0, 0, "When it was accepted"},
    {"started_at", "started_at", F::kTime, &Task::started_at, Shown::kAlways, "", false, false,
     false, 0, 0, "When its latest attempt started"},
    {"finished_at", "finished_at", F::kTime, &Task::finished_at, Shown::kAlways, "", false, false,
     false, 0, 0, "When it reached a final state"},
    {"next_attempt_at", "next_attempt_at", F::kTime, &Task::next_attempt_at, Shown::kWhenQueued, "",
     false, false, false, 0, 0, "A queued retry waits until then"},
    {"run_at", "run_at", F::kTime, &Task::run_at, Shown::kAlways, "", true, false, false, 0, 0,
     "A scheduled task is not dispatched before then"},
    {"scheduled", "scheduled", F::kInteger, &Task::scheduled, Shown::kNever, "", true, false, false,
     0, 0, "1 while a scheduled task waits for run_at outside the backlog"},
    {"backend", "backend", F::kText, &Task::backend, Shown::kAlways, "", false, false, false, 0, 0,
     "The backend of the latest attempt"},
    {"error", "error", F::kText, &Task::error, Shown::kAlways, "", false, false, false, 0, 0,
     "Why the latest attempt failed, or why the task was canceled"},
    {"size", "result_size", F::kInteger, &Task::result_size, Shown::kGrouped, "result", false,
     false, false, 0, 0, "Bytes of the stored result"},
    {"content_type", "result_type", F::kText, &Task::result_type, Shown::kGrouped, "result", false,
     false, false, 0, 0, "The backend's Content-Type"},
    {"filename", "input_name", F::kText, &Task::input_name, Shown::kGrouped, "input", true, false,
     false, 0, 0, "As the client named the uploaded file"},
    {"content_type", "input_type", F::kText, &Task::input_type, Shown::kGrouped, "input", true,
     false, false, 0, 0, "The upload's Content-Type"},
    {"size", "input_size", F::kInteger, &Task::input_size, Shown::kGrouped, "input", true, false,
     false, 0, 0, "Bytes of the upload"},
    {"payload", "payload", F::kJson, &Task::payload, Shown::kAlways, "", true, true, false, 0, 0,
     "Forwarded to the backend as the request body"},
    {"webhook_state", "webhook_state", F::kWebhookState, &Task::webhook_state, Shown::kNever, "",
     false, false, false, 0, 0, "Where the webhook delivery stands"},
}};

constexpr std::array<FieldGroup, 2> kGroups = {{
    {"result", true, "Size and type of the result once DONE"},
    {"input", false, "The file uploaded with the task (multipart submit)"},
}};

}  // namespace

std::span<const TaskField> task_fields() { return kFields; }

std::span<const FieldGroup> task_field_groups() { return kGroups; }

const TaskField* find_input_field(std::string_view name) {
  for (const TaskField& f : kFields) {
    if (f.input && f.name == name) return &f;
  }
  return nullptr;
}

bool is_optional(const TaskField& field) {
  return std::holds_alternative<std::optional<std::string> Task::*>(field.member) ||
         std::holds_alternative<std::optional<int> Task::*>(field.member) ||
         std::holds_alternative<std::optional<int64_t> Task::*>(field.member);
}

}  // namespace ts
