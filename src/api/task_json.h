#pragma once
// The JSON shapes of the API: a task as clients see it, and the error body. Pure; thread-safe.

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "core/task.h"
#include "service/task_service.h"

namespace ts {

// Where a DONE task's result is fetched: /api/images/{id} for image tasks (seed 001),
// /api/v1/tasks/{id}/result otherwise.
std::string result_url(const Task& task);

// The task as GET /api/v1/tasks/{id} shows it; `details` adds attempts and webhook deliveries.
nlohmann::json task_to_json(const TaskView& view, bool details);
nlohmann::json task_to_json(const Task& task, bool details);

// {"error":{"code":...,"message":...,"field"?:...}}
nlohmann::json error_json(const Status& status);
std::string error_body(const Status& status);

}  // namespace ts
