#include "service/task_request.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cassert>

#include "core/task.h"
#include "core/task_fields.h"
#include "core/url.h"

namespace ts {
namespace {

using nlohmann::json;

// The deepest nesting of arrays and objects in `text`, scanning strings correctly; stops
// counting once past `limit`.
int nesting_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
      if (deepest > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

StatusOr<int> bounded_int(const json& v, const std::string& field, int lo, int hi) {
  auto out_of_bounds = [&] {
    return Status::Invalid(field, field + " must be an integer from " + std::to_string(lo) +
                                      " to " + std::to_string(hi));
  };
  if (v.is_number_unsigned()) {
    uint64_t n = v.get<uint64_t>();
    if (n < static_cast<uint64_t>(std::max(lo, 0)) || n > static_cast<uint64_t>(hi)) {
      return out_of_bounds();
    }
    return static_cast<int>(n);
  }
  if (v.is_number_integer()) {
    int64_t n = v.get<int64_t>();
    if (n < lo || n > hi) return out_of_bounds();
    return static_cast<int>(n);
  }
  if (v.is_number_float()) {
    // 3.0 is 3; 2.5, 1e300 and the like are not integers of the range.
    double d = v.get<double>();
    if (d >= lo && d <= hi && d == static_cast<double>(static_cast<int>(d))) {
      return static_cast<int>(d);
    }
  }
  return out_of_bounds();
}

StatusOr<int> bounded_field(const json& v, std::string_view name);

StatusOr<int> parse_priority(const json& v) {
  if (v.is_string()) {
    if (auto p = priority_from_word(v.get<std::string>())) return *p;
    return Status::Invalid("priority",
                           "priority must be an integer 0-9 or one of low, normal, high");
  }
  return bounded_field(v, "priority");
}

// The bounds of an input field, from the field table.
const TaskField& input_field(std::string_view name) {
  const TaskField* f = find_input_field(name);
  assert(f != nullptr);
  return *f;
}

StatusOr<int> bounded_field(const json& v, std::string_view name) {
  const TaskField& f = input_field(name);
  return bounded_int(v, std::string(name), static_cast<int>(f.min), static_cast<int>(f.max));
}

// Reads the task options common to both shapes out of `j`: every input of the field table
// but type and payload, which each shape places itself.
Status read_options(const json& j, NewTask& t) {
  auto field = [&](const char* name) -> const json* {
    auto it = j.find(name);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  };
  if (const json* v = field("priority")) {
    auto p = parse_priority(*v);
    if (!p.ok()) return p.status();
    t.priority = *p;
  }
  if (const json* v = field("max_attempts")) {
    auto n = bounded_field(*v, "max_attempts");
    if (!n.ok()) return n.status();
    t.max_attempts = *n;
  }
  if (const json* v = field("timeout_s")) {
    auto n = bounded_field(*v, "timeout_s");
    if (!n.ok()) return n.status();
    t.timeout_s = *n;
  }
  if (const json* v = field("idempotency_key")) {
    if (!v->is_string()) {
      return Status::Invalid("idempotency_key", "idempotency_key must be a string");
    }
    Status st = check_idempotency_key(v->get<std::string>(), "idempotency_key");
    if (!st.ok()) return st;
    t.idempotency_key = v->get<std::string>();
  }
  if (const json* v = field("webhook_url")) {
    if (!v->is_string()) return Status::Invalid("webhook_url", "webhook_url must be a string");
    Status st = check_webhook_url(v->get<std::string>());
    if (!st.ok()) return st;
    t.webhook_url = v->get<std::string>();
  }
  return Status::Ok();
}

// Image backends need a prompt: without one the task could only fail at the backend.
Status check_image_payload(const json& payload, const std::string& field) {
  auto prompt = payload.find("prompt");
  if (prompt == payload.end() || !prompt->is_string() || prompt->get<std::string>().empty()) {
    return Status::Invalid(field, field + " (a non-empty string) is required");
  }
  return Status::Ok();
}

}  // namespace

bool is_valid_type_name(std::string_view type) {
  const TaskField& f = input_field("type");
  if (type.size() < static_cast<size_t>(f.min) || type.size() > static_cast<size_t>(f.max)) {
    return false;
  }
  for (char c : type) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status check_idempotency_key(const std::string& key, const std::string& field) {
  const TaskField& f = input_field("idempotency_key");
  if (key.size() < static_cast<size_t>(f.min) || key.size() > static_cast<size_t>(f.max)) {
    return Status::Invalid(field, field + " must be " + std::to_string(f.min) + " to " +
                                      std::to_string(f.max) + " bytes");
  }
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) {
      return Status::Invalid(field, field + " must not contain control characters");
    }
  }
  return Status::Ok();
}

Status check_webhook_url(const std::string& url) {
  if (url.size() > static_cast<size_t>(input_field("webhook_url").max) || !parse_url(url)) {
    return Status::Invalid("webhook_url",
                           "webhook_url must be an absolute http:// or https:// URL");
  }
  return Status::Ok();
}

StatusOr<json> parse_json_bounded(std::string_view text, int max_depth) {
  if (nesting_depth(text, max_depth) > max_depth) {
    return Status::Malformed("JSON nests deeper than " + std::to_string(max_depth) + " levels");
  }
  // nlohmann's lexer takes a NUL byte for the end of the input, so "{...}\0junk" would pass
  // with the junk ignored. A raw NUL is never valid JSON (in a string it must be escaped).
  if (text.find('\0') != std::string_view::npos) {
    return Status::Malformed("the body is not valid JSON (it holds a NUL byte)");
  }
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::Malformed("the body is not valid JSON (UTF-8)");
  return j;
}

StatusOr<NewTask> task_from_json(const json& j) {
  if (!j.is_object()) return Status::Invalid("body", "a task must be a JSON object");
  NewTask t;
  auto type = j.find("type");
  if (type == j.end() || !type->is_string()) {
    return Status::Invalid("type", "type (a string naming the pool) is required");
  }
  t.type = type->get<std::string>();
  if (!is_valid_type_name(t.type)) {
    return Status::Invalid("type", "type must be 1-64 characters of a-z, 0-9, _ and -");
  }
  auto payload = j.find("payload");
  if (payload != j.end() && !payload->is_null()) {
    if (!payload->is_object()) return Status::Invalid("payload", "payload must be a JSON object");
    t.payload = payload->dump();
  }
  if (t.type == "image") {
    Status st =
        check_image_payload(payload == j.end() ? json::object() : *payload, "payload.prompt");
    if (!st.ok()) return st;
  }
  Status st = read_options(j, t);
  if (!st.ok()) return st;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!find_input_field(it.key())) {
      // A 422 names its field; a key that is the empty string has no name to give.
      return Status::Invalid(
          it.key().empty() ? "body" : it.key(),
          "unknown field \"" + it.key() + "\" (backend parameters go inside payload)");
    }
  }
  return t;
}

