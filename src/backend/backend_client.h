#pragma once
// BackendCall: one HTTP request from a worker to a backend, abortable from another thread
// (cancellation, shutdown, the attempt's deadline). probe_health(): one active health check.
//
// A BackendCall is used by one worker for one request; abort() is thread-safe and may come
// before, during or after run(). The answer is streamed: a 2xx body goes to the request's sink
// as it arrives (the worker's ResultWriter), so memory stays bounded by a chunk whatever the
// answer's size; an upload is streamed from its file the same way. BackendConnections keeps a
// worker's connections open between its calls (keep-alive); a call that ends in an error or
// an abort drops its connection, so a broken one is never reused.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/mutex.h"
#include "core/url.h"

namespace httplib {
class Client;
}

namespace ts {

struct InputFile {
  std::string path;      // on disk
  std::string filename;  // as the client named it
  std::string content_type;
};

// Receives a 2xx answer's bytes in order; false stops the call (see BackendRequest::sink).
using AnswerSink = std::function<bool(std::string_view bytes)>;

struct BackendRequest {
  std::string base_url;           // e.g. "http://127.0.0.1:9001" (may carry a path prefix)
  std::string path;               // e.g. "/v1/images/generations"
  std::string body;               // the task's payload, JSON
  std::optional<InputFile> file;  // sent as multipart: `file` plus the payload's fields
  int64_t timeout_ms = 60'000;
  int64_t connect_timeout_ms = 5'000;
  size_t max_answer_bytes = 128u << 20;  // a longer answer fails the attempt (kBadRequest)
  // Where a 2xx answer goes; without one it is kept in BackendResponse::body. A sink that
  // refuses bytes ends the call with kBadRequest and `sink_error` as the reason.
  AnswerSink sink;
  std::function<std::string()> sink_error;
};

enum class CallResult {
  kOk,           // 2xx
  kClientError,  // 4xx other than 429
  kServerError,  // 5xx other than 503
  kBusy,         // 429 or 503
  kConnectError,
  kTimeout,
  kAborted,     // abort() for cancel or shutdown
  kBadRequest,  // no usable exchange: bad URL, unreadable input file, answer over the limit
};

enum class AbortReason { kNone, kCanceled, kShutdown, kTimeout };

struct BackendResponse {
  CallResult result = CallResult::kConnectError;
  int http_status = 0;
  std::string body;
  std::string content_type;
  int64_t retry_after_ms = 0;
  std::string error;  // human-readable, for the attempt list
};

// The open connections of one worker, one per backend origin. Not thread-safe: one worker's.
class BackendConnections {
 public:
  BackendConnections();
  ~BackendConnections();
  // The client for `url`'s origin, opened if there is none.
  httplib::Client& client_for(const Url& url);
  // Forgets the origin's client (its connection closes).
  void drop(const Url& url);

 private:
  std::map<std::string, std::unique_ptr<httplib::Client>> clients_;
};

class BackendCall {
 public:
  BackendCall();
  ~BackendCall();
  // With `connections`, the call reuses (and leaves open) the worker's connection to the
  // backend; without, it opens one of its own for this call.
  BackendResponse run(const BackendRequest& request, BackendConnections* connections = nullptr);
  void abort(AbortReason reason);
  AbortReason abort_reason() const { return reason_.load(); }

 private:
  std::atomic<AbortReason> reason_{AbortReason::kNone};
  Mutex mu_;
  httplib::Client* client_ GUARDED_BY(mu_) = nullptr;  // set while run() is in its request
};

struct ProbeResult {
  bool ok = false;
  std::string error;
};
ProbeResult probe_health(const std::string& base_url, const std::string& path, int timeout_ms);

// Parses a Retry-After value (delta-seconds only) into milliseconds; 0 when absent or odd.
int64_t parse_retry_after_ms(const std::string& value);

}  // namespace ts
