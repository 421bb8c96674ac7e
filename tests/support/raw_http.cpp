#include "support/raw_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace tst {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// Sends from the front of `data` until the peer answers or closes (POLLIN), the deadline passes
// or a send fails. Returns how many bytes went.
size_t send_prefix(int fd, std::string_view data, Deadline deadline) {
  size_t sent = 0;
  while (sent < data.size()) {
    pollfd p{fd, POLLOUT | POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) break;
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) break;
    ssize_t n =
        ::send(fd, data.data() + sent, std::min<size_t>(data.size() - sent, 1 << 16), MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  return sent;
}

// Whether `bytes` can be the start of an HTTP/1.x response.
bool starts_like_http(std::string_view bytes) {
  constexpr std::string_view kPrefix = "HTTP/1.";
  size_t n = std::min(bytes.size(), kPrefix.size());
  return bytes.substr(0, n) == kPrefix.substr(0, n);
}

// "HTTP/1.x NNN" then the end, a space or the end of the line.
bool valid_status_line(const std::string& head) {
  if (head.size() < 12 || head.rfind("HTTP/1.", 0) != 0 || head[8] != ' ') return false;
  for (size_t i = 9; i < 12; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(head[i]))) return false;
  }
  return head.size() == 12 || head[12] == ' ' || head[12] == '\r';
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// A whole number in `base` (10 or 16) with nothing around it; nullopt for a sign, a space, no
// digits or a value past 2^60 (no test sends or expects that much).
std::optional<size_t> parse_size(std::string_view s, int base) {
  if (s.empty()) return std::nullopt;
  size_t v = 0;
  for (char c : s) {
    int d = -1;
    if (c >= '0' && c <= '9') d = c - '0';
    if (base == 16 && c >= 'a' && c <= 'f') d = c - 'a' + 10;
    if (base == 16 && c >= 'A' && c <= 'F') d = c - 'A' + 10;
    if (d < 0) return std::nullopt;
    v = v * static_cast<size_t>(base) + static_cast<size_t>(d);
    if (v > (size_t{1} << 60)) return std::nullopt;
  }
  return v;
}

bool is_closed(ReadEnd end) { return end == ReadEnd::kClosed || end == ReadEnd::kReset; }

}  // namespace