StatusOr<NewTask> parse_task_request(std::string_view body) {
  auto j = parse_json_bounded(body);
  if (!j.ok()) return j.status();
  return task_from_json(*j);
}

StatusOr<std::vector<NewTask>> parse_batch_request(std::string_view body) {
  auto j = parse_json_bounded(body);
  if (!j.ok()) return j.status();
  if (!j->is_object() || !j->contains("tasks") || !(*j)["tasks"].is_array()) {
    return Status::Invalid("tasks", "the body must be {\"tasks\": [...]}");
  }
  const json& tasks = (*j)["tasks"];
  if (tasks.empty() || tasks.size() > kMaxBatchSize) {
    return Status::Invalid("tasks",
                           "a batch holds 1 to " + std::to_string(kMaxBatchSize) + " tasks");
  }
  std::vector<NewTask> out;
  out.reserve(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    auto t = task_from_json(tasks[i]);
    if (!t.ok()) {
      const Status& s = t.status();
      std::string field = "tasks[" + std::to_string(i) + "]." + s.field();
      return Status(s.code(), s.slug(), "tasks[" + std::to_string(i) + "]: " + s.message(), field);
    }
    out.push_back(std::move(*t));
  }
  return out;
}

StatusOr<NewTask> parse_image_request(std::string_view body) {
  auto parsed = parse_json_bounded(body);
  if (!parsed.ok()) return parsed.status();
  json& j = *parsed;
  if (!j.is_object()) return Status::Invalid("body", "the body must be a JSON object");
  NewTask t;
  t.type = "image";
  Status st = check_image_payload(j, "prompt");
  if (!st.ok()) return st;
  st = read_options(j, t);
  if (!st.ok()) return st;
  // The task options are taken out; what is left is the payload.
  for (const TaskField& f : task_fields()) {
    if (f.input && f.name != "type" && f.name != "payload") j.erase(std::string(f.name));
  }
  t.payload = j.dump();
  return t;
}

Status apply_idempotency_header(NewTask& task, const std::optional<std::string>& header) {
  if (!header) return Status::Ok();
  Status st = check_idempotency_key(*header, "Idempotency-Key");
  if (!st.ok()) return st;
  if (task.idempotency_key && *task.idempotency_key != *header) {
    return Status::Invalid("Idempotency-Key",
                           "the Idempotency-Key header and the body's idempotency_key differ");
  }
  task.idempotency_key = *header;
  return Status::Ok();
}

}  // namespace ts
