#include "support/hostile.h"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <utility>

namespace tst::hostile {

namespace {

std::mutex g_seen_mu;
std::vector<std::pair<std::string, int>> g_seen;  // guarded by g_seen_mu

}  // namespace

void record(const std::string& label, int status) {
  std::lock_guard<std::mutex> lock(g_seen_mu);
  g_seen.emplace_back(label, status);
  if (std::getenv("TASKSERVER_HOSTILE_VERBOSE")) {
    std::printf("hostile: %-62s -> %s\n", label.c_str(),
                status ? std::to_string(status).c_str() : "closed");
  }
}

bool check_refused(const std::string& label, const Reply& r) {
  INFO(label);
  INFO("head: " << r.head.substr(0, 200));
  INFO("body: " << r.body.substr(0, 300));
  CHECK_FALSE(r.garbled);
  if (r.status == 0) {
    CHECK(r.closed);
    return false;
  }
  CHECK(r.status >= 400);
  CHECK(r.status < 600);
  CHECK(r.header("content-type").rfind("application/json", 0) == 0);
  // A strict parse: invalid UTF-8 in the body fails it.
  json j = json::parse(r.body, nullptr, false);
  CHECK(j.is_object());
  if (!j.is_object()) return false;
  CHECK(j.contains("error"));
  bool shaped = j.contains("error") && j["error"].is_object() && j["error"].contains("code") &&
                j["error"]["code"].is_string() && j["error"].contains("message") &&
                j["error"]["message"].is_string() && !j["error"]["code"].get<std::string>().empty();
  CHECK(shaped);
  return shaped;
}

int64_t run_cases(int port, const std::vector<Case>& cases) {
  int64_t accepted = 0;
  for (const Case& c : cases) {
    Reply r = talk(port, c.bytes);
    record(c.label, r.status);
    INFO(c.label << " got " << r.status << " " << r.body.substr(0, 200));
    if (c.finding.empty() || r.status == 0 || r.status >= 400) check_refused(c.label, r);
    if (c.finding.empty()) {
      CHECK(c.codes.count(r.status) == 1);
    } else {
      INFO("known finding: " << c.finding);
      WARN(c.codes.count(r.status) == 1);
      accepted += r.status >= 200 && r.status < 300 ? 1 : 0;
    }
  }
  return accepted;
}

void check_server_fine(Server& server, int64_t rows) {
  auto start = std::chrono::steady_clock::now();
  int status = 0;
  json h = server.get("/health", &status);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  CHECK(status == 200);
  CHECK(h.value("status", "") == "ok");
  CHECK(took < std::chrono::milliseconds(1500));
  CHECK(server.process().running());
  CHECK(server.count_rows() == rows);
}

std::string nested(int depth, const char* open, const char* close, const std::string& inner) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += open;
  s += inner;
  for (int i = 0; i < depth; ++i) s += close;
  return s;
}

std::string task_with(const std::string& fields) {
  return R"({"type":"image","payload":{"prompt":"x"},)" + fields + "}";
}

Fixture::Fixture() {
  REQUIRE(!backend.url().empty());
  REQUIRE(server.started());
  port = port_of(server.url());
}

}  // namespace tst::hostile
