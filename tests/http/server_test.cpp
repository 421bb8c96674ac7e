// HttpServer's own connection handling: responses held back by defer_response, pipelined
// requests, idle keep-alive connections, and that a held-back response holds no thread.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "core/blocking.h"
#include "http/server.h"

using namespace ts;

namespace {

// A blocking client socket with a receive deadline.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~RawClient() { ::close(fd_); }
  void send(const std::string& s) {
    REQUIRE(::send(fd_, s.data(), s.size(), 0) == (ssize_t)s.size());
  }
  // Reads until `want` responses ("HTTP/1.1 " count) are in, the peer closes, or ms pass.
  std::string read_responses(int want, int ms, bool* closed = nullptr) {
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (count(buf_, "HTTP/1.1 ") < want || want == 0) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      end - std::chrono::steady_clock::now())
                                      .count());
      if (left <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, left) <= 0) break;
      char tmp[4096];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) {
        if (closed) *closed = true;
        break;
      }
      buf_.append(tmp, static_cast<size_t>(n));
    }
    return buf_;
  }
  static int count(const std::string& s, const std::string& what) {
    int n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
  }

 private:
  int fd_ = -1;
  std::string buf_;
};

std::string get(const std::string& path, bool close = false) {
  return "GET " + path + " HTTP/1.1\r\nHost: t\r\n" + (close ? "Connection: close\r\n" : "") +
         "\r\n";
}

// A server whose /later holds its response back until release() completes it.
struct Fixture {
  HttpServer server;
  std::thread thread;
  int port = 0;
  std::mutex mu;
  std::deque<DeferredCompletion> held;  // guarded by mu
  std::atomic<int> deferred{0};
  std::atomic<bool> refused{false};  // /later could not defer
  std::atomic<int> slow_started{0};

  explicit Fixture(HttpServerOptions o) : server(o) {
    server.Get("/now", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("now", "text/plain");
    });
    server.Get("/later", [this](const httplib::Request&, httplib::Response& res) {
      // Checked on the test thread: a REQUIRE here would throw into the server.
      if (!can_defer_response()) refused = true;
      DeferredCompletion done = defer_response();
      if (!done) refused = true;
      res.set_content("later", "text/plain");
      std::lock_guard<std::mutex> lock(mu);
      held.push_back(std::move(done));
      ++deferred;
    });
    // Slow, saying so (about_to_block) or not: other requests must not wait behind them.
    server.Get("/slow", [this](const httplib::Request&, httplib::Response& res) {
      ++slow_started;
      std::this_thread::sleep_for(std::chrono::milliseconds(2000));
      res.set_content("slow", "text/plain");
    });
    server.Get("/blocking", [this](const httplib::Request&, httplib::Response& res) {
      ++slow_started;
      about_to_block();
      std::this_thread::sleep_for(std::chrono::milliseconds(2000));
      res.set_content("blocking", "text/plain");
    });
    // Completed before the handler returns.
    server.Get("/at-once", [](const httplib::Request&, httplib::Response& res) {
      DeferredCompletion done = defer_response();
      res.set_content("at once", "text/plain");
      if (done) done(nullptr);
    });
    // Deferred, and the completion dropped without a call.
    server.Get("/dropped", [](const httplib::Request&, httplib::Response& res) {
      DeferredCompletion done = defer_response();
      res.set_content("dropped", "text/plain");
    });
    std::string error;
    port = server.bind("127.0.0.1", 0, &error);
    REQUIRE(port > 0);
    thread = std::thread([this] { server.serve(); });
    REQUIRE(server.wait_running(2000));
  }
  ~Fixture() {
    release_all(nullptr);
    server.stop();
    thread.join();
  }
  bool wait_deferred(int n) {
    for (int i = 0; i < 2000 && deferred.load() < n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return deferred.load() >= n;
  }
  void release_all(const ReplacementReply* instead) {
    std::deque<DeferredCompletion> all;
    {
      std::lock_guard<std::mutex> lock(mu);
      all.swap(held);
    }
    for (auto& done : all) done(instead);
  }
};

