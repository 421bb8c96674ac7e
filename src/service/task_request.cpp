#include "service/task_request.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cassert>
#include <cctype>

#include "core/task.h"
#include "core/task_fields.h"
#include "core/time_format.h"
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
  if (const json* v = field("labels")) {
    if (!v->is_object()) {
      return Status::Invalid("labels", "labels must be an object of string keys and values");
    }
    if (v->size() > kMaxLabels) {
      return Status::Invalid("labels",
                             "a task carries at most " + std::to_string(kMaxLabels) + " labels");
    }
    for (auto it = v->begin(); it != v->end(); ++it) {
      std::string name = "labels." + it.key();
      Status st = check_label_key(it.key(), name);
      if (!st.ok()) return st;
      if (!it->is_string()) return Status::Invalid(name, name + " must be a string");
      st = check_label(it.key(), it->get<std::string>(), name);
      if (!st.ok()) return st;
      t.labels[it.key()] = it->get<std::string>();
    }
  }
  const json* run_at = field("run_at");
  const json* delay_s = field("delay_s");
  if (run_at && delay_s) {
    return Status::Invalid("delay_s", "give run_at or delay_s, not both");
  }
  if (run_at) {
    auto ms = run_at->is_string() ? parse_rfc3339_ms(run_at->get<std::string>()) : std::nullopt;
    if (!ms) {
      return Status::Invalid("run_at",
                             "run_at must be an RFC 3339 time such as 2026-12-08T09:30:00Z");
    }
    t.run_at_ms = *ms;
  }
  if (delay_s) {
    auto n = bounded_int(*delay_s, "delay_s", 0, static_cast<int>(kMaxScheduleAheadS));
    if (!n.ok()) return n.status();
    t.delay_s = *n;
  }
  return Status::Ok();
}

// Keys a task object may hold besides the input fields of the table.
bool is_extra_key(const std::string& key) {
  return key == "labels" || key == "run_at" || key == "delay_s";
}

// Seed 002's names for two fields: task_type is type, retry_limit is max_attempts.
Status apply_seed_aliases(json& j) {
  for (auto [alias, name] : {std::pair<const char*, const char*>{"task_type", "type"},
                             std::pair<const char*, const char*>{"retry_limit", "max_attempts"}}) {
    auto it = j.find(alias);
    if (it == j.end()) continue;
    if (j.contains(name)) {
      return Status::Invalid(alias, std::string("give ") + name + " or " + alias + ", not both");
    }
    j[name] = *it;
    j.erase(alias);
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

Status check_label_key(const std::string& key, const std::string& field) {
  bool ok = !key.empty() && key.size() <= kMaxLabelKeyLength;
  for (char c : key) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '.' || c == '-' || c == '/');
  }
  if (!ok) {
    return Status::Invalid(field.empty() ? "labels" : field,
                           "a label key is 1-" + std::to_string(kMaxLabelKeyLength) +
                               " characters of a-z, A-Z, 0-9, _ . - and /");
  }
  return Status::Ok();
}

Status check_label(const std::string& key, const std::string& value, const std::string& field) {
  Status st = check_label_key(key, field);
  if (!st.ok()) return st;
  if (value.size() > kMaxLabelValueBytes) {
    return Status::Invalid(
        field, field + " may be at most " + std::to_string(kMaxLabelValueBytes) + " bytes");
  }
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      return Status::Invalid(field, field + " must not contain control characters");
    }
  }
  return Status::Ok();
}

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

StatusOr<NewTask> task_from_json(const json& given) {
  if (!given.is_object()) return Status::Invalid("body", "a task must be a JSON object");
  json j = given;
  Status aliased = apply_seed_aliases(j);
  if (!aliased.ok()) return aliased;
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
    if (find_input_field(it.key()) || is_extra_key(it.key())) continue;
    // Seed 002: another top-level string field (kb_id) is a label.
    if (it->is_string() && !it.key().empty()) {
      if (t.labels.count(it.key())) {
        return Status::Invalid(it.key(), it.key() + " is given both as a field and in labels");
      }
      Status label = check_label(it.key(), it->get<std::string>(), it.key());
      if (!label.ok()) return label;
      t.labels[it.key()] = it->get<std::string>();
      if (t.labels.size() > kMaxLabels) {
        return Status::Invalid(it.key(), "a task carries at most " + std::to_string(kMaxLabels) +
                                             " labels (top-level string fields count)");
      }
      continue;
    }
    // A 422 names its field; a key that is the empty string has no name to give.
    return Status::Invalid(
        it.key().empty() ? "body" : it.key(),
        "unknown field \"" + it.key() + "\" (backend parameters go inside payload)");
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
  for (const char* extra : {"labels", "run_at", "delay_s"}) j.erase(extra);
  t.payload = j.dump();
  return t;
}

StatusOr<RetryFilter> parse_retry_filter(std::string_view body) {
  RetryFilter f;
  bool blank = body.find_first_not_of(" \t\r\n") == std::string_view::npos;
  if (blank) return f;
  auto parsed = parse_json_bounded(body);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object()) return Status::Invalid("body", "the body must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = *it;
    if (v.is_null()) continue;
    if (k == "status") {
      std::string name = v.is_string() ? v.get<std::string>() : "";
      for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      auto state = parse_task_state(name);
      if (!state || !can_retry(*state)) {
        return Status::Invalid("status", "status must be FAILED or CANCELED");
      }
      f.status = *state;
    } else if (k == "type") {
      if (!v.is_string() || !is_valid_type_name(v.get<std::string>())) {
        return Status::Invalid("type", "type must name a pool");
      }
      f.type = v.get<std::string>();
    } else if (k == "labels") {
      if (!v.is_object() || v.size() > kMaxLabels) {
        return Status::Invalid("labels", "labels must be an object of at most " +
                                             std::to_string(kMaxLabels) + " string pairs");
      }
      for (auto l = v.begin(); l != v.end(); ++l) {
        std::string name = "labels." + l.key();
        if (!l->is_string()) return Status::Invalid(name, name + " must be a string");
        Status st = check_label(l.key(), l->get<std::string>(), name);
        if (!st.ok()) return st;
        f.labels.emplace_back(l.key(), l->get<std::string>());
      }
    } else if (k == "limit") {
      auto n = bounded_int(v, "limit", 1, kMaxRetryBatch);
      if (!n.ok()) return n.status();
      f.limit = *n;
    } else {
      return Status::Invalid(k.empty() ? "body" : k,
                             "unknown field \"" + k + "\" (status, type, labels, limit)");
    }
  }
  return f;
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
