#include "backend/backend_client.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <charconv>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>

#include "http/client.h"

namespace ts {
namespace {

void set_timeouts(httplib::Client& cli, int64_t connect_ms, int64_t read_ms) {
  cli.set_connection_timeout(connect_ms / 1000, (connect_ms % 1000) * 1000);
  cli.set_read_timeout(read_ms / 1000, (read_ms % 1000) * 1000);
  cli.set_write_timeout(read_ms / 1000, (read_ms % 1000) * 1000);
}

std::string truncate(std::string s, size_t n) {
  if (s.size() > n) {
    s.resize(n);
    s += "...";
  }
  return s;
}

// A multipart/form-data body: the file as part `file`, then each field of the payload (strings
// as they are, other values as JSON), as OpenAI-style transcription servers take them.
std::string multipart_body(const std::string& file_data, const InputFile& file,
                           const std::string& payload_json, std::string* boundary) {
  static const char* hex = "0123456789abcdef";
  std::random_device rd;
  *boundary = "taskserver-";
  for (int i = 0; i < 24; ++i) *boundary += hex[rd() & 15];
  auto clean = [](std::string v) {  // a header value: no quotes, no line breaks
    for (char& c : v) {
      if (c == '"' || c == '\r' || c == '\n') c = '_';
    }
    return v;
  };
  std::string out;
  out.reserve(file_data.size() + 512);
  out += "--" + *boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" +
         clean(file.filename) + "\"\r\nContent-Type: " + clean(file.content_type) + "\r\n\r\n";
  out += file_data;
  out += "\r\n";
  auto payload = nlohmann::json::parse(payload_json, nullptr, false);
  if (payload.is_object()) {
    for (auto& [k, v] : payload.items()) {
      out += "--" + *boundary + "\r\nContent-Disposition: form-data; name=\"" + clean(k) +
             "\"\r\n\r\n" + (v.is_string() ? v.get<std::string>() : v.dump()) + "\r\n";
    }
  }
  out += "--" + *boundary + "--\r\n";
  return out;
}

}  // namespace

int64_t parse_retry_after_ms(const std::string& value) {
  int64_t secs = 0;
  auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), secs);
  if (ec != std::errc() || p != value.data() + value.size() || secs < 0) return 0;
  return std::min<int64_t>(secs, 3600) * 1000;
}

BackendCall::BackendCall() = default;
BackendCall::~BackendCall() = default;

void BackendCall::abort(AbortReason reason) {
  AbortReason expected = AbortReason::kNone;
  reason_.compare_exchange_strong(expected, reason);
  MutexLock lock(mu_);
  if (client_) client_->stop();
}

BackendResponse BackendCall::run(const BackendRequest& request) {
  BackendResponse out;
  auto url = parse_url(request.base_url);
  if (!url) {
    out.result = CallResult::kBadRequest;
    out.error = "backend url is not an http(s) URL: " + request.base_url;
    return out;
  }
  auto client = make_client(*url);
  httplib::Client& cli = *client;
  // The attempt's deadline is enforced by the caller's watchdog (abort with kTimeout); the
  // socket timeouts sit a little past it as a backstop.
  set_timeouts(cli, request.connect_timeout_ms, request.timeout_ms + 1000);
  cli.set_keep_alive(false);
  std::string path = url->path + request.path;

  httplib::Request req;
  req.method = "POST";
  req.path = path;
  if (request.file) {
    std::ifstream in(request.file->path, std::ios::binary);
    if (!in) {
      out.result = CallResult::kBadRequest;
      out.error = "cannot read the task's input file";
      return out;
    }
    std::ostringstream data;
    data << in.rdbuf();
    std::string boundary;
    req.body = multipart_body(data.str(), *request.file, request.body, &boundary);
    req.set_header("Content-Type", "multipart/form-data; boundary=" + boundary);
  } else {
    req.body = request.body;
    req.set_header("Content-Type", "application/json");
  }
  // The answer is read through a receiver so that a runaway backend cannot fill memory.
  bool too_big = false;
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    if (out.body.size() + len > request.max_answer_bytes) {
      too_big = true;
      return false;
    }
    out.body.append(data, len);
    return true;
  };

  {
    MutexLock lock(mu_);
    if (reason_.load() != AbortReason::kNone) {
      out.result =
          reason_.load() == AbortReason::kTimeout ? CallResult::kTimeout : CallResult::kAborted;
      out.error = "aborted before the request was sent";
      return out;
    }
    client_ = &cli;
  }
  auto started = std::chrono::steady_clock::now();
  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  bool sent = cli.send(req, response, error);
  {
    MutexLock lock(mu_);
    client_ = nullptr;
  }
  auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();

  AbortReason reason = reason_.load();
  if (reason == AbortReason::kTimeout) {
    out.result = CallResult::kTimeout;
    out.error = "timed out after " + std::to_string(elapsed_ms) + " ms";
    return out;
  }
  if (reason != AbortReason::kNone) {
    out.result = CallResult::kAborted;
    out.error = reason == AbortReason::kCanceled ? "canceled" : "shutdown";
    return out;
  }
  if (too_big) {
    out.result = CallResult::kBadRequest;
    out.error = "the backend's answer is larger than the limit of " +
                std::to_string(request.max_answer_bytes) + " bytes";
    out.body.clear();
    return out;
  }
  if (!sent) {
    httplib::Error err = error;
    if (err == httplib::Error::Connection || err == httplib::Error::ConnectionTimeout ||
        err == httplib::Error::BindIPAddress) {
      out.result = CallResult::kConnectError;
      out.error = "cannot connect: " + httplib::to_string(err);
    } else if (err == httplib::Error::Read && elapsed_ms + 50 >= request.timeout_ms) {
      out.result = CallResult::kTimeout;
      out.error = "timed out after " + std::to_string(elapsed_ms) + " ms";
    } else {
      out.result = CallResult::kConnectError;
      out.error = "connection failed: " + httplib::to_string(err);
    }
    return out;
  }
  out.http_status = response.status;
  out.content_type = response.get_header_value("Content-Type");
  int s = response.status;
  if (s >= 200 && s < 300) {
    out.result = CallResult::kOk;
  } else if (s == 429 || s == 503) {
    out.result = CallResult::kBusy;
    out.retry_after_ms = parse_retry_after_ms(response.get_header_value("Retry-After"));
    out.error = "backend busy: HTTP " + std::to_string(s);
  } else if (s >= 400 && s < 500) {
    out.result = CallResult::kClientError;
    out.error =
        "backend rejected the task: HTTP " + std::to_string(s) + ": " + truncate(out.body, 300);
  } else {
    out.result = CallResult::kServerError;
    out.error = "backend error: HTTP " + std::to_string(s) + ": " + truncate(out.body, 300);
  }
  return out;
}

ProbeResult probe_health(const std::string& base_url, const std::string& path, int timeout_ms) {
  ProbeResult out;
  auto url = parse_url(base_url);
  if (!url) {
    out.error = "not an http(s) URL";
    return out;
  }
  auto client = make_client(*url);
  httplib::Client& cli = *client;
  set_timeouts(cli, timeout_ms, timeout_ms);
  auto res = cli.Get((url->path + path).c_str());
  if (!res) {
    out.error = httplib::to_string(res.error());
    return out;
  }
  if (res->status < 200 || res->status >= 300) {
    out.error = "HTTP " + std::to_string(res->status);
    return out;
  }
  out.ok = true;
  return out;
}

}  // namespace ts