HttpServerOptions one_thread() {
  HttpServerOptions o;
  o.threads = 1;
  o.keep_alive_timeout_s = 1;
  return o;
}

}  // namespace

TEST_CASE("a held-back response is sent when completed, and holds no serving thread") {
  Fixture f(one_thread());  // one thread: a held request must not keep it
  RawClient a(f.port);
  a.send(get("/later"));
  REQUIRE(f.wait_deferred(1));
  CHECK_FALSE(f.refused.load());
  CHECK(RawClient::count(a.read_responses(1, 200), "HTTP/1.1 ") == 0);  // held back

  RawClient b(f.port);
  b.send(get("/now"));
  std::string other = b.read_responses(1, 5000);
  CHECK(other.find("HTTP/1.1 200") != std::string::npos);
  CHECK(other.find("now") != std::string::npos);

  std::thread completer([&] { f.release_all(nullptr); });  // from another thread
  completer.join();
  std::string got = a.read_responses(1, 5000);
  CHECK(got.find("HTTP/1.1 200") != std::string::npos);
  CHECK(got.find("later") != std::string::npos);

  a.send(get("/now"));  // the connection is served again after its held-back response
  CHECK(RawClient::count(a.read_responses(2, 5000), "HTTP/1.1 200") == 2);
}

TEST_CASE("pipelined requests are answered in order, held-back ones included") {
  Fixture f(one_thread());
  RawClient c(f.port);
  c.send(get("/now") + get("/later") + get("/now", /*close=*/true));
  REQUIRE(f.wait_deferred(1));
  c.read_responses(1, 5000);
  std::string before = c.read_responses(2, 300);
  CHECK(RawClient::count(before, "HTTP/1.1 200") == 1);  // the third waits behind the second
  f.release_all(nullptr);
  bool closed = false;
  std::string all = c.read_responses(0, 5000, &closed);
  CHECK(RawClient::count(all, "HTTP/1.1 200") == 3);
  size_t now1 = all.find("\r\n\r\nnow"), later = all.find("\r\n\r\nlater");
  size_t now2 = all.find("\r\n\r\nnow", now1 + 1);
  CHECK(now1 < later);
  CHECK(later < now2);
  CHECK(now2 != std::string::npos);
  CHECK(closed);  // the last asked for Connection: close
}

TEST_CASE("a held-back response can be replaced by an error, which closes the connection") {
  Fixture f(one_thread());
  RawClient c(f.port);
  c.send(get("/later"));
  REQUIRE(f.wait_deferred(1));
  ReplacementReply instead{503, R"({"error":{"code":"unavailable"}})"};
  f.release_all(&instead);
  bool closed = false;
  std::string got = c.read_responses(0, 5000, &closed);
  CHECK(got.rfind("HTTP/1.1 503 ", 0) == 0);
  CHECK(got.find("Content-Type: application/json\r\n") != std::string::npos);
  CHECK(got.find("Content-Length: 32\r\n") != std::string::npos);
  CHECK(got.find("\r\n\r\n{\"error\":{\"code\":\"unavailable\"}}") != std::string::npos);
  CHECK(got.find("later") == std::string::npos);
  CHECK(closed);
}

