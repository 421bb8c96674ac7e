#pragma once
// HttpServer: httplib::Server with the traps of Debian's cpp-httplib 0.11.4 fixed once for every
// server in the binary (the API, the mock backend): TCP_NODELAY on, a real listen backlog
// instead of 5, a thread pool of a chosen size, keep-alive that lasts. Thread-safety as
// httplib::Server: configure before listen(), stop() from any thread.

#include <httplib.h>

#include <string>

namespace ts {

struct HttpServerOptions {
  int threads = 64;  // a connection holds a thread for its whole keep-alive life
  int backlog = 1024;
  int keep_alive_max_count = 10000;
  int keep_alive_timeout_s = 5;
  int read_timeout_s = 10;
  int write_timeout_s = 10;
};

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(const HttpServerOptions& options);
  // Binds host:port (port 0: any free port) with the configured backlog. Returns the bound port,
  // or -1 with errno-style detail in *error.
  int bind(const std::string& host, int port, std::string* error);
  // Serves until stop(). Call after bind().
  bool serve() { return listen_after_bind(); }
  // Blocks until the server accepts connections (or ms pass). True when running.
  bool wait_running(int ms) const;

 private:
  int backlog_;
};

// Splits "host:port" (also "[::1]:port"). False when malformed.
bool split_host_port(const std::string& text, std::string* host, int* port);

}  // namespace ts
