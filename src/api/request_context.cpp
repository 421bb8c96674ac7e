#include "api/request_context.h"

#include <cctype>
#include <charconv>
#include <vector>

#include "api/task_json.h"

namespace ts {
namespace {

thread_local RequestContext t_request;

// A JSON body (at most --max-body, 1 MiB by default) must arrive within this long, however
// slowly its bytes trickle in: --read-timeout bounds each read, not the whole body.
constexpr auto kBodyDeadline = std::chrono::seconds(30);

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

Status body_too_slow() {
  return Status(Code::kMalformed, "request_timeout",
                "the body did not arrive within " + std::to_string(kBodyDeadline.count()) + " s");
}

}  // namespace

RequestContext& request() { return t_request; }

// Each httplib lookup compares names case-insensitively through the whole map, and a submit
// made eight of them: one pass finds every header the API reads.
void scan_headers(const httplib::Request& req) {
  RequestHeaders h;
  for (const auto& [name, value] : req.headers) {
    if (iequals(name, "Content-Type")) {
      h.content_type = &value;
    } else if (iequals(name, "Content-Length")) {
      if (h.content_length && *h.content_length != value) h.conflicting_lengths = true;
      h.content_length = &value;
    } else if (iequals(name, "Authorization")) {
      h.authorization = &value;
    } else if (iequals(name, "Idempotency-Key")) {
      h.idempotency_key = &value;
    } else if (iequals(name, "Transfer-Encoding")) {
      h.chunked = true;
    }
  }
  t_request.headers = h;
}

void begin_request(const httplib::Request& req) {
  t_request.route = "unmatched";
  t_request.start = std::chrono::steady_clock::now();
  scan_headers(req);
}

bool is_multipart() {
  const std::string* ct = t_request.headers.content_type;
  return ct && ct->size() >= 19 &&
         iequals(std::string_view(*ct).substr(0, 19), "multipart/form-data");
}

std::string media_type() {
  const std::string* h = t_request.headers.content_type;
  std::string ct = h ? *h : std::string();
  ct = ct.substr(0, ct.find(';'));
  while (!ct.empty() && std::isspace(static_cast<unsigned char>(ct.back()))) ct.pop_back();
  while (!ct.empty() && std::isspace(static_cast<unsigned char>(ct.front()))) ct.erase(0, 1);
  return lower(ct);
}

Status check_json_body_type() {
  std::string mt = media_type();
  if (mt.empty() || mt == "application/json" || mt == "application/x-www-form-urlencoded" ||
      mt == "text/plain" || (mt.size() > 5 && mt.compare(mt.size() - 5, 5, "+json") == 0)) {
    return Status::Ok();
  }
  return Status(Code::kUnsupportedMedia, "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json), not " + mt);
}

Status too_large(size_t limit) {
  return Status(Code::kTooLarge, "payload_too_large",
                "the body is larger than the limit of " + std::to_string(limit) + " bytes");
}

Status body_incomplete() {
  return Status::Malformed("the body ended before its declared length (Content-Length)");
}

Status check_declared_length(const std::string& path, size_t max_body, size_t max_upload) {
  if (!t_request.headers.content_length) return Status::Ok();
  const std::string& cl = *t_request.headers.content_length;
  bool upload = (path == "/api/v1/tasks" || path == "/api/v1/audio/async") && is_multipart();
  size_t limit = upload ? max_upload : max_body;
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(cl.data(), cl.data() + cl.size(), n);
  if (ec != std::errc() || p != cl.data() + cl.size())
    return Status::Malformed("bad Content-Length");
  if (n > limit) return too_large(limit);
  return Status::Ok();
}

std::optional<std::string> idempotency_header() {
  if (!t_request.headers.idempotency_key) return std::nullopt;
  return *t_request.headers.idempotency_key;
}

Status read_body(const httplib::ContentReader& reader, size_t limit, std::string* body) {
  bool over = false, late = false;
  auto deadline = std::chrono::steady_clock::now() + kBodyDeadline;
  bool complete = reader([&](const char* data, size_t len) {
    if (body->size() + len > limit) {
      over = true;
      return false;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      late = true;
      return false;
    }
    body->append(data, len);
    return true;
  });
  if (over) return too_large(limit);
  if (late) return body_too_slow();
  if (!complete) return body_incomplete();
  return Status::Ok();
}

std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void send_json(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

void send_text_json(httplib::Response& res, int status, std::string body) {
  res.status = status;
  res.set_content(std::move(body), "application/json");
}

void send_error(httplib::Response& res, const Status& st) {
  res.status = http_status(st.code());
  if (st.retry_after_s() > 0) res.set_header("Retry-After", std::to_string(st.retry_after_s()));
  res.set_content(error_body(st), "application/json");
}

void count_request(Metrics& metrics, const char* route, const std::string& method, int status,
                   std::chrono::steady_clock::time_point start) {
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  struct Key {
    const char* route;
    std::string method;
    int code;
    CounterFamily::Cell* cell;
  };
  thread_local std::vector<Key> counters;
  thread_local std::vector<std::pair<const char*, HistogramFamily::Series*>> latencies;
  CounterFamily::Cell* cell = nullptr;
  for (const Key& k : counters) {
    if (k.route == route && k.code == status && k.method == method) cell = k.cell;
  }
  if (!cell) {
    cell = &metrics.http_requests.cell({method, route, std::to_string(status)});
    counters.push_back({route, method, status, cell});
  }
  cell->inc();
  HistogramFamily::Series* series = nullptr;
  for (const auto& [r, s] : latencies) {
    if (r == route) series = s;
  }
  if (!series) {
    series = &metrics.http_duration.series({route});
    latencies.emplace_back(route, series);
  }
  series->observe(secs);
}

std::shared_ptr<Held> hold() {
  t_request.deferred = true;
  return std::make_shared<Held>(Held{defer_response(), t_request.route, t_request.start});
}

void answer(Metrics& metrics, Held& held, const char* method, int status,
            const ReplacementReply* reply) {
  count_request(metrics, held.route, method, status, held.start);
  held.done(reply);
}

ReplacementReply error_reply(const Status& st, bool keep_alive) {
  return {http_status(st.code()), error_body(st), keep_alive};
}

}  // namespace ts