TEST_CASE("a kept-alive replacement leaves the connection open, unless the request closes it") {
  Fixture f(one_thread());
  RawClient c(f.port);
  c.send(get("/later"));
  REQUIRE(f.wait_deferred(1));
  ReplacementReply instead{200, R"({"task_id":"first"})", true};
  f.release_all(&instead);
  std::string got = c.read_responses(1, 5000);
  CHECK(got.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(got.find("Keep-Alive: timeout=1, max=") != std::string::npos);
  CHECK(got.find("Connection: close") == std::string::npos);
  CHECK(got.find("\r\n\r\n{\"task_id\":\"first\"}") != std::string::npos);
  CHECK(got.find("later") == std::string::npos);

  c.send(get("/now"));  // served on the same connection
  CHECK(RawClient::count(c.read_responses(1, 5000), "HTTP/1.1 200") == 1);

  c.send(get("/later", true));  // this request asks for the close: the replacement keeps it
  REQUIRE(f.wait_deferred(2));
  f.release_all(&instead);
  bool closed = false;
  got = c.read_responses(0, 5000, &closed);
  CHECK(got.find("Connection: close\r\n") != std::string::npos);
  CHECK(got.find("{\"task_id\":\"first\"}") != std::string::npos);
  CHECK(closed);
}

TEST_CASE("an idle keep-alive connection is closed after the keep-alive timeout") {
  Fixture f(one_thread());  // keep-alive timeout 1 s
  RawClient c(f.port);
  c.send(get("/now"));
  REQUIRE(RawClient::count(c.read_responses(1, 5000), "HTTP/1.1 200") == 1);
  auto t0 = std::chrono::steady_clock::now();
  bool closed = false;
  c.read_responses(0, 5000, &closed);
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(closed);
  CHECK(waited >= 0.9);
  CHECK(waited < 4.5);
}

TEST_CASE("stop sends the held-back responses still on their way, then returns") {
  auto f = std::make_unique<Fixture>(one_thread());
  RawClient c(f->port);
  c.send(get("/later"));
  REQUIRE(f->wait_deferred(1));
  // stop() waits for the held-back response: complete it a little later from another thread.
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    f->release_all(nullptr);
  });
  f->server.stop();
  f->thread.join();
  late.join();
  std::string got = c.read_responses(1, 5000);
  CHECK(got.find("HTTP/1.1 200") != std::string::npos);
  CHECK(got.find("later") != std::string::npos);
  f->thread = std::thread([] {});  // the destructor joins and stops again: harmless
}

TEST_CASE("a completion called inside its handler, or dropped uncalled, still answers") {
  Fixture f(one_thread());
  RawClient c(f.port);
  c.send(get("/at-once"));
  std::string got = c.read_responses(1, 5000);
  CHECK(got.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(got.find("at once") != std::string::npos);

  RawClient d(f.port);
  d.send(get("/dropped"));
  bool closed = false;
  got = d.read_responses(0, 5000, &closed);
  CHECK(got.rfind("HTTP/1.1 500 ", 0) == 0);  // never the 200 the handler left
  CHECK(got.find("dropped") == std::string::npos);
  CHECK(closed);
}

TEST_CASE("a thread stuck in a slow request lends its turn: others are served meanwhile") {
  for (const char* path : {"/slow", "/blocking"}) {
    CAPTURE(path);
    HttpServerOptions o;
    o.threads = 4;
    o.active_threads = 1;  // one thread takes requests; the others wait for a lent turn
    Fixture f(o);
    RawClient slow(f.port);
    slow.send(get(path));
    for (int i = 0; i < 2000 && f.slow_started.load() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    REQUIRE(f.slow_started.load() == 1);
    RawClient other(f.port);
    other.send(get("/now"));
    CHECK(RawClient::count(other.read_responses(1, 1500), "HTTP/1.1 200") == 1);
    // Answered while the slow one still runs.
    CHECK(RawClient::count(slow.read_responses(1, 0), "HTTP/1.1 ") == 0);
    CHECK(RawClient::count(slow.read_responses(1, 5000), "HTTP/1.1 200") == 1);
  }
}

TEST_CASE("a second server cannot bind a port a running one listens on") {
  // httplib's default socket options include SO_REUSEPORT, with which both would listen and
  // share the connections between two unrelated servers.
  Fixture f(one_thread());
  HttpServer second(one_thread());
  std::string error;
  CHECK(second.bind("127.0.0.1", f.port, &error) == -1);
  CHECK(error.find("Address already in use") != std::string::npos);
  RawClient c(f.port);
  c.send("GET /now HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(c.read_responses(1, 2000).find("now") != std::string::npos);
}
