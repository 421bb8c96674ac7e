#pragma once
// HttpServer: httplib::Server with the traps of Debian's cpp-httplib 0.11.4 fixed once for every
// server in the binary (the API, the mock backend), and with its own connection handling in
// place of httplib's thread per connection:
//
// - Every accepted connection sits in one epoll set while it waits for its next request; a
//   fixed pool of threads takes the connections that have a request and runs each request
//   through httplib's own parser, routing and response writer (process_request). An idle
//   keep-alive connection holds no thread, and a thread goes from one connection to the next
//   without sleeping while requests are waiting.
// - A handler may answer after it returns (defer_response): the thread goes on with other
//   connections while, say, a submit waits for its group commit, and whoever finishes the work
//   sends the response the handler left. A durable submit then costs no extra thread sleep.
// - The header block and body of a response go out in one send; TCP_NODELAY on; a real listen
//   backlog instead of 5; keep-alive connections idle longer than the keep-alive timeout are
//   closed.
//
// Thread-safety as httplib::Server: configure before serve(), stop() from any thread. The
// completion that defer_response returns may be called from any thread.

#include <httplib.h>

#include <atomic>
#include <functional>
#include <string>

namespace ts {

struct HttpServerOptions {
  int threads = 64;  // serve requests; a streaming response (SSE) holds one while it lasts
  // Of those, how many wait for new requests at once (0: twice the cores); the rest are parked
  // and lent out when one is stuck in a slow request for 10 ms.
  int active_threads = 0;
  int backlog = 1024;
  int keep_alive_max_count = 10000;
  int keep_alive_timeout_s = 5;
  int read_timeout_s = 10;
  int write_timeout_s = 10;
  std::string thread_name = "http";  // the serving threads' name, for top -H and perf
};

// What a deferred response sends instead of the one its handler left: a JSON body with this
// status, after which the connection is closed unless keep_alive (and the request did not ask
// for its close).
struct ReplacementReply {
  int status = 500;
  std::string json_body;
  bool keep_alive = false;
};

// Called exactly once, from any thread: nullptr sends the response the handler left in its
// httplib::Response; otherwise `instead` is sent.
using DeferredCompletion = std::function<void(const ReplacementReply* instead)>;

// True when the request running on this thread is served by an HttpServer and can be answered
// after its handler returns.
bool can_defer_response();

// For a handler: holds back the response this handler leaves in its httplib::Response until the
// returned completion is called (exactly once, from any thread, also after the handler
// returned). Empty when can_defer_response() is false: the handler answers as usual then.
DeferredCompletion defer_response();

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(const HttpServerOptions& options);
  ~HttpServer() override;
  // Binds host:port (port 0: any free port) with the configured backlog. Returns the bound port,
  // or -1 with errno-style detail in *error.
  int bind(const std::string& host, int port, std::string* error);
  // Serves until stop(). Call after bind(). Returns once every connection is closed and every
  // deferred response has been sent.
  bool serve() { return listen_after_bind(); }
  // Blocks until the server accepts connections and its threads exist to serve them (or ms
  // pass). True when running.
  bool wait_running(int ms) const;

  class Loop;  // the epoll set, its threads and the connections (http/loop.cpp)

 private:
  // httplib's accept loop hands each new connection here: it joins the epoll set.
  bool process_and_close_socket(socket_t sock) override;
  // Runs one request of a connection through httplib (on a Loop thread).
  friend class Loop;
  bool serve_one(httplib::Stream& stream, bool close_connection, bool& connection_closed) {
    return process_request(stream, close_connection, connection_closed, nullptr);
  }

  HttpServerOptions options_;
  Loop* loop_ = nullptr;  // while serving: created and destroyed by httplib's listen loop
  // Set once loop_ and its threads exist: httplib says it runs before it makes them, and making
  // a hundred threads can take a while (0.6 s under ThreadSanitizer).
  std::atomic<bool> loop_ready_{false};
};

// Splits "host:port" (also "[::1]:port"). False when malformed.
bool split_host_port(const std::string& text, std::string* host, int* port);

}  // namespace ts
