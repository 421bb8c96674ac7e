#include "support/garbage_backend.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "support/raw_http.h"

namespace tst {

using namespace std::string_literals;

GarbageBackend::GarbageBackend() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(listen_fd_, 64) == 0);
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

GarbageBackend::~GarbageBackend() {
  stop_ = true;
  acceptor_.join();
  std::vector<Conn> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads.swap(threads_);
  }
  for (auto& c : threads) c.thread.join();
  ::close(listen_fd_);
}

int GarbageBackend::requests(const std::string& mode) {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_[mode];
}

void GarbageBackend::accept_loop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard<std::mutex> lock(mu_);
    // Health probes come every 200 ms: join the connections that are over.
    for (auto it = threads_.begin(); it != threads_.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = threads_.erase(it);
      } else {
        ++it;
      }
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    threads_.push_back({std::thread([this, fd, done] {
                          serve(fd);
                          ::close(fd);
                          *done = true;
                        }),
                        done});
  }
}

void GarbageBackend::hold(int fd, const std::string& drip) {
  while (!stop_) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 500) > 0) {
      char c[256];
      if (::recv(fd, c, sizeof c, 0) <= 0) return;
    }
    if (!drip.empty() && ::send(fd, drip.data(), drip.size(), MSG_NOSIGNAL) <= 0) return;
  }
}

void GarbageBackend::serve(int fd) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::string in;
  size_t want = std::string::npos;
  while (in.size() < want && !stop_) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) return;
    char chunk[8192];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return;
    in.append(chunk, static_cast<size_t>(n));
    size_t end = in.find("\r\n\r\n");
    if (want == std::string::npos && end != std::string::npos) {
      std::string head = in.substr(0, end);
      std::transform(head.begin(), head.end(), head.begin(), ::tolower);
      size_t cl = head.find("content-length:");
      want = end + 4 + (cl == std::string::npos ? 0 : std::stoul(head.substr(cl + 15)));
    }
  }
  auto send = [&](const std::string& s) { ::send(fd, s.data(), s.size(), MSG_NOSIGNAL); };
  if (in.rfind("GET /health", 0) == 0) {
    return send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  }
  size_t at = in.find("mode-");
  std::string mode = at == std::string::npos ? "" : in.substr(at, in.find('"', at) - at);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[mode];
  }
  auto ok_json = [&](const std::string& body) {
    send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  };
  if (mode == "mode-nonhttp") {
    send("SSH-2.0-OpenSSH_9.2\r\n\x00\xff\xfe garbage\r\n\r\n"s);
  } else if (mode == "mode-notjson") {
    ok_json("this is not json");
  } else if (mode == "mode-badb64") {
    ok_json(R"({"created":1,"data":[{"b64_json":"!!!not base64!!!"}]})");
  } else if (mode == "mode-truncated") {
    send(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        "{\"data\":[{\"b64_json\":\"iVBOR");
  } else if (mode == "mode-hang") {
    hold(fd, "");
  } else if (mode == "mode-trickle") {
    send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
    hold(fd, "x");
  } else if (mode == "mode-500binary") {
    std::string body = "\xff\xfe\xc0\xaf\x00 broken \xe2\x82 utf-8 \"quotes\" \\ </script>"s;
    send("HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  } else if (mode == "mode-badstatus") {
    send("HTTP/1.1 abc What\r\nContent-Length: 0\r\n\r\n");
  } else if (mode == "mode-negcl") {
    send("HTTP/1.1 200 OK\r\nContent-Length: -5\r\nConnection: close\r\n\r\n{}");
  } else if (mode == "mode-badchunks") {
    send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n");
  } else if (mode == "mode-reset") {
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  } else if (mode == "mode-busy") {
    send("HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  } else if (mode == "mode-hugeheader") {
    send("HTTP/1.1 200 OK\r\nX-Big: " + std::string(1 << 20, 'a') +
         "\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
  } else {
    send("HTTP/1.1 400 Bad\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  }
}

}  // namespace tst