int ms_left(Deadline deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

std::string to_string(ReadEnd end) {
  switch (end) {
    case ReadEnd::kComplete:
      return "complete";
    case ReadEnd::kClosed:
      return "closed";
    case ReadEnd::kReset:
      return "reset";
    case ReadEnd::kTimedOut:
      return "timed out";
    case ReadEnd::kGarbled:
      return "garbled";
  }
  return "?";
}

std::string Reply::header(const std::string& name) const {
  std::istringstream in(head);
  std::string line;
  while (std::getline(in, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string k = line.substr(0, colon);
    std::transform(k.begin(), k.end(), k.begin(), ::tolower);
    if (k == name) {
      std::string v = line.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
      while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
      return v;
    }
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// Sock

Sock::Sock(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Sock::~Sock() {
  if (fd_ >= 0) ::close(fd_);
}

bool Sock::send(std::string_view data, Deadline deadline) {
  return ok() && send_prefix(fd_, data, deadline) == data.size();
}

size_t Sock::send_slowly(std::string_view data, size_t piece, milliseconds gap, Deadline deadline) {
  if (!ok()) return 0;
  // Without it the kernel coalesces the small pieces the test means to send one by one.
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  piece = std::max<size_t>(piece, 1);
  size_t sent = 0;
  while (sent < data.size()) {
    std::string_view next = data.substr(sent, piece);
    size_t n = send_prefix(fd_, next, deadline);
    sent += n;
    if (n < next.size() || sent == data.size()) break;
    // The gap, cut short when the peer answers or closes.
    pollfd p{fd_, POLLIN, 0};
    int wait = std::min<int>(static_cast<int>(gap.count()), ms_left(deadline));
    if (::poll(&p, 1, wait) != 0 || ms_left(deadline) == 0) break;
  }
  return sent;
}

void Sock::shutdown_write() {
  if (ok()) ::shutdown(fd_, SHUT_WR);
}

std::optional<ReadEnd> Sock::fill(Deadline deadline) {
  if (!ok()) return ReadEnd::kReset;
  pollfd p{fd_, POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, ms_left(deadline));
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) return ReadEnd::kTimedOut;
  char chunk[65536];
  ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n == 0) return ReadEnd::kClosed;
  if (n < 0) return ReadEnd::kReset;
  pending_.append(chunk, static_cast<size_t>(n));
  return std::nullopt;
}

Reply Sock::read_response(Deadline deadline, bool to_head_request) {
  Reply r;
  auto stop = [&r](ReadEnd end) {
    r.end = end;
    r.closed = is_closed(end);
    r.garbled = end == ReadEnd::kGarbled;
    return r;
  };
  // The head, after any interim (1xx) ones.
  for (;;) {
    size_t end;
    while ((end = pending_.find("\r\n\r\n")) == std::string::npos) {
      if (!starts_like_http(pending_)) return stop(ReadEnd::kGarbled);
      if (auto e = fill(deadline)) return stop(*e);
    }
    r.head = pending_.substr(0, end);
    if (!valid_status_line(r.head)) return stop(ReadEnd::kGarbled);
    pending_.erase(0, end + 4);
    r.status = std::atoi(r.head.c_str() + 9);
    // 101 Switching Protocols is final: what follows is no longer HTTP.
    if (r.status >= 200 || r.status == 101) break;
    r.interim.push_back(r.status);
    r.status = 0;
  }
  if (to_head_request || r.status == 101 || r.status == 204 || r.status == 304) {
    return stop(ReadEnd::kComplete);
  }
  // The body, framed as RFC 9112 section 6.3 says: chunked as the last transfer coding wins over a
  // Content-Length; any other transfer coding, or neither header, runs to the close.
  std::string te = lower(r.header("transfer-encoding"));
  std::string cl = r.header("content-length");
  auto take = [&](size_t n) {
    r.body = pending_.substr(0, n);
    pending_.erase(0, n);
  };
  if (te.size() >= 7 && te.compare(te.size() - 7, 7, "chunked") == 0) {
    if (!read_chunked(&r, deadline)) return r;
    return stop(ReadEnd::kComplete);
  }
  if (te.empty() && !cl.empty()) {
    std::optional<size_t> length = parse_size(cl, 10);
    if (!length) return stop(ReadEnd::kGarbled);
    while (pending_.size() < *length) {
      if (auto e = fill(deadline)) {
        take(pending_.size());
        return stop(*e);
      }
    }
    take(*length);
    return stop(ReadEnd::kComplete);
  }
  for (;;) {
    if (auto e = fill(deadline)) {
      take(pending_.size());
      stop(*e);
      if (*e == ReadEnd::kClosed) r.end = ReadEnd::kComplete;
      return r;
    }
  }
}

bool Sock::read_chunked(Reply* r, Deadline deadline) {
  size_t at = 0;  // how much of pending_ is consumed
  auto fail = [&](ReadEnd end) {
    pending_.erase(0, at);
    r->end = end;
    r->closed = is_closed(end);
    r->garbled = end == ReadEnd::kGarbled;
    return false;
  };
  // The end of the line that starts at `at`, reading more until it comes.
  auto line_end = [&](size_t* eol) -> std::optional<ReadEnd> {
    while ((*eol = pending_.find("\r\n", at)) == std::string::npos) {
      if (auto e = fill(deadline)) return e;
    }
    return std::nullopt;
  };
  size_t eol = 0;
  for (;;) {
    if (auto e = line_end(&eol)) return fail(*e);
    std::string_view size_line(pending_.data() + at, eol - at);
    size_line = size_line.substr(0, size_line.find(';'));  // chunk extensions
    while (!size_line.empty() && (size_line.back() == ' ' || size_line.back() == '\t')) {
      size_line.remove_suffix(1);
    }
    std::optional<size_t> size = parse_size(size_line, 16);
    if (!size) return fail(ReadEnd::kGarbled);
    at = eol + 2;
    if (*size == 0) break;
    while (pending_.size() < at + *size + 2) {
      if (auto e = fill(deadline)) return fail(*e);
    }
    if (pending_.compare(at + *size, 2, "\r\n") != 0) return fail(ReadEnd::kGarbled);
    r->body.append(pending_, at, *size);
    at += *size + 2;
  }
  // The trailer section: field lines up to an empty line.
  for (;;) {
    if (auto e = line_end(&eol)) return fail(*e);
    bool empty = eol == at;
    at = eol + 2;
    if (empty) break;
  }
  pending_.erase(0, at);
  return true;
}

CloseWait Sock::wait_closed(milliseconds timeout) {
  CloseWait w;
  auto start = Clock::now();
  w.got.swap(pending_);
  for (;;) {
    std::optional<ReadEnd> e = fill(start + timeout);
    w.got += pending_;
    pending_.clear();
    if (e) {
      w.end = *e;
      break;
    }
  }
  w.took = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  return w;
}

// ---------------------------------------------------------------------------------------------
// Straight off a socket

bool send_all(int fd, std::string_view data, Deadline deadline) {
  return send_prefix(fd, data, deadline) == data.size();
}

Reply read_reply(int fd, Deadline deadline) {
  Reply r;
  std::string buf;
  size_t want = std::string::npos;
  for (;;) {
    size_t end = buf.find("\r\n\r\n");
    if (end != std::string::npos && want == std::string::npos) {
      r.head = buf.substr(0, end);
      if (r.head.rfind("HTTP/1.", 0) != 0 || r.head.size() < 12) {
        r.garbled = true;
        r.end = ReadEnd::kGarbled;
        break;
      }
      r.status = std::atoi(r.head.c_str() + 9);
      if (r.status >= 100 && r.status < 200) {  // interim (100 Continue): the answer follows
        r.interim.push_back(r.status);
        buf.erase(0, end + 4);
        r.status = 0;
        continue;
      }
      std::string cl = r.header("content-length");
      want = cl.empty() ? std::string::npos - 1 : end + 4 + std::stoul(cl);
    }
    if (want != std::string::npos && buf.size() >= want) {
      r.end = ReadEnd::kComplete;
      break;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) {
      r.end = ReadEnd::kTimedOut;
      break;
    }
    char chunk[65536];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) {
      r.closed = true;
      r.end = n == 0 ? ReadEnd::kClosed : ReadEnd::kReset;
      break;
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
  if (r.status == 0 && !buf.empty() && !r.garbled) r.garbled = buf.rfind("HTTP/1.", 0) != 0;
  if (r.garbled) r.end = ReadEnd::kGarbled;
  size_t end = buf.find("\r\n\r\n");
  if (r.status != 0 && end != std::string::npos) {
    r.body =
        buf.substr(end + 4, want == std::string::npos - 1 ? std::string::npos : want - end - 4);
    if (want < buf.size()) r.after = buf.substr(want);
  }
  return r;
}

std::optional<milliseconds> wait_closed(int fd, milliseconds timeout, std::string* got) {
  auto start = Clock::now();
  auto deadline = start + timeout;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_left(deadline)) <= 0) return std::nullopt;
    char chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return std::chrono::duration_cast<milliseconds>(Clock::now() - start);
    if (got) got->append(chunk, static_cast<size_t>(n));
  }
}

Reply talk(int port, const std::string& bytes, milliseconds timeout) {
  Sock s(port);
  if (!s.ok()) {
    Reply failed;
    failed.end = ReadEnd::kReset;
    return failed;
  }
  auto deadline = Clock::now() + timeout;
  send_all(s.fd(), bytes, deadline);
  return read_reply(s.fd(), deadline);
}

// ---------------------------------------------------------------------------------------------
// Request bytes

std::string request(const std::string& method, const std::string& target, const std::string& body,
                    const std::string& content_type, const std::string& extra_headers,
                    Connection connection) {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (connection == Connection::kClose) r += "Connection: close\r\n";
  if (!content_type.empty()) r += "Content-Type: " + content_type + "\r\n";
  if (method == "POST" || !body.empty()) {
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return r + extra_headers + "\r\n" + body;
}

std::string post(const std::string& target, const std::string& body,
                 const std::string& content_type, const std::string& extra) {
  return request("POST", target, body, content_type, extra);
}

std::string get(const std::string& target, const std::string& extra) {
  return request("GET", target, "", "", extra);
}

std::string chunked(std::string_view body, size_t piece) {
  piece = std::max<size_t>(piece, 1);
  std::string out;
  char size[32];
  for (size_t at = 0; at < body.size(); at += piece) {
    std::string_view chunk = body.substr(at, piece);
    std::snprintf(size, sizeof size, "%zx\r\n", chunk.size());
    out.append(size).append(chunk).append("\r\n");
  }
  return out + "0\r\n\r\n";
}

}  // namespace tst
