#include "backend/mock_backend.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "backend/png.h"
#include "core/base64.h"

namespace ts {
namespace {

using nlohmann::json;

int port_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
  return -1;
}

// httplib 0.11.4 gives a handler no way to see its connection close. The request names the
// two ports of its connection, so the socket is found among this process's descriptors and
// watched directly. Test tooling only: the real server never does this.
int find_connection_fd(int local_port, int remote_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    int fd = std::atoi(e->d_name);
    if (fd <= 2) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ll = sizeof local, pl = sizeof peer;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (port_of(local) == local_port && port_of(peer) == remote_port) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

void json_reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

}  // namespace

MockBackend::MockBackend(MockBackendOptions options) : options_(std::move(options)) {
  uint64_t seed = options_.seed != 0 ? options_.seed : std::random_device{}();
  rng_.seed(seed);
}

MockBackend::~MockBackend() { stop(); }

std::string MockBackend::url() const {
  return "http://" + options_.host + ":" + std::to_string(port_);
}

double MockBackend::random01() {
  MutexLock lock(mu_);
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

bool MockBackend::wait_latency(const httplib::Request& req, int ms) {
  if (ms == 0) return !stopping_.load();  // nothing to wait for, nor a client to watch
  // The deadline first: looking the connection up walks /proc/self/fd, which must not add to
  // the latency a test or a benchmark asked for.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  int fd = find_connection_fd(req.local_port, req.remote_port);
  for (;;) {
    if (stopping_.load()) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (ms >= 0 && left <= 0) return true;
    int step = static_cast<int>(ms < 0 ? 20 : std::min<int64_t>(left, 20));
    if (fd >= 0) {
      pollfd p{fd, POLLRDHUP, 0};
      if (poll(&p, 1, step) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) return false;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(step));
    }
  }
}

void MockBackend::install_routes() {
  auto& svr = *server_;
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (healthy_.load()) {
      json_reply(res, 200, {{"status", "ok"}});
    } else {
      json_reply(res, 503, {{"status", "unhealthy"}});
    }
  });
  svr.Post("/admin/health", [this](const httplib::Request& req, httplib::Response& res) {
    bool ok = req.get_param_value("ok") != "false";
    healthy_.store(ok);
    json_reply(res, 200, {{"healthy", ok}});
  });
  svr.Get("/admin/stats", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(stats_json(), "application/json");
  });

  // Every other POST is a task request.
  svr.Post(".*", [this](const httplib::Request& req, httplib::Response& res) {
    {
      MutexLock lock(mu_);
      ++requests_;
      ++in_flight_;
      peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
    }
    struct Leave {
      MockBackend* self;
      ~Leave() {
        MutexLock lock(self->mu_);
        --self->in_flight_;
      }
    } leave{this};

    double roll = random01();
    if (roll < options_.hang_rate) {
      {
        MutexLock lock(mu_);
        ++hung_;
      }
      wait_latency(req, -1);  // until the client gives up or we stop
      MutexLock lock(mu_);
      ++aborted_;
      res.status = 504;
      return;
    }
    int latency = options_.latency_ms;
    if (options_.latency_jitter_ms > 0) {
      latency += static_cast<int>(random01() * options_.latency_jitter_ms);
    }
    if (!wait_latency(req, latency)) {
      MutexLock lock(mu_);
      ++aborted_;
      res.status = 499;
      return;
    }
    if (options_.status_code != 0 || roll < options_.hang_rate + options_.fail_rate) {
      int code = options_.status_code != 0 ? options_.status_code : 500;
      {
        MutexLock lock(mu_);
        ++failed_;
      }
      if (code == 429 || code == 503) {
        res.set_header("Retry-After", std::to_string(options_.retry_after_s));
      }
      json_reply(res, code, {{"error", {{"message", "injected failure"}, {"code", code}}}});
      return;
    }

    if (req.path == "/v1/audio/transcriptions") {
      if (!req.has_file("file")) {
        json_reply(res, 400, {{"error", {{"message", "a multipart part `file` is required"}}}});
        return;
      }
      auto file = req.get_file_value("file");
      std::string key = "file:" + file.filename;
      {
        MutexLock lock(mu_);
        ++served_;
        ++prompts_[key];
      }
      json_reply(res, 200,
                 {{"text", "transcript of " + file.filename + " (" +
                               std::to_string(file.content.size()) + " bytes)"}});
      return;
    }

    json body = json::parse(req.body, nullptr, false);
    if (req.path == "/v1/images/generations") {
      if (!body.is_object() || !body.contains("prompt") || !body["prompt"].is_string()) {
        json_reply(res, 400, {{"error", {{"message", "prompt (a string) is required"}}}});
        return;
      }
      std::string prompt = body["prompt"].get<std::string>();
      int n = 1;
      if (body.contains("n") && body["n"].is_number_integer()) {
        n = std::clamp(body["n"].get<int>(), 1, 4);
      }
      json data = json::array();
      for (int i = 0; i < n; ++i) {
        std::string seed_text = i == 0 ? prompt : prompt + "#" + std::to_string(i);
        data.push_back(
            {{"b64_json", base64_encode(png_for_prompt(seed_text, options_.image_size))}});
      }
      {
        MutexLock lock(mu_);
        ++served_;
        ++prompts_[prompt];
      }
      json_reply(res, 200,
                 {{"created", std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count()},
                  {"data", data}});
      return;
    }
    std::string key = body.is_object() && body.contains("prompt") && body["prompt"].is_string()
                          ? body["prompt"].get<std::string>()
                          : std::string();
    {
      MutexLock lock(mu_);
      ++served_;
      if (!key.empty()) ++prompts_[key];
    }
    // "pad": N in the payload makes the answer carry N more bytes (large answers for tests and
    // benchmarks), streamed rather than built in memory.
    int64_t pad = 0;
    if (body.is_object() && body.contains("pad") && body["pad"].is_number_integer()) {
      pad = std::clamp<int64_t>(body["pad"].get<int64_t>(), 0, int64_t{1} << 30);
    }
    json echo = {
        {"ok", true}, {"path", req.path}, {"echo", body.is_discarded() ? json(req.body) : body}};
    if (pad == 0) return json_reply(res, 200, echo);
    std::string head = echo.dump();
    head.pop_back();  // the closing brace: the padding goes in before it
    head += ",\"pad\":\"";
    const std::string tail = "\"}";
    const size_t total = head.size() + static_cast<size_t>(pad) + tail.size();
    res.status = 200;
    res.set_content_provider(
        total, "application/json",
        [head, tail, pad](size_t offset, size_t length, httplib::DataSink& sink) {
          static const std::string xs(64 * 1024, 'x');
          size_t end_head = head.size(), end_pad = end_head + static_cast<size_t>(pad);
          if (offset < end_head)
            return sink.write(head.data() + offset, std::min(length, end_head - offset));
          if (offset < end_pad)
            return sink.write(xs.data(), std::min({length, xs.size(), end_pad - offset}));
          size_t at = offset - end_pad;
          return sink.write(tail.data() + at, std::min(length, tail.size() - at));
        });
  });
}

