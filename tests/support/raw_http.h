#pragma once
// Raw HTTP/1.1 over loopback TCP sockets, for end-to-end tests that must send what no HTTP client
// library sends and see exactly what comes back: malformed framing, a request cut short or sent a
// byte at a time, several requests on one keep-alive connection, an interim 100, a second
// response, a clean close, a reset, or silence. Test-only; nothing of the server is used. Not
// thread-safe: one thread drives a socket (separate sockets on separate threads are fine).
//
// Two ways to read a response:
// - read_reply(fd, deadline) reads one answer and keeps whatever else came in the same reads in
//   Reply::after; without a Content-Length it reads until the peer closes. For a request sent on
//   a connection of its own.
// - Sock::read_response(deadline) reads exactly one response off the socket (its body framed by
//   Content-Length, chunked encoding, or the close) and keeps the bytes after it for the next
//   call. For keep-alive and pipelined requests.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tst {

using Deadline = std::chrono::steady_clock::time_point;

// Milliseconds from now until `deadline`, 0 once it has passed: a poll(2) timeout.
int ms_left(Deadline deadline);

// How a read off a socket ended.
enum class ReadEnd {
  kComplete,  // a whole response came
  kClosed,    // the peer closed the connection cleanly (end of stream)
  kReset,     // the connection was reset or broke
  kTimedOut,  // the deadline passed with the connection still open
  kGarbled,   // bytes came that are not an HTTP response
};
std::string to_string(ReadEnd end);

// One HTTP response as read off a socket.
struct Reply {
  int status = 0;            // 0: no HTTP answer, the connection was closed (or reset)
  std::string head;          // the status line and header lines, without the blank line
  std::string body;          // de-chunked by Sock::read_response; as sent by read_reply
  bool closed = false;       // the peer closed or reset the connection during the read
  bool garbled = false;      // bytes came that are not an HTTP response
  std::vector<int> interim;  // 1xx answers before the final one
  std::string after;         // read_reply only: bytes that came after the answer (more answers)
  ReadEnd end = ReadEnd::kTimedOut;  // kComplete, or why the read stopped short
  // The value of the first header called `name` (lower case), trimmed; "" when there is none.
  std::string header(const std::string& name) const;
};

// What Sock::wait_closed saw.
struct CloseWait {
  ReadEnd end = ReadEnd::kTimedOut;   // kClosed, kReset or kTimedOut
  std::chrono::milliseconds took{0};  // until the close, or the whole timeout
  std::string got;                    // bytes that came before the close
};

// A TCP connection to 127.0.0.1:port, closed by the destructor. Its read functions keep the bytes
// past the response they read for the next one; the free functions below that take fd() read
// straight off the socket, so use one or the other on a connection once it has answered.
class Sock {
 public:
  explicit Sock(int port);
  ~Sock();
  Sock(const Sock&) = delete;
  Sock& operator=(const Sock&) = delete;
  int fd() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

  // Sends all of `data` unless the peer answers or closes first, or the deadline passes. False
  // when it stopped early.
  bool send(std::string_view data, Deadline deadline);
  // Sends `data` `piece` bytes at a time, `gap` apart, as a slow client does. Stops early when the
  // peer answers or closes (what it sent stays to be read) or the deadline passes. Returns how
  // many bytes were sent: data.size() when all were.
  size_t send_slowly(std::string_view data, size_t piece, std::chrono::milliseconds gap,
                     Deadline deadline);
  // Half-closes the connection: the peer reads the end of the stream, and can still answer.
  void shutdown_write();

  // Reads exactly one response, after any 1xx interim ones. Its end is kComplete when the whole
  // response came, or how the read stopped short (then status and head are set if the head came,
  // and body holds what came of it). `to_head_request`: the response of a HEAD has no body.
  Reply read_response(Deadline deadline, bool to_head_request = false);
  // Waits up to `timeout` for the peer to close, keeping what it sends meanwhile (bytes already
  // read past the last response included).
  CloseWait wait_closed(std::chrono::milliseconds timeout);
  // Bytes read past the last response and not yet consumed.
  const std::string& pending() const { return pending_; }

 private:
  // One recv into pending_: nullopt when bytes came, else how the stream ended or the timeout.
  std::optional<ReadEnd> fill(Deadline deadline);
  // Reads the body of `r` from pending_ by chunked encoding; false with r->end set on failure.
  bool read_chunked(Reply* r, Deadline deadline);

  int fd_ = -1;
  std::string pending_;
};

// Sends all of `data` unless the peer closes, answers first (POLLIN) or the deadline passes.
// False when it stopped early.
bool send_all(int fd, std::string_view data, Deadline deadline);

// Reads one response: up to its Content-Length, or until the peer closes or the deadline.
Reply read_reply(int fd, Deadline deadline);

// Waits until the server closes the connection (reading and keeping whatever it sends in *got,
// when not null). Returns how long that took, or nullopt after `timeout`.
std::optional<std::chrono::milliseconds> wait_closed(int fd, std::chrono::milliseconds timeout,
                                                     std::string* got);

// One request on a connection of its own: connects, sends, reads the reply. When the connection
// fails: a Reply with status 0, closed unset and end kReset.
Reply talk(int port, const std::string& bytes,
           std::chrono::milliseconds timeout = std::chrono::seconds(15));

// Request bytes. The body gets a Content-Length when there is one, or the method is POST; the
// content type is left out when empty; `extra_headers` are whole lines, each ending in \r\n.
enum class Connection { kClose, kKeepAlive };
std::string request(const std::string& method, const std::string& target, const std::string& body,
                    const std::string& content_type = "application/json",
                    const std::string& extra_headers = "",
                    Connection connection = Connection::kClose);
std::string post(const std::string& target, const std::string& body,
                 const std::string& content_type = "application/json",
                 const std::string& extra = "");
std::string get(const std::string& target, const std::string& extra = "");

// `body` in chunked transfer encoding, in chunks of `piece` bytes, with the last chunk.
std::string chunked(std::string_view body, size_t piece);

}  // namespace tst
