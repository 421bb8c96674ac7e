#pragma once
// Task: the record every module passes around, with its attempts and webhook deliveries, and
// the bounds of the API contract. Plain values; thread-compatible. The state machine is in
// core/task_state.h.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/task_state.h"

namespace ts {

// Bounds of the API contract (DESIGN.md); outside them a request gets 422 naming the field.
inline constexpr int kMinPriority = 0;
inline constexpr int kMaxPriority = 9;
inline constexpr int kDefaultPriority = 5;
inline constexpr int kMinMaxAttempts = 1;
inline constexpr int kMaxMaxAttempts = 100;
inline constexpr int kDefaultMaxAttempts = 3;
inline constexpr int kMinTimeoutS = 1;
inline constexpr int kMaxTimeoutS = 86400;
inline constexpr size_t kMaxIdempotencyKeyBytes = 255;
inline constexpr size_t kMaxWebhookUrlBytes = 2048;
inline constexpr size_t kMaxTypeLength = 64;  // a pool name: a-z, 0-9, _ and -
// Labels: up to kMaxLabels pairs; a key is 1-64 characters of a-z, A-Z, 0-9, _ . - and /, a
// value up to 256 bytes without control characters.
inline constexpr size_t kMaxLabels = 16;
inline constexpr size_t kMaxLabelKeyLength = 64;
inline constexpr size_t kMaxLabelValueBytes = 256;
// A scheduled task's run_at may lie at most this far ahead (delay_s likewise).
inline constexpr int64_t kMaxScheduleAheadS = 366LL * 24 * 3600;

// "low"/"normal"/"high" map to 2/5/8.
std::optional<int> priority_from_word(std::string_view word);

// One attempt to run a task on a backend, as shown in GET /api/v1/tasks/{id}.
struct Attempt {
  int number = 0;
  std::string backend;
  std::string outcome;  // "done", "failed", "retry", "busy", "canceled", "interrupted"
  std::string error;
  int64_t started_at = 0;
  int64_t duration_ms = 0;
};

// A webhook delivery attempt.
struct WebhookDelivery {
  int number = 0;
  int64_t at = 0;
  int status_code = 0;  // 0 when no HTTP answer came
  std::string error;
};

struct Task {
  int64_t seq = 0;  // store row id: insertion order, the age within a priority
  std::string task_id;
  std::string type;
  std::string payload;  // JSON object text, forwarded to the backend
  int priority = kDefaultPriority;
  TaskState status = TaskState::kQueued;
  int attempt = 0;  // attempts started so far (a busy backend or shutdown gives one back)
  int max_attempts = kDefaultMaxAttempts;
  // Attempts spent before the latest retry: the budget of max_attempts counts from here, while
  // attempt numbers keep growing so that the earlier attempts stay listed.
  int attempt_base = 0;
  int retries = 0;  // times a FAILED or CANCELED task was put back to QUEUED
  std::optional<int> timeout_s;
  std::optional<std::string> idempotency_key;
  std::optional<std::string> webhook_url;
  int64_t created_at = 0;
  std::optional<int64_t> started_at;
  std::optional<int64_t> finished_at;
  std::optional<int64_t> next_attempt_at;
  // A scheduled task: not dispatched before run_at. While `scheduled` it is QUEUED outside the
  // backlog; the scheduler lets it in at run_at (and clears the flag).
  std::optional<int64_t> run_at;
  int scheduled = 0;
  std::optional<std::string> backend;
  std::optional<std::string> error;
  std::optional<int64_t> result_size;
  std::optional<std::string> result_type;
  // An uploaded input file (multipart submit), stored under <data-dir>/inputs/<task_id>.
  std::optional<std::string> input_name;
  std::optional<std::string> input_type;
  std::optional<int64_t> input_size;
  WebhookState webhook_state = WebhookState::kNone;
  std::map<std::string, std::string> labels;  // kept in their own table, read with the task
  std::vector<Attempt> attempts;              // filled by reads that ask for details
  std::vector<WebhookDelivery> deliveries;    // likewise
};

}  // namespace ts
