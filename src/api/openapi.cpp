#include "api/openapi.h"

#include <regex>

#include "core/task_fields.h"

namespace ts {
namespace {

using nlohmann::json;

json ref(const std::string& schema) { return {{"$ref", "#/components/schemas/" + schema}}; }

json json_response(const std::string& description, const std::string& schema) {
  return {{"description", description},
          {"content", {{"application/json", {{"schema", ref(schema)}}}}}};
}

json error_response(const std::string& description) { return json_response(description, "Error"); }

json nullable(json schema, bool is_nullable) {
  if (!is_nullable) return schema;
  schema["type"] = json::array({schema["type"], "null"});
  return schema;
}

json states_enum() {
  json names = json::array();
  for (TaskState s : kTaskStates) names.push_back(std::string(to_string(s)));
  return names;
}

// The schema of one field's value, from the field table.
json field_schema(const TaskField& f) {
  json s;
  switch (f.type) {
    case FieldType::kText:
      s = {{"type", "string"}};
      break;
    case FieldType::kInteger:
      s = {{"type", "integer"}};
      break;
    case FieldType::kTime:
      s = {{"type", "string"}, {"format", "date-time"}};
      break;
    case FieldType::kState:
      s = {{"type", "string"}, {"enum", states_enum()}};
      break;
    case FieldType::kJson:
      s = {{"type", "object"}};
      break;
    case FieldType::kWebhookState:
      s = {{"type", "string"}, {"enum", {"pending", "delivered", "failed"}}};
      break;
  }
  if (!f.doc.empty()) s["description"] = std::string(f.doc);
  return s;
}

// What a client may submit: the input fields of the table, with their bounds.
json task_input_schema() {
  json props = json::object();
  json required = json::array();
  for (const TaskField& f : task_fields()) {
    if (!f.input) continue;
    json s = field_schema(f);
    if (f.type == FieldType::kInteger) {
      s["minimum"] = f.min;
      s["maximum"] = f.max;
    } else if (f.type == FieldType::kText && f.max > 0) {
      s["minLength"] = f.min;
      s["maxLength"] = f.max;
    }
    if (f.name == "priority") {
      json words = {{"type", "string"}, {"enum", {"low", "normal", "high"}}};
      s = {{"oneOf", json::array({s, words})}, {"description", std::string(f.doc)}};
    } else if (f.name == "webhook_url") {
      s["format"] = "uri";
    }
    props[std::string(f.name)] = s;
    if (f.required) required.push_back(std::string(f.name));
  }
  json labels = {
      {"type", "object"},
      {"maxProperties", kMaxLabels},
      {"propertyNames",
       {{"pattern", "^[A-Za-z0-9_./-]{1," + std::to_string(kMaxLabelKeyLength) + "}$"}}},
      {"additionalProperties", {{"type", "string"}, {"maxLength", kMaxLabelValueBytes}}},
      {"description", "String pairs to find the task by: GET /api/v1/tasks?label.KEY=VALUE"}};
  props["labels"] = labels;
  props["run_at"] = {
      {"type", "string"},
      {"format", "date-time"},
      {"description",
       "RFC 3339: not dispatched before then; QUEUED outside the backlog until then"}};
  props["delay_s"] = {{"type", "integer"},
                      {"minimum", 0},
                      {"maximum", kMaxScheduleAheadS},
                      {"description", "Or: run this many seconds after the submit"}};
  props["task_type"] = {{"type", "string"}, {"description", "Seed 002's name for type"}};
  props["retry_limit"] = {{"type", "integer"},
                          {"minimum", kMinMaxAttempts},
                          {"maximum", kMaxMaxAttempts},
                          {"description", "Seed 002's name for max_attempts"}};
  // Seed 002: any other top-level string field (kb_id) is a label; other values are refused.
  return {{"type", "object"},
          {"required", required},
          {"properties", props},
          {"additionalProperties", {{"type", "string"}}}};
}

// A task as the API sends it: every shown field of the table, its groups, and what a live
// server adds.
json task_schema() {
  json props = json::object();
  json required = json::array();
  for (const FieldGroup& g : task_field_groups()) {
    json gp = json::object();
    for (const TaskField& f : task_fields()) {
      if (f.shown == Shown::kGrouped && f.group == g.name)
        gp[std::string(f.name)] = field_schema(f);
    }
    json obj = {{"type", "object"}, {"properties", gp}, {"description", std::string(g.doc)}};
    props[std::string(g.name)] = nullable(obj, g.null_when_unset);
    if (g.null_when_unset) required.push_back(std::string(g.name));
  }
  for (const TaskField& f : task_fields()) {
    if (f.shown != Shown::kAlways && f.shown != Shown::kWhenQueued) continue;
    props[std::string(f.name)] =
        nullable(field_schema(f), is_optional(f) || f.shown == Shown::kWhenQueued);
    required.push_back(std::string(f.name));
  }
  json time = {{"type", "string"}, {"format", "date-time"}};
  props["result_url"] = {{"type", json::array({"string", "null"})},
                         {"description", "Where the result is fetched once DONE"}};
  required.push_back("result_url");
  props["queue_position"] = {{"type", "integer"},
                             {"description", "While QUEUED: tasks that run before this one"}};
  props["estimated_start"] = nullable(time, true);
  props["estimated_start"]["description"] = "While QUEUED: when it may start";
  props["labels"] = {{"type", "object"},
                     {"additionalProperties", {{"type", "string"}}},
                     {"description", "The task's labels ({} when none)"}};
  required.push_back("labels");
  props["created"] = {{"type", "boolean"},
                      {"description", "In a batch's answer: false for an idempotent repeat"}};
  props["attempts"] = {
      {"type", "array"},
      {"description", "Every attempt on a backend (single-task reads)"},
      {"items",
       {{"type", "object"},
        {"required", {"number", "backend", "outcome", "error", "started_at", "duration_ms"}},
        {"properties",
         {{"number", {{"type", "integer"}}},
          {"backend", {{"type", "string"}}},
          {"outcome",
           {{"type", "string"},
            {"enum", {"done", "failed", "retry", "busy", "canceled", "interrupted"}}}},
          {"error", {{"type", json::array({"string", "null"})}}},
          {"started_at", time},
          {"duration_ms", {{"type", "integer"}}}}}}}};
  props["webhook"] = {
      {"type", "object"},
      {"description", "The webhook and its deliveries (single-task reads of a task with one)"},
      {"properties",
       {{"url", {{"type", "string"}}},
        {"state",
         {{"type", json::array({"string", "null"})},
          {"enum", {"pending", "delivered", "failed", nullptr}}}},
        {"deliveries",
         {{"type", "array"},
          {"items",
           {{"type", "object"},
            {"properties",
             {{"number", {{"type", "integer"}}},
              {"at", time},
              {"status_code", {{"type", json::array({"integer", "null"})}}},
              {"error", {{"type", json::array({"string", "null"})}}}}}}}}}}}};
  return {{"type", "object"}, {"required", required}, {"properties", props}};
}

json schemas() {
  json error = {{"type", "object"},
                {"required", {"error"}},
                {"properties",
                 {{"error",
                   {{"type", "object"},
                    {"required", {"code", "message"}},
                    {"properties",
                     {{"code", {{"type", "string"}}},
                      {"message", {{"type", "string"}}},
                      {"field", {{"type", "string"}}}}}}}}}};
  return {{"TaskInput", task_input_schema()}, {"Task", task_schema()}, {"Error", error}};
}

json operation(const std::string& method, const RouteDoc& doc) {
  json op = {{"operationId", std::string(doc.name) + "_" + method}, {"summary", doc.summary}};
  json params = json::array();
  static const std::regex kParam(R"(\{([a-z_]+)\})");
  for (std::sregex_iterator it(doc.path.begin(), doc.path.end(), kParam), end; it != end; ++it) {
    params.push_back({{"name", (*it)[1].str()},
                      {"in", "path"},
                      {"required", true},
                      {"schema", {{"type", "string"}}}});
  }
  auto query = [&](const char* name, json schema, const char* description) {
    params.push_back({{"name", name},
                      {"in", "query"},
                      {"required", false},
                      {"schema", std::move(schema)},
                      {"description", description}});
  };
  json responses;
  std::string name = doc.name;
  if (name == "submit") {
    op["requestBody"] = {{"required", true},
                         {"content",
                          {{"application/json", {{"schema", ref("TaskInput")}}},
                           {"multipart/form-data",
                            {{"schema",
                              {{"type", "object"},
                               {"properties",
                                {{"task", {{"type", "string"}}},
                                 {"file", {{"type", "string"}, {"format", "binary"}}}}}}}}}}}};
    params.push_back({{"name", "Idempotency-Key"},
                      {"in", "header"},
                      {"required", false},
                      {"schema", {{"type", "string"}}}});
    responses["202"] = json_response("Accepted and durably stored", "Task");
    responses["200"] =
        json_response("A repeat of an earlier idempotency key: the first task", "Task");
    responses["429"] = error_response("The pool's backlog is full (Retry-After)");
  } else if (name == "submit_batch") {
    op["requestBody"] = {
        {"required", true},
        {"content",
         {{"application/json",
           {{"schema",
             {{"type", "object"},
              {"properties", {{"tasks", {{"type", "array"}, {"items", ref("TaskInput")}}}}}}}}}}}};
    responses["202"] = {{"description", "All accepted"}};
  } else if (name == "image_async") {
    op["requestBody"] = {{"required", true},
                         {"content",
                          {{"application/json",
                            {{"schema",
                              {{"type", "object"},
                               {"required", {"prompt"}},
                               {"properties", {{"prompt", {{"type", "string"}}}}}}}}}}}};
    responses["202"] = json_response("Accepted", "Task");
  } else if (name == "get_task") {
    query("wait", {{"type", "integer"}, {"minimum", 0}, {"maximum", 60}},
          "Hold the request up to this many seconds until the task is final");
    responses["200"] = json_response("The task", "Task");
  } else if (name == "list_tasks") {
    query("status", {{"type", "string"}},
          "QUEUED, RUNNING (or processing), DONE, FAILED or CANCELED");
    query("type", {{"type", "string"}}, "The pool");
    query("limit", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}},
          "Page size, default 50");
    query("cursor", {{"type", "string"}}, "next_cursor of the previous page");
    query("task_id", {{"type", "string"}}, "Return this one task instead of a list");
    query("label.{key}", {{"type", "string"}},
          "Only tasks with this label (up to 4 filters); any other unknown parameter, such as "
          "seed 002's kb_id, filters by the label of its name too");
    responses["200"] = {{"description", "{tasks, next_cursor}"}};
  } else if (name == "retry") {
    responses["200"] = json_response("The task, QUEUED again with a fresh attempt budget", "Task");
    responses["409"] = error_response("The task is not FAILED or CANCELED");
    responses["429"] = error_response("The pool's backlog is full (Retry-After)");
  } else if (name == "retry_matching") {
    json label_map = {{"type", "object"}, {"additionalProperties", {{"type", "string"}}}};
    op["requestBody"] = {
        {"required", false},
        {"content",
         {{"application/json",
           {{"schema",
             {{"type", "object"},
              {"additionalProperties", false},
              {"properties",
               {{"status", {{"type", "string"}, {"enum", {"FAILED", "CANCELED"}}}},
                {"type", {{"type", "string"}}},
                {"labels", label_map},
                {"limit", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}}}}}}}}}}}};
    responses["200"] = {
        {"description",
         "{count, task_ids, skipped_backlog_full}: the tasks retried, oldest first, in one "
         "transaction"},
        {"content",
         {{"application/json",
           {{"schema",
             {{"type", "object"},
              {"properties",
               {{"count", {{"type", "integer"}}},
                {"task_ids", {{"type", "array"}, {"items", {{"type", "string"}}}}},
                {"skipped_backlog_full", {{"type", "integer"}}}}}}}}}}}};
  } else if (name == "task_events" || name == "events") {
    responses["200"] = {{"description", "text/event-stream"},
                        {"content", {{"text/event-stream", {{"schema", {{"type", "string"}}}}}}}};
    responses["503"] = error_response(
        "--max-streams streams are open (too_many_streams, "
        "Retry-After), or shutting down");
  } else if (name == "cancel") {
    responses["200"] = json_response("The canceled task", "Task");
    responses["409"] = error_response("The task is already final");
  } else if (name == "task_result" || name == "image") {
    responses["200"] = {{"description", "The result bytes"}};
    responses["409"] = error_response("The task is not DONE");
  } else if (name == "ready") {
    responses["503"] = {{"description", "Not ready; the body says why"}};
  }
  if (!responses.contains("200") && !responses.contains("202")) {
    responses["200"] = {{"description", "OK"}};
  }
  if (doc.path.find('{') != std::string::npos) responses["404"] = error_response("Unknown id");
  if (method == "post") {
    responses["400"] = error_response("Malformed JSON");
    responses["413"] = error_response("Body too large");
    responses["415"] = error_response("Unsupported content type");
    responses["422"] = error_response("A field is invalid; error.field names it");
    responses["503"] = error_response("Shutting down");
  }
  if (doc.path.rfind("/api/", 0) == 0) responses["401"] = error_response("Missing or wrong token");
  if (!params.empty()) op["parameters"] = params;
  op["responses"] = responses;
  return op;
}

}  // namespace

void RouteTable::add(const std::string& method, RouteDoc doc) {
  routes_.emplace_back(method, std::move(doc));
}

std::vector<std::pair<std::string, std::string>> RouteTable::routes() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [m, d] : routes_) out.emplace_back(m, d.path);
  return out;
}

json RouteTable::openapi(const std::string& version) const {
  json paths = json::object();
  for (const auto& [method, doc] : routes_) {
    std::string m = method;
    for (char& c : m) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    paths[doc.path][m] = operation(m, doc);
  }
  return {{"openapi", "3.1.0"},
          {"info",
           {{"title", "taskserver"},
            {"version", version},
            {"description",
             "An asynchronous task queue in front of AI inference backends: submit, poll, "
             "stream or get a webhook, fetch the result."}}},
          {"paths", paths},
          {"components",
           {{"schemas", schemas()},
            {"securitySchemes", {{"bearer", {{"type", "http"}, {"scheme", "bearer"}}}}}}}};
}

}  // namespace ts