int MockBackend::start(std::string* error) {
  HttpServerOptions http;
  http.threads = options_.threads;
  http.thread_name = "ts-mock";
  // Handlers that sleep (latency, hangs) want every thread taking requests; a no-op backend is
  // served best by a few, as the API server is.
  bool sleeps = options_.latency_ms > 0 || options_.latency_jitter_ms > 0 || options_.hang_rate > 0;
  http.active_threads = sleeps ? options_.threads : 0;
  server_ = std::make_unique<HttpServer>(http);
  install_routes();
  port_ = server_->bind(options_.host, options_.port, error);
  if (port_ < 0) return -1;
  thread_ = std::thread([this] { server_->serve(); });
  server_->wait_running(2000);
  return port_;
}

void MockBackend::stop() {
  stopping_.store(true);
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string MockBackend::stats_json() const {
  MutexLock lock(mu_);
  json prompts = json::object();
  for (const auto& [p, n] : prompts_) prompts[p] = n;
  return json{{"requests", requests_},
              {"served", served_},
              {"failed", failed_},
              {"hung", hung_},
              {"aborted", aborted_},
              {"in_flight", in_flight_},
              {"peak_in_flight", peak_in_flight_},
              {"healthy", healthy_.load()},
              {"prompts", prompts}}
      .dump();
}

}  // namespace ts
