#include "http/server.h"

#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <thread>

#include "http/loop.h"

namespace ts {

HttpServer::HttpServer(const HttpServerOptions& options) : options_(options) {
  // httplib's default socket options add SO_REUSEPORT to SO_REUSEADDR: a second server started
  // on the same port by mistake then binds as well and silently takes part of the connections
  // (tasks submitted to one are unknown to the other). SO_REUSEADDR alone still lets a restart
  // bind while the old connections linger in TIME_WAIT.
  set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  set_tcp_nodelay(true);
  set_keep_alive_max_count(static_cast<size_t>(options.keep_alive_max_count));
  set_keep_alive_timeout(options.keep_alive_timeout_s);
  set_read_timeout(options.read_timeout_s, 0);
  set_write_timeout(options.write_timeout_s, 0);
  new_task_queue = [this] {
    httplib::TaskQueue* q = new_loop(*this, &loop_);
    loop_ready_.store(true);
    return q;
  };
}

HttpServer::~HttpServer() = default;

bool HttpServer::process_and_close_socket(socket_t sock) {
  loop_add(*loop_, sock);
  return true;
}

int HttpServer::bind(const std::string& host, int port, std::string* error) {
  int bound = port == 0 ? bind_to_any_port(host) : (bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    if (error)
      *error = std::string("cannot bind ") + host + ":" + std::to_string(port) + ": " +
               std::strerror(errno);
    return -1;
  }
  // httplib listens with a backlog of 5; under a burst of connections the kernel drops SYNs
  // and clients stall for a second or more. Listening again on the bound socket raises it.
  if (::listen(svr_sock_, options_.backlog) != 0) {
    if (error) *error = std::string("listen: ") + std::strerror(errno);
    return -1;
  }
  return bound;
}

bool HttpServer::wait_running(int ms) const {
  for (int waited = 0; waited < ms; waited += 5) {
    if (is_running() && loop_ready_.load()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return is_running() && loop_ready_.load();
}

bool split_host_port(const std::string& text, std::string* host, int* port) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 >= text.size()) return false;
  std::string h = text.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  int p = 0;
  const char* begin = text.data() + colon + 1;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, p);
  if (ec != std::errc() || ptr != end || p < 0 || p > 65535) return false;
  *host = h;
  *port = p;
  return true;
}

}  // namespace ts
