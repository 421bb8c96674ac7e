#pragma once
// MockBackend: a real HTTP server that behaves like a GPU inference backend, for tests, demos
// and benchmarks (`taskserver mock-backend`, and three of them inside `taskserver demo`).
//
//   POST /v1/images/generations     {"prompt",...} → {"created","data":[{"b64_json": PNG}]}
//   POST /v1/audio/transcriptions   multipart `file` → {"text": ...}
//   POST <any other path>           → {"ok":true,"echo":<body>}
//   GET  /health                    200, or 503 after POST /admin/health?ok=false
//   GET  /admin/stats               served, in_flight, peak_in_flight, aborted, prompts...
//
// Any number of requests run at once; the peak is recorded so tests can check that taskserver
// kept to the backend's slots. Faults on demand: --fail-rate (answer 500), --hang-rate (never
// answer), --status-code (answer that code to every task request). A client that hangs up
// during the latency is noticed and counted as aborted.
//
// Thread-safe: start() and stop() from one owner; handlers run on the server's threads.

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "core/mutex.h"
#include "http/server.h"

namespace ts {

struct MockBackendOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  int latency_ms = 50;
  int latency_jitter_ms = 0;
  double fail_rate = 0;   // share of task requests answered with 500
  double hang_rate = 0;   // share of task requests never answered
  int status_code = 0;    // when set, every task request gets this status
  int retry_after_s = 1;  // sent with 429/503
  uint64_t seed = 0;      // 0: random
  int threads = 64;
  int image_size = 64;
};

class MockBackend {
 public:
  explicit MockBackend(MockBackendOptions options);
  ~MockBackend();
  // Binds and starts serving on a thread of its own. Returns the bound port, or -1.
  int start(std::string* error);
  void stop();
  int port() const { return port_; }
  std::string url() const;
  // GET /admin/stats as JSON text.
  std::string stats_json() const;
  void set_healthy(bool ok) { healthy_.store(ok); }

 private:
  void install_routes();
  // Sleeps for the latency; false when the client hung up first (or the server stops).
  bool wait_latency(const httplib::Request& req, int ms);
  double random01();

  MockBackendOptions options_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
  int port_ = -1;
  std::atomic<bool> healthy_{true};
  std::atomic<bool> stopping_{false};

  mutable Mutex mu_;
  std::mt19937_64 rng_ GUARDED_BY(mu_);
  int64_t requests_ GUARDED_BY(mu_) = 0;
  int64_t served_ GUARDED_BY(mu_) = 0;
  int64_t failed_ GUARDED_BY(mu_) = 0;  // injected failures
  int64_t hung_ GUARDED_BY(mu_) = 0;
  int64_t aborted_ GUARDED_BY(mu_) = 0;  // clients that hung up first
  int in_flight_ GUARDED_BY(mu_) = 0;
  int peak_in_flight_ GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> prompts_ GUARDED_BY(mu_);  // times each prompt was served
};

}  // namespace ts
