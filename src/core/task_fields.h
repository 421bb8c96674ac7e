#pragma once
// The fields of a task on one screen: for each, its name in the API, its column in the store,
// its type, whether a client may give it on submit (and within which bounds), and where it
// lives on a Task. The store binds and reads its columns from this table, the API renders a
// task from it, the request parser takes its inputs' names and bounds from it and /openapi.json
// describes Task and TaskInput from it. A new field is an entry here, its member of Task (and
// of NewTask when clients may give it) and a migration. Immutable; thread-safe.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "core/task.h"

namespace ts {

enum class FieldType {
  kText,
  kInteger,
  kTime,          // milliseconds since the epoch; RFC 3339 in the API
  kState,         // TaskState; its upper-case name
  kJson,          // a JSON object kept as its text (the payload)
  kWebhookState,  // WebhookState; "pending", "delivered", "failed"
};

// Where the value lives on a Task. An optional member may be unset: null in the API and the
// store.
using FieldMember =
    std::variant<std::string Task::*, std::optional<std::string> Task::*, int Task::*,
                 std::optional<int> Task::*, int64_t Task::*, std::optional<int64_t> Task::*,
                 TaskState Task::*, WebhookState Task::*>;

enum class Shown {
  kAlways,      // "name": value in the task JSON (null when unset)
  kWhenQueued,  // likewise while the task is QUEUED, null otherwise
  kGrouped,     // "group": {"name": value, ...}
  kNever,       // stored, not part of the task JSON as such
};

struct TaskField {
  std::string_view name;    // the JSON key (inside `group` when kGrouped)
  std::string_view column;  // the store's column
  FieldType type;
  FieldMember member;
  Shown shown = Shown::kAlways;
  std::string_view group;  // kGrouped: the object it is shown in
  bool inserted = false;   // written by the insert of a new task (the rest change later)
  bool input = false;      // a client may give it on submit
  bool required = false;   // ... and must
  int64_t min = 0;         // inputs: the bounds of the value (kInteger) or its bytes (kText)
  int64_t max = 0;
  std::string_view doc;
};

// An object the API shows several fields in ("result": {"size", "content_type"}).
struct FieldGroup {
  std::string_view name;
  bool null_when_unset;  // shown as null when its first field is unset (else left out)
  std::string_view doc;
};

// In the order of the task JSON and of the store's columns.
std::span<const TaskField> task_fields();
std::span<const FieldGroup> task_field_groups();
// The input field named `name`, or nullptr.
const TaskField* find_input_field(std::string_view name);
// Whether the member is optional (the field may be unset).
bool is_optional(const TaskField& field);

}  // namespace ts
