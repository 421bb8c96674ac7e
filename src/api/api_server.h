#pragma once
// ApiServer: the HTTP routes of DESIGN.md over TaskService. JSON in, JSON out; every error is
// {"error":{"code","message"}} with the HTTP code of its Status. Also serves the dashboard,
// the health and readiness checks, the metrics and the OpenAPI description.
//
// Thread-safe: handlers run on the HTTP server's thread pool; the ApiServer itself holds only
// configuration after install().

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "http/server.h"
#include "service/task_service.h"
#include "worker/worker_pool.h"

namespace ts {

class Metrics;

struct ApiOptions {
  size_t max_body = 1 << 20;            // JSON bodies; 413 beyond
  size_t max_upload = 100u << 20;       // multipart bodies with an input file
  std::vector<std::string> api_tokens;  // empty: no auth
  int sse_heartbeat_s = 15;
  int max_streams = 96;  // SSE streams open at once (each holds a serving thread); 503 beyond
  int max_wait_s = 60;
  std::string version;
};

// Read-only views of the running server that the API reports.
struct ServerView {
  std::function<std::vector<PoolStats>()> pools;
  std::function<Status()> store_writable;
  std::function<int64_t()> store_memory_bytes;  // may be empty
  int64_t started_at_ms = 0;
};

struct ApiContext;

class ApiServer {
 public:
  ApiServer(ApiOptions options, TaskService& service, ServerView view, Metrics& metrics,
            const BlobStore& inputs);
  ~ApiServer();
  // Registers every route and handler on `server`: the route groups of src/api/*_routes.cpp.
  void install(HttpServer& server);

 private:
  std::shared_ptr<ApiContext> ctx_;
};

}  // namespace ts
