#pragma once
// GarbageBackend is a backend that answers garbage, for tests of how the server copes with a
// broken one: a raw TCP server on a free loopback port that answers GET /health properly (so the
// balancer keeps it up) and answers each task request according to the mode named in its prompt:
//   mode-nonhttp     bytes that are not HTTP
//   mode-notjson     200 with a body that is not JSON
//   mode-badb64      200 with an images answer whose b64_json is not base64
//   mode-truncated   200 whose body stops short of its Content-Length, then the close
//   mode-hang        nothing, the connection held open
//   mode-trickle     a 200 head, then a byte of body every 500 ms
//   mode-500binary   500 with a body that is not UTF-8
//   mode-badstatus   a status line without a number
//   mode-negcl       Content-Length: -5
//   mode-badchunks   chunked encoding with a chunk size that is not hex
//   mode-reset       a TCP reset
//   mode-busy        503 with Retry-After: 1
//   mode-hugeheader  a 1 MiB header
// and 400 to a request that names none of them. Test-only (it fails the test when it cannot
// listen). It owns its listening socket, an accepting thread and one thread a connection; the
// destructor stops and joins them all. requests() may be called from any thread.

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tst {

class GarbageBackend {
 public:
  GarbageBackend();
  ~GarbageBackend();
  GarbageBackend(const GarbageBackend&) = delete;
  GarbageBackend& operator=(const GarbageBackend&) = delete;
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // How many task requests named `mode` so far.
  int requests(const std::string& mode);

 private:
  void accept_loop();
  // Holds the connection open, sending `drip` every 500 ms, until the client goes or the test
  // ends.
  void hold(int fd, const std::string& drip);
  void serve(int fd);

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  struct Conn {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<Conn> threads_;          // guarded by mu_
  std::map<std::string, int> counts_;  // guarded by mu_
};

}  // namespace tst
