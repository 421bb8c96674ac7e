#include "cli/client.h"

#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "http/client.h"

namespace ts {
namespace {

using nlohmann::json;

struct Http {
  std::unique_ptr<httplib::Client> cli;
  std::string prefix;
  httplib::Headers headers;
};

std::optional<Http> connect(const ClientOptions& c) {
  auto url = parse_url(c.server);
  if (!url) {
    std::cerr << "taskserver: --server must be an http(s) URL, not " << c.server << "\n";
    return std::nullopt;
  }
  Http h;
  h.cli = make_client(*url);
  h.cli->set_connection_timeout(5, 0);
  h.cli->set_read_timeout(90, 0);
  h.cli->set_keep_alive(true);
  h.prefix = url->path;
  if (!c.token.empty()) h.headers.emplace("Authorization", "Bearer " + c.token);
  return h;
}

// Prints the server's error, returns kExitError.
int report(const httplib::Result& res, const std::string& what) {
  if (!res) {
    std::cerr << "taskserver: " << what << ": cannot reach the server ("
              << httplib::to_string(res.error()) << ")\n";
    return kExitError;
  }
  json j = json::parse(res->body, nullptr, false);
  std::string msg = res->body;
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    msg = j["error"].value("message", res->body);
  }
  std::cerr << "taskserver: " << what << ": HTTP " << res->status << ": " << msg << "\n";
  return kExitError;
}

int exit_code_for(const std::string& status) {
  if (status == "DONE") return kExitDone;
  if (status == "FAILED") return kExitFailed;
  if (status == "CANCELED") return kExitCanceled;
  return kExitTimeout;
}

bool is_final(const std::string& status) {
  return status == "DONE" || status == "FAILED" || status == "CANCELED";
}

void print_task(const json& t, bool as_json) {
  if (as_json) {
    std::cout << t.dump(2) << "\n";
    return;
  }
  std::cout << t.value("task_id", "") << "  " << t.value("status", "")
            << "  type=" << t.value("type", "") << "  attempt=" << t.value("attempt", 0) << "/"
            << t.value("max_attempts", 0);
  if (t.contains("queue_position") && !t["queue_position"].is_null()) {
    std::cout << "  position=" << t["queue_position"].get<int64_t>();
  }
  if (t.contains("backend") && t["backend"].is_string()) {
    std::cout << "  backend=" << t["backend"].get<std::string>();
  }
  if (t.contains("result_url") && t["result_url"].is_string()) {
    std::cout << "  result=" << t["result_url"].get<std::string>();
  }
  if (t.contains("error") && t["error"].is_string()) {
    std::cout << "\n  error: " << t["error"].get<std::string>();
  }
  std::cout << "\n";
}

int wait_for(Http& h, const ClientOptions& c, const std::string& id) {
  auto start = std::chrono::steady_clock::now();
  bool tty = isatty(STDERR_FILENO) && !c.quiet;
  for (;;) {
    int left = 30;
    if (c.timeout_s > 0) {
      int elapsed = static_cast<int>(
          std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start)
              .count());
      left = std::min(30, c.timeout_s - elapsed);
      if (left <= 0) {
        if (tty) std::cerr << "\n";
        std::cerr << "taskserver: " << id << " is not final after " << c.timeout_s << " s\n";
        return kExitTimeout;
      }
    }
    auto res = h.cli->Get(
        (h.prefix + "/api/v1/tasks/" + id + "?wait=" + std::to_string(left)).c_str(), h.headers);
    if (!res || res->status != 200) {
      if (tty) std::cerr << "\n";
      return report(res, "wait " + id);
    }
    json t = json::parse(res->body, nullptr, false);
    std::string status = t.value("status", "");
    if (!c.quiet) {
      std::string line = id + "  " + status;
      if (t.contains("queue_position") && t["queue_position"].is_number()) {
        line += "  position " + std::to_string(t["queue_position"].get<int64_t>());
      }
      if (status == "RUNNING" && t["backend"].is_string()) {
        line += "  on " + t["backend"].get<std::string>();
      }
      line += "  attempt " + std::to_string(t.value("attempt", 0));
      if (tty) {
        std::cerr << "\r\033[K" << line << std::flush;
      } else if (is_final(status)) {
        std::cerr << line << "\n";
      }
    }
    if (is_final(status)) {
      if (tty) std::cerr << "\n";
      if (c.json)
        std::cout << t.dump(2) << "\n";
      else if (status == "DONE")
        std::cout << t.value("result_url", "") << "\n";
      else if (t["error"].is_string())
        std::cerr << "error: " << t["error"].get<std::string>() << "\n";
      return exit_code_for(status);
    }
  }
}

