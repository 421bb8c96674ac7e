#pragma once
// Parsing and validation of what clients submit: the JSON of POST /api/v1/tasks, of each task
// of a batch, and of the seed shape POST /api/v1/image/async. Pure functions of their input
// (no I/O, no pools): the fuzz targets call them directly. Thread-safe.
//
// Errors: kMalformed (400) when the bytes are not JSON or nest too deep; kInvalid (422) naming
// the field when a value is missing, of the wrong type or out of its bounds.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"
#include "store/task_store.h"

namespace ts {

struct NewTask {
  std::string type;
  std::string payload = "{}";  // JSON object text
  int priority = 5;
  std::optional<int> max_attempts;
  std::optional<int> timeout_s;
  std::optional<std::string> idempotency_key;
  std::optional<std::string> webhook_url;
  std::map<std::string, std::string> labels;
  std::optional<int64_t> run_at_ms;  // run_at as given (absolute)
  std::optional<int64_t> delay_s;    // or delay_s (from the submit on)
};

inline constexpr int kMaxJsonDepth = 64;
inline constexpr size_t kMaxBatchSize = 1000;

// Parses JSON text with a nesting limit checked before parsing (so a 10,000-deep document
// costs a scan, not a recursion). kMalformed on any failure.
StatusOr<nlohmann::json> parse_json_bounded(std::string_view text, int max_depth = kMaxJsonDepth);

// {type, payload, priority?, max_attempts?, timeout_s?, idempotency_key?, webhook_url?,
// labels?, run_at? | delay_s?}. Also seed 002's shape: task_type for type, retry_limit for
// max_attempts, and any other top-level string field (kb_id) a label.
StatusOr<NewTask> parse_task_request(std::string_view body);
StatusOr<NewTask> task_from_json(const nlohmann::json& j);
// {tasks: [...]}: every task checked; the first bad one is named by index.
StatusOr<std::vector<NewTask>> parse_batch_request(std::string_view body);
// The seed shape {prompt, ...}: the task options are taken out, the rest is the payload.
StatusOr<NewTask> parse_image_request(std::string_view body);

// The body of POST /api/v1/tasks/retry: {status?: FAILED|CANCELED, type?, labels?, limit?
// 1-1000 (default 100)}; an empty body retries up to 100 FAILED or CANCELED tasks.
inline constexpr int kMaxRetryBatch = 1000;
StatusOr<RetryFilter> parse_retry_filter(std::string_view body);

// Applies an Idempotency-Key header (nullopt when absent). A header that disagrees with the
// body's idempotency_key is an error.
Status apply_idempotency_header(NewTask& task, const std::optional<std::string>& header);

// Values of the API bounds, shared with the query parsers.
Status check_idempotency_key(const std::string& key, const std::string& field);
Status check_webhook_url(const std::string& url);
// A label within the bounds of core/task.h; `field` names it in the 422.
Status check_label(const std::string& key, const std::string& value, const std::string& field);
Status check_label_key(const std::string& key, const std::string& field);
bool is_valid_type_name(std::string_view type);

}  // namespace ts
