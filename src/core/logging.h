#pragma once
// Logging setup: spdlog to stderr, as text or as one JSON object per line. In JSON mode a
// message that starts with "task <id>" also gets a "task_id" field, so every state-change line
// (TaskService logs them as "task <id> FROM -> TO ...") can be filtered by task. Call once at
// start, before other threads log.

#include <string>

namespace ts {

// format: "text" or "json"; level: trace, debug, info, warn, error. False when level is unknown.
bool setup_logging(const std::string& format, const std::string& level);

}  // namespace ts