int submit(Http& h, const ClientOptions& c) {
  json task = {{"type", c.type}};
  json payload = json::object();
  if (!c.payload.empty()) {
    payload = json::parse(c.payload, nullptr, false);
    if (!payload.is_object()) {
      std::cerr << "taskserver: --payload must be a JSON object\n";
      return kExitError;
    }
  }
  if (!c.prompt.empty()) payload["prompt"] = c.prompt;
  task["payload"] = payload;
  if (!c.priority.empty()) {
    bool digits = c.priority.find_first_not_of("0123456789") == std::string::npos;
    task["priority"] = digits ? json(std::stoi(c.priority)) : json(c.priority);
  }
  if (!c.idempotency_key.empty()) task["idempotency_key"] = c.idempotency_key;
  if (!c.webhook_url.empty()) task["webhook_url"] = c.webhook_url;
  httplib::Result res{nullptr, httplib::Error::Unknown};
  std::string path = h.prefix + "/api/v1/tasks";
  if (!c.file.empty()) {
    std::ifstream in(c.file, std::ios::binary);
    if (!in) {
      std::cerr << "taskserver: cannot read " << c.file << "\n";
      return kExitError;
    }
    std::ostringstream data;
    data << in.rdbuf();
    std::string name = c.file.substr(c.file.find_last_of('/') + 1);
    httplib::MultipartFormDataItems items = {
        {"task", task.dump(), "", "application/json"},
        {"file", data.str(), name, "application/octet-stream"}};
    res = h.cli->Post(path.c_str(), h.headers, items);
  } else {
    res = h.cli->Post(path.c_str(), h.headers, task.dump(), "application/json");
  }
  if (!res || (res->status != 202 && res->status != 200)) return report(res, "submit");
  json t = json::parse(res->body, nullptr, false);
  std::string id = t.value("task_id", "");
  if (c.json && !c.wait)
    std::cout << t.dump(2) << "\n";
  else
    std::cout << id << "\n";
  std::cout.flush();
  if (!c.wait) return kExitDone;
  return wait_for(h, c, id);
}

}  // namespace

int run_client(ClientVerb verb, const ClientOptions& c) {
  auto h = connect(c);
  if (!h) return kExitError;
  switch (verb) {
    case ClientVerb::kSubmit:
      return submit(*h, c);
    case ClientVerb::kWait:
      return wait_for(*h, c, c.task_id);
    case ClientVerb::kStatus: {
      auto res = h->cli->Get((h->prefix + "/api/v1/tasks/" + c.task_id).c_str(), h->headers);
      if (!res || res->status != 200) return report(res, "status " + c.task_id);
      print_task(json::parse(res->body, nullptr, false), c.json);
      return kExitDone;
    }
    case ClientVerb::kCancel: {
      auto res = h->cli->Delete((h->prefix + "/api/v1/tasks/" + c.task_id).c_str(), h->headers);
      if (res && res->status == 409) {
        report(res, "cancel " + c.task_id);
        return kExitAlreadyFinal;
      }
      if (!res || res->status != 200) return report(res, "cancel " + c.task_id);
      print_task(json::parse(res->body, nullptr, false), c.json);
      return kExitDone;
    }
    case ClientVerb::kList: {
      httplib::Params params = {{"limit", std::to_string(c.limit)}};
      if (!c.status.empty()) params.emplace("status", c.status);
      if (!c.list_type.empty()) params.emplace("type", c.list_type);
      auto res = h->cli->Get((h->prefix + "/api/v1/tasks").c_str(), params, h->headers);
      if (!res || res->status != 200) return report(res, "list");
      json page = json::parse(res->body, nullptr, false);
      if (c.json) {
        std::cout << page.dump(2) << "\n";
      } else {
        for (const json& t : page["tasks"]) {
          std::printf("%s  %-8s  %-10s  p%d  %s\n", t.value("task_id", "").c_str(),
                      t.value("status", "").c_str(), t.value("type", "").c_str(),
                      t.value("priority", 0), t.value("created_at", "").c_str());
        }
      }
      return kExitDone;
    }
    default:
      return kExitError;
  }
}

}  // namespace ts
