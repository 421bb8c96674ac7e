#pragma once
// What the API knows about the request a serving thread is on: the headers it reads (found in
// one pass), the route's name and start time for the metrics, and the replies every route
// shares (JSON bodies, errors, bodies read within bounds, responses held back for later).
// Everything here is per thread and per request: set by the pre-routing handler, read by the
// handler on the same thread. Not shared across threads.

#include <httplib.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/metrics.h"
#include "core/status.h"
#include "http/server.h"

namespace ts {

// The request headers this API reads. Pointers into the request, valid while it is served.
struct RequestHeaders {
  const std::string* content_type = nullptr;
  const std::string* content_length = nullptr;
  const std::string* authorization = nullptr;
  const std::string* idempotency_key = nullptr;
  bool chunked = false;
  bool conflicting_lengths = false;
};

// The current request's bookkeeping on this thread.
struct RequestContext {
  const char* route = "unmatched";  // the metrics' route label
  std::chrono::steady_clock::time_point start;
  bool deferred = false;  // answered later (hold()): the logger leaves it to answer()
  RequestHeaders headers;
};
RequestContext& request();
// Starts a request's bookkeeping: its start time and its headers.
void begin_request(const httplib::Request& req);
// Only the headers (the Expect: 100-continue handler runs before the pre-routing one).
void scan_headers(const httplib::Request& req);

bool is_multipart();
// The media type without parameters, lower case ("" when absent).
std::string media_type();
// JSON bodies may be declared as JSON, or as what curl -d and simple clients send by default.
Status check_json_body_type();
// The declared Content-Length against the body limit of `path` (--max-upload for uploads,
// --max-body for the rest), checked before any of the body is read.
Status check_declared_length(const std::string& path, size_t max_body, size_t max_upload);
std::optional<std::string> idempotency_header();

Status too_large(size_t limit);
Status body_incomplete();
// Reads a non-multipart body up to `limit` bytes within a deadline. A body that ends before its
// Content-Length (the client went away or stalled) is an error, never a shorter body.
Status read_body(const httplib::ContentReader& reader, size_t limit, std::string* body);

std::string dump(const nlohmann::json& j);
void send_json(httplib::Response& res, int status, const nlohmann::json& j);
void send_text_json(httplib::Response& res, int status, std::string body);
void send_error(httplib::Response& res, const Status& st);

// http_requests_total and http_request_duration_seconds for one answered request. Each thread
// remembers its cells, so the hot path neither allocates nor locks.
void count_request(Metrics& metrics, const char* route, const std::string& method, int status,
                   std::chrono::steady_clock::time_point start);

// A request answered after its handler returned (defer_response). The logger skips it;
// answer() counts it in the metrics when the answer is sent.
struct Held {
  DeferredCompletion done;
  const char* route;
  std::chrono::steady_clock::time_point start;
  CounterFamily::Cell* submitted = nullptr;  // a held submit's counter, once its task is built
};
// Holds the current request's response back (every request served by an HttpServer can be).
std::shared_ptr<Held> hold();
// Counts the request and sends `reply` (nullptr: the response its handler left).
void answer(Metrics& metrics, Held& held, const char* method, int status,
            const ReplacementReply* reply);
// The JSON error of `st` in place of a held response; without keep_alive the connection is
// closed after it.
ReplacementReply error_reply(const Status& st, bool keep_alive);

}  // namespace ts
