#include "backend/backend_client.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <random>

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

// A multipart/form-data body streamed from its file: the file as part `file`, then each field
// of the payload (strings as they are, other values as JSON), as OpenAI-style transcription
// servers take them. Only the parts around the file are held in memory.
struct MultipartBody {
  std::string boundary;
  std::string head;  // the file part's headers
  std::string tail;  // the end of the file part, the fields, the closing boundary
  int fd = -1;
  uint64_t file_size = 0;

  ~MultipartBody() {
    if (fd >= 0) ::close(fd);
  }
  uint64_t size() const { return head.size() + file_size + tail.size(); }

  bool open(const InputFile& file, const std::string& payload_json) {
    fd = ::open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) return false;
    file_size = static_cast<uint64_t>(st.st_size);
    static const char* hex = "0123456789abcdef";
    std::random_device rd;
    boundary = "taskserver-";
    for (int i = 0; i < 24; ++i) boundary += hex[rd() & 15];
    auto clean = [](std::string v) {  // a header value: no quotes, no line breaks
      for (char& c : v) {
        if (c == '"' || c == '\r' || c == '\n') c = '_';
      }
      return v;
    };
    head = "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" +
           clean(file.filename) + "\"\r\nContent-Type: " + clean(file.content_type) + "\r\n\r\n";
    tail = "\r\n";
    auto payload = nlohmann::json::parse(payload_json, nullptr, false);
    if (payload.is_object()) {
      for (auto& [k, v] : payload.items()) {
        tail += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + clean(k) +
                "\"\r\n\r\n" + (v.is_string() ? v.get<std::string>() : v.dump()) + "\r\n";
      }
    }
    tail += "--" + boundary + "--\r\n";
    return true;
  }

  // httplib's content provider: `length` bytes from `offset` of the whole body.
  bool provide(size_t offset, size_t length, httplib::DataSink& sink) {
    char buf[64 * 1024];
    uint64_t end_head = head.size(), end_file = end_head + file_size;
    if (offset < end_head) {
      size_t n = std::min<size_t>(length, end_head - offset);
      return sink.write(head.data() + offset, n);
    }
    if (offset < end_file) {
      size_t want =
          static_cast<size_t>(std::min<uint64_t>({length, sizeof buf, end_file - offset}));
      ssize_t got = ::pread(fd, buf, want, static_cast<off_t>(offset - end_head));
      return got > 0 && sink.write(buf, static_cast<size_t>(got));
    }
    size_t at = static_cast<size_t>(offset - end_file);
    size_t n = std::min(length, tail.size() - at);
    return sink.write(tail.data() + at, n);
  }
};

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

BackendConnections::BackendConnections() = default;
BackendConnections::~BackendConnections() = default;

httplib::Client& BackendConnections::client_for(const Url& url) {
  auto& slot = clients_[url.origin()];
  if (!slot) {
    slot = make_client(url);
    slot->set_keep_alive(true);
  }
  return *slot;
}

void BackendConnections::drop(const Url& url) { clients_.erase(url.origin()); }

BackendResponse BackendCall::run(const BackendRequest& request, BackendConnections* connections) {
  BackendResponse out;
  auto url = parse_url(request.base_url);
  if (!url) {
    out.result = CallResult::kBadRequest;
    out.error = "backend url is not an http(s) URL: " + request.base_url;
    return out;
  }
  std::unique_ptr<httplib::Client> own;
  if (!connections) {
    own = make_client(*url);
    own->set_keep_alive(false);
  }
  httplib::Client& cli = connections ? connections->client_for(*url) : *own;
  // The attempt's deadline is enforced by the caller's watchdog (abort with kTimeout); the
  // socket timeouts sit a little past it as a backstop.
  set_timeouts(cli, request.connect_timeout_ms, request.timeout_ms + 1000);
  std::string path = url->path + request.path;

  httplib::Request req;
  req.method = "POST";
  req.path = path;
  MultipartBody multipart;
  if (request.file) {
    if (!multipart.open(*request.file, request.body)) {
      out.result = CallResult::kBadRequest;
      out.error = "cannot read the task's input file";
      return out;
    }
    req.set_header("Content-Type", "multipart/form-data; boundary=" + multipart.boundary);
    req.content_length_ = static_cast<size_t>(multipart.size());
    req.content_provider_ = [&multipart](size_t offset, size_t length, httplib::DataSink& sink) {
      return multipart.provide(offset, length, sink);
    };
  } else {
    req.body = request.body;
    req.set_header("Content-Type", "application/json");
  }
  // A 2xx answer streams to the sink as it arrives (or into out.body without one); the start of
  // any other answer is kept for the error message. Either way memory stays bounded.
  constexpr size_t kErrorBytes = 4096;
  bool ok_status = false, too_big = false, refused = false;
  size_t received = 0;
  req.response_handler = [&](const httplib::Response& r) {
    ok_status = r.status >= 200 && r.status < 300;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    if (!ok_status) {
      if (out.body.size() < kErrorBytes) out.body.append(data, std::min(len, kErrorBytes));
      return true;
    }
    if (received + len > request.max_answer_bytes) {
      too_big = true;
      return false;
    }
    received += len;
    if (request.sink) {
      if (!request.sink(std::string_view(data, len))) {
        refused = true;
        return false;
      }
      return true;
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
  // A connection that saw anything but a whole 2xx exchange is not trusted with the next call.
  auto fail = [&] {
    if (connections) connections->drop(*url);
    return out;
  };

  AbortReason reason = reason_.load();
  if (reason == AbortReason::kTimeout) {
    out.result = CallResult::kTimeout;
    out.error = "timed out after " + std::to_string(elapsed_ms) + " ms";
    return fail();
  }
  if (reason != AbortReason::kNone) {
    out.result = CallResult::kAborted;
    out.error = reason == AbortReason::kCanceled ? "canceled" : "shutdown";
    return fail();
  }
  if (too_big || refused) {
    out.result = CallResult::kBadRequest;
    out.error = too_big ? "the backend's answer is larger than the limit of " +
                              std::to_string(request.max_answer_bytes) + " bytes"
                        : (request.sink_error ? request.sink_error() : "the answer was refused");
    out.body.clear();
    return fail();
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
    return fail();
  }
  out.http_status = response.status;
  out.content_type = response.get_header_value("Content-Type");
  int s = response.status;
  if (s >= 200 && s < 300) {
    out.result = CallResult::kOk;
    return out;
  }
  if (s == 429 || s == 503) {
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
  out.body.clear();
  return fail();
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
