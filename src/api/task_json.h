#pragma once
// The JSON shapes of the API: a task as clients see it, a task event, and the error body.
// Written as text with JsonWriter (no document built first; the stored payload is embedded as
// it is). Pure; thread-safe.

#include <optional>
#include <string>

#include "api/json_writer.h"
#include "core/status.h"
#include "core/task.h"
#include "service/events.h"
#include "service/task_service.h"

namespace ts {

// Where a DONE task's result is fetched: /api/images/{id} for image tasks (seed 001),
// /api/v1/tasks/{id}/result otherwise.
std::string result_url(const Task& task);

// The task as GET /api/v1/tasks/{id} shows it; `details` adds attempts and webhook deliveries;
// `view` adds queue_position and estimated_start while QUEUED; `created` adds that field (batch).
void write_task(JsonWriter& w, const Task& task, bool details, const TaskView* view = nullptr,
                std::optional<bool> created = std::nullopt);
std::string task_json(const Task& task, bool details);
std::string task_json(const TaskView& view, bool details);

// One change of a task, as the event streams send it.
void write_event(JsonWriter& w, const TaskEvent& e);

// {"error":{"code":...,"message":...,"field"?:...}}
std::string error_body(const Status& status);

}  // namespace ts
