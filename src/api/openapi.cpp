#include "api/openapi.h"

#include <regex>

namespace ts {
namespace {

using nlohmann::json;

json ref(const std::string& schema) { return {{"$ref", "#/components/schemas/" + schema}}; }

json json_response(const std::string& description, const std::string& schema) {
  return {{"description", description},
          {"content", {{"application/json", {{"schema", ref(schema)}}}}}};
}

json error_response(const std::string& description) {
  return json_response(description, "Error");
}

json schemas() {
  json task_input = {
      {"type", "object"},
      {"required", {"type"}},
      {"properties",
       {{"type", {{"type", "string"}, {"description", "The pool: image, transcribe, or one from the config file"}}},
        {"payload", {{"type", "object"}, {"description", "Forwarded to the backend as the request body"}}},
        {"priority", {{"oneOf", json::array({{{"type", "integer"}, {"minimum", 0}, {"maximum", 9}},
                                             {{"type", "string"}, {"enum", {"low", "normal", "high"}}}})}}},
        {"max_attempts", {{"type", "integer"}, {"minimum", 1}, {"maximum", 100}}},
        {"timeout_s", {{"type", "integer"}, {"minimum", 1}, {"maximum", 86400}}},
        {"idempotency_key", {{"type", "string"}, {"maxLength", 255}}},
        {"webhook_url", {{"type", "string"}, {"format", "uri"}}}}}};
  json nullable_time = {{"type", json::array({"string", "null"})}, {"format", "date-time"}};
  json task = {
      {"type", "object"},
      {"properties",
       {{"task_id", {{"type", "string"}}},
        {"type", {{"type", "string"}}},
        {"status", {{"type", "string"}, {"enum", {"QUEUED", "RUNNING", "DONE", "FAILED", "CANCELED"}}}},
        {"priority", {{"type", "integer"}}},
        {"attempt", {{"type", "integer"}}},
        {"max_attempts", {{"type", "integer"}}},
        {"created_at", {{"type", "string"}, {"format", "date-time"}}},
        {"started_at", nullable_time},
        {"finished_at", nullable_time},
        {"next_attempt_at", nullable_time},
        {"backend", {{"type", json::array({"string", "null"})}}},
        {"error", {{"type", json::array({"string", "null"})}}},
        {"result_url", {{"type", json::array({"string", "null"})}}},
        {"queue_position", {{"type", "integer"}}},
        {"estimated_start", nullable_time},
        {"payload", {{"type", "object"}}},
        {"attempts", {{"type", "array"}, {"items", {{"type", "object"}}}}}}}};
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
  return {{"TaskInput", task_input}, {"Task", task}, {"Error", error}};
}

json operation(const std::string& method, const RouteDoc& doc) {
  json op = {{"operationId", std::string(doc.name) + "_" + method}, {"summary", doc.summary}};
  json params = json::array();
  static const std::regex kParam(R"(\{([a-z_]+)\})");
  for (std::sregex_iterator it(doc.path.begin(), doc.path.end(), kParam), end; it != end; ++it) {
    params.push_back({{"name", (*it)[1].str()}, {"in", "path"}, {"required", true},
                      {"schema", {{"type", "string"}}}});
  }
  auto query = [&](const char* name, json schema, const char* description) {
    params.push_back({{"name", name}, {"in", "query"}, {"required", false},
                      {"schema", std::move(schema)}, {"description", description}});
  };
  json responses;
  std::string name = doc.name;
  if (name == "submit") {
    op["requestBody"] = {{"required", true},
                         {"content", {{"application/json", {{"schema", ref("TaskInput")}}},
                                      {"multipart/form-data", {{"schema", {{"type", "object"},
                                        {"properties", {{"task", {{"type", "string"}}},
                                                        {"file", {{"type", "string"}, {"format", "binary"}}}}}}}}}}}};
    params.push_back({{"name", "Idempotency-Key"}, {"in", "header"}, {"required", false},
                      {"schema", {{"type", "string"}}}});
    responses["202"] = json_response("Accepted and durably stored", "Task");
    responses["200"] = json_response("A repeat of an earlier idempotency key: the first task", "Task");
    responses["429"] = error_response("The pool's backlog is full (Retry-After)");
  } else if (name == "submit_batch") {
    op["requestBody"] = {{"required", true},
                         {"content", {{"application/json", {{"schema", {{"type", "object"},
                           {"properties", {{"tasks", {{"type", "array"}, {"items", ref("TaskInput")}}}}}}}}}}}};
    responses["202"] = {{"description", "All accepted"}};
  } else if (name == "image_async") {
    op["requestBody"] = {{"required", true},
                         {"content", {{"application/json", {{"schema", {{"type", "object"},
                           {"required", {"prompt"}}, {"properties", {{"prompt", {{"type", "string"}}}}}}}}}}}};
    responses["202"] = json_response("Accepted", "Task");
  } else if (name == "get_task") {
    query("wait", {{"type", "integer"}, {"minimum", 0}, {"maximum", 60}},
          "Hold the request up to this many seconds until the task is final");
    responses["200"] = json_response("The task", "Task");
  } else if (name == "list_tasks") {
    query("status", {{"type", "string"}}, "QUEUED, RUNNING, DONE, FAILED or CANCELED");
    query("type", {{"type", "string"}}, "The pool");
    query("limit", {{"type", "integer"}, {"minimum", 1}, {"maximum", 1000}}, "Page size, default 50");
    query("cursor", {{"type", "string"}}, "next_cursor of the previous page");
    query("task_id", {{"type", "string"}}, "Return this one task instead of a list");
    responses["200"] = {{"description", "{tasks, next_cursor}"}};
  } else if (name == "task_events" || name == "events") {
    responses["200"] = {{"description", "text/event-stream"},
                        {"content", {{"text/event-stream", {{"schema", {{"type", "string"}}}}}}}};
    responses["503"] = error_response("--max-streams streams are open (too_many_streams, "
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
