#pragma once
// Internal to src/http: one accepted connection (Conn), httplib's view of it (ConnStream) and
// the socket helpers the Loop uses. Not a public header of the module.

#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "core/mutex.h"
#include "http/server.h"

namespace ts {

// Milliseconds of the steady clock (timeouts, idle times).
int64_t now_ms();

// Waits up to timeout_ms for `events` on fd; false on timeout or error.
bool wait_for(int fd, short events, int timeout_ms);

// A response bigger than this is sent as it is written instead of in one piece.
constexpr size_t kFlushAt = 64 * 1024;

enum class ConnState { kBusy, kIdle, kClosed };

// One accepted connection. It has one owner at a time: the Loop thread serving it, then (for a
// deferred response) whoever completes the response; the epoll set holds it in between.
// Ownership passes through `mu` (idle in the set -> taken by a thread) or `arrivals` (the
// serving thread and the completer of a deferred response: the second one to arrive goes on).
struct Conn : std::enable_shared_from_this<Conn> {
  int fd = -1;
  uint64_t id = 0;
  std::string remote_ip, local_ip;
  int remote_port = 0, local_port = 0;

  // Owner only. Not annotated: ownership passes between threads by the protocol above, which
  // clang's analysis cannot follow (no lock is held while the owner uses them).
  std::array<char, 8192> in{};  // bytes received and not yet parsed: in[in_begin, in_end)
  size_t in_begin = 0, in_end = 0;
  std::string out;         // response bytes not yet sent
  bool capture = false;    // a deferred response: writes stay in `out`
  bool streaming = false;  // a chunked response (SSE): each write goes out at once
  bool write_failed = false;
  bool close_after = false;  // the response in `out` is the connection's last
  size_t served = 0;
  bool deferred = false;
  std::optional<ReplacementReply> instead;  // set by the completer before it arrives
  std::atomic<int> arrivals{0};

  Mutex mu;
  ConnState state GUARDED_BY(mu) = ConnState::kBusy;
  int64_t idle_since_ms GUARDED_BY(mu) = 0;
};

enum class Sent { kAll, kWouldBlock, kFailed };

// Sends what it can of c.out and drops what went. wait_ms < 0: returns kWouldBlock once the
// socket is full; otherwise waits up to wait_ms each time it is. A failure drops the rest and
// marks the connection.
Sent send_out(Conn& c, int wait_ms);

// Sends all of c.out, waiting up to timeout_ms each time the socket is full.
bool flush(Conn& c, int timeout_ms);

// httplib's view of a connection: buffered reads, writes held until the response is complete
// (or kept for a deferred response), timeouts by poll.
class ConnStream final : public httplib::Stream {
 public:
  ConnStream(Conn& c, int read_timeout_ms, int write_timeout_ms)
      : c_(c), read_ms_(read_timeout_ms), write_ms_(write_timeout_ms) {}

  bool is_readable() const override {
    return c_.in_begin < c_.in_end || wait_for(c_.fd, POLLIN, read_ms_);
  }

  bool is_writable() const override {
    if (!c_.capture && !c_.out.empty() && !flush(c_, write_ms_)) return false;
    return wait_for(c_.fd, POLLOUT, write_ms_) && peer_open();
  }

  ssize_t read(char* ptr, size_t size) override {
    // What was written so far goes out before waiting for more input ("100 Continue").
    if (!c_.capture && !c_.out.empty() && !flush(c_, write_ms_)) return -1;
    if (c_.in_begin == c_.in_end) {
      ssize_t n = fill();
      if (n <= 0) return n;
    }
    size_t n = std::min(size, c_.in_end - c_.in_begin);
    std::memcpy(ptr, c_.in.data() + c_.in_begin, n);
    c_.in_begin += n;
    if (in_head_) {
      for (size_t i = 0; i < n && in_head_; ++i) {
        tail_ = (tail_ << 8) | static_cast<unsigned char>(ptr[i]);
        if (tail_ == 0x0d0a0d0a) in_head_ = false;  // httplib's headers end with CRLF CRLF
      }
    }
    return static_cast<ssize_t>(n);
  }

  // A request's line and headers must arrive within the read timeout in all, not per read: a
  // client dribbling its headers a byte at a time would otherwise hold a thread for ever.
  void begin_request() {
    in_head_ = true;
    tail_ = 0;
    head_deadline_ms_ = now_ms() + read_ms_;
  }
  // True when the request's head did not arrive whole (timed out, cut, or unparsable before
  // its end): its connection cannot be read further.
  bool head_incomplete() const { return in_head_; }

  ssize_t write(const char* ptr, size_t size) override {
    if (c_.write_failed) return -1;
    if (!c_.capture && !c_.streaming && is_chunked_head(ptr, size)) c_.streaming = true;
    c_.out.append(ptr, size);
    if (c_.capture) return static_cast<ssize_t>(size);
    if ((c_.streaming || c_.out.size() >= kFlushAt) && !flush(c_, write_ms_)) return -1;
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.remote_ip;
    port = c_.remote_port;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = c_.local_ip;
    port = c_.local_port;
  }
  socket_t socket() const override { return c_.fd; }

 private:
  // httplib writes a response's status line and headers in one write.
  static bool is_chunked_head(const char* ptr, size_t size) {
    std::string_view s(ptr, size);
    return s.rfind("HTTP/1.", 0) == 0 && s.find("\r\nTransfer-Encoding: chunked\r\n") != s.npos;
  }

  ssize_t fill() {
    for (;;) {
      ssize_t n = ::recv(c_.fd, c_.in.data(), c_.in.size(), MSG_DONTWAIT);
      if (n >= 0) {
        c_.in_begin = 0;
        c_.in_end = static_cast<size_t>(n);
        return n;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      int timeout = read_ms_;
      if (in_head_) {
        int64_t left = head_deadline_ms_ - now_ms();
        if (left <= 0) return -1;
        timeout = static_cast<int>(std::min<int64_t>(left, read_ms_));
      }
      if (!wait_for(c_.fd, POLLIN, timeout)) return -1;
    }
  }

  // False once the peer has closed its side (a streaming response then stops).
  bool peer_open() const {
    if (!wait_for(c_.fd, POLLIN, 0)) return true;
    char byte;
    ssize_t n = ::recv(c_.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
  }

  Conn& c_;
  int read_ms_;
  int write_ms_;
  bool in_head_ = false;  // reading a request's line and headers
  uint32_t tail_ = 0;     // the last four bytes read, to find the head's end
  int64_t head_deadline_ms_ = 0;
};

// The printable address of a peer, and its port in *port.
std::string ip_of(const sockaddr_storage& a, int* port);
// The reason phrase of a status code, for the replies the Loop writes itself.
const char* reason_of(int status);

}  // namespace ts
