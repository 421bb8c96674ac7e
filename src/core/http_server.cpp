#include "core/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/blocking.h"
#include "core/thread_name.h"

namespace ts {

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

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

  // Owner only.
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

  std::mutex mu;
  ConnState state = ConnState::kBusy;  // guarded by mu
  int64_t idle_since_ms = 0;           // guarded by mu
};

bool wait_for(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

enum class Sent { kAll, kWouldBlock, kFailed };

// Sends what it can of c.out and drops what went. wait_ms < 0: returns kWouldBlock once the
// socket is full; otherwise waits up to wait_ms each time it is. A failure drops the rest and
// marks the connection.
Sent send_out(Conn& c, int wait_ms) {
  size_t sent = 0;
  Sent result = Sent::kAll;
  while (sent < c.out.size()) {
    ssize_t n = ::send(c.fd, c.out.data() + sent, c.out.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    bool full = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (full && wait_ms < 0) {
      result = Sent::kWouldBlock;
      break;
    }
    if (full && wait_for(c.fd, POLLOUT, wait_ms)) continue;
    c.write_failed = true;
    sent = c.out.size();
    result = Sent::kFailed;
  }
  c.out.erase(0, sent);
  return result;
}

// Sends all of c.out, waiting up to timeout_ms each time the socket is full.
bool flush(Conn& c, int timeout_ms) { return send_out(c, timeout_ms) == Sent::kAll; }

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

std::string ip_of(const sockaddr_storage& a, int* port) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (a.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&a);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    *port = ntohs(in->sin_port);
  } else if (a.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    *port = ntohs(in6->sin6_port);
  }
  return buf;
}

const char* reason_of(int status) {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    default: return status >= 500 ? "Internal Server Error" : "Error";
  }
}

thread_local Conn* t_conn = nullptr;             // the connection this Loop thread serves
thread_local HttpServer::Loop* t_loop = nullptr;

}  // namespace

// The epoll set, the serving threads and the connection registry of one serve() call. httplib's
// accept loop creates it as its "task queue" and calls shutdown() when stop() ends the loop.
class HttpServer::Loop final : public httplib::TaskQueue {
  // One per serving thread.
  struct Slot {
    Loop* loop = nullptr;
    std::atomic<int64_t> serving_since{0};  // ms, 0 while not serving
    bool stuck = false;                      // lent its turn; guarded by turns_mu_
  };

 public:
  explicit Loop(HttpServer& server)
      : server_(server),
        opt_(server.options_),
        epfd_(::epoll_create1(EPOLL_CLOEXEC)),
        wake_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        n_threads_(std::max(1, server.options_.threads)),
        keep_alive_header_("Keep-Alive: timeout=" + std::to_string(opt_.keep_alive_timeout_s) +
                           ", max=" + std::to_string(opt_.keep_alive_max_count) + "\r\n") {
    epoll_event ev{};
    ev.events = EPOLLIN;  // level-triggered: once written, it wakes every thread for good
    ev.data.u64 = 0;
    ::epoll_ctl(epfd_, EPOLL_CTL_ADD, wake_fd_, &ev);
    const int n = n_threads_;
    int active = opt_.active_threads > 0
                     ? opt_.active_threads
                     : 2 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    turns_ = std::min(active, n);
    slots_ = std::make_unique<Slot[]>(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      slots_[i].loop = this;
      threads_.emplace_back([this, i] {
        name_this_thread(opt_.thread_name);
        t_blocking_notice = {&Loop::lend_turn, &slots_[i]};
        run(slots_[i]);
      });
    }
    if (turns_ < n) {
      watchdog_ = std::thread([this] {
        name_this_thread(opt_.thread_name + "-wd");
        watch();
      });
    }
  }

  ~Loop() override {
    ::close(epfd_);
    ::close(wake_fd_);
  }

  // Called by httplib's accept loop for each new connection: it only joins the set.
  void enqueue(std::function<void()> fn) override { fn(); }

  void shutdown() override {
    stopping_.store(true);
    uint64_t one = 1;
    ssize_t ignored = ::write(wake_fd_, &one, sizeof one);
    (void)ignored;
    {
      std::lock_guard<std::mutex> lock(turns_mu_);  // no waiter between its check and its wait
    }
    turns_cv_.notify_all();
    watch_cv_.notify_all();
    for (auto& t : threads_) t.join();
    if (watchdog_.joinable()) watchdog_.join();
    {
      // A deferred response still on its way is sent, then its connection closed.
      std::unique_lock<std::mutex> lock(inflight_mu_);
      inflight_cv_.wait(lock, [&] { return inflight_ == 0; });
    }
    std::unordered_map<uint64_t, std::shared_ptr<Conn>> left;
    {
      std::lock_guard<std::mutex> lock(mu_);
      left.swap(conns_);
    }
    for (auto& [id, c] : left) close_fd(*c);
  }

  void add(int fd) {
    int flags = ::fcntl(fd, F_GETFL, 0);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int yes = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    auto c = std::make_shared<Conn>();
    c->fd = fd;
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      c->remote_ip = ip_of(a, &c->remote_port);
    }
    len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      c->local_ip = ip_of(a, &c->local_port);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_.load()) {
        ::shutdown(fd, SHUT_RDWR);
        ::close(fd);
        return;
      }
      c->id = ++next_id_;
      conns_.emplace(c->id, c);
    }
    rearm(c, EPOLLIN, EPOLL_CTL_ADD);
  }

  DeferredCompletion defer(Conn& c) {
    if (c.deferred) return {};
    if (!c.capture && !c.out.empty() && !flush(c, write_ms())) return {};
    c.deferred = true;
    c.capture = true;
    c.instead.reset();
    c.arrivals.store(0);
    {
      std::lock_guard<std::mutex> lock(inflight_mu_);
      ++inflight_;
    }
    // Whatever becomes of the completion, the connection gets an answer: dropped uncalled (a
    // handler that threw after deferring), it answers 500; called twice, the second is ignored.
    struct Once {
      Loop* loop;
      std::shared_ptr<Conn> c;
      std::atomic<bool> called{false};
      void complete(const ReplacementReply* instead) {
        if (called.exchange(true)) return;
        if (instead) c->instead = *instead;
        loop->arrive(c);
      }
      ~Once() {
        ReplacementReply lost{500, R"({"error":{"code":"internal","message":"the response was lost"}})"};
        complete(&lost);
      }
    };
    auto once = std::make_shared<Once>();
    once->loop = this;
    once->c = c.shared_from_this();
    return [once](const ReplacementReply* instead) { once->complete(instead); };
  }

 private:
  int read_ms() const { return opt_.read_timeout_s * 1000; }
  int write_ms() const { return opt_.write_timeout_s * 1000; }

  // A serving thread. Only `turns_` threads wait for requests at once (the takers); the others
  // are parked. Every thread waiting in epoll_wait is woken for a new request even when a busy
  // one would take it a moment later, so with one waiter per connection most requests cost a
  // wake-up; a few takers on a busy server mostly find the next request ready. A taker stuck in
  // a slow request (an SSE stream, a long-poll) is given a replacement by the watchdog.
  void run(Slot& me) {
    epoll_event ev{};
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(turns_mu_);
        turns_cv_.wait(lock, [&] { return takers_ < turns_ || stopping_.load(); });
        if (stopping_.load()) return;
        ++takers_;
      }
      for (bool taker = true; taker;) {
        int n = ::epoll_wait(epfd_, &ev, 1, 1000);
        if (stopping_.load()) return;
        bool served = false;
        if (n == 1 && ev.data.u64 != 0) {
          if (std::shared_ptr<Conn> c = take(ev.data.u64)) {
            me.serving_since.store(now_ms());
            serve(c);
            served = true;
          }
        }
        {
          std::lock_guard<std::mutex> lock(turns_mu_);
          if (served) {
            me.serving_since.store(0);
            if (me.stuck) {  // its replacement keeps the turn
              me.stuck = false;
              --turns_;
            }
          }
          if (takers_ > turns_) {
            --takers_;
            taker = false;
          }
        }
        maybe_sweep();
      }
    }
  }

  // about_to_block() on a serving thread: it lends its turn to a parked thread until its request
  // is done (the watchdog does the same for a request that blocks without saying so).
  static void lend_turn(void* ctx) {
    Slot& me = *static_cast<Slot*>(ctx);
    Loop& loop = *me.loop;
    std::lock_guard<std::mutex> lock(loop.turns_mu_);
    if (me.serving_since.load() == 0 || me.stuck) return;
    me.stuck = true;
    ++loop.turns_;
    loop.turns_cv_.notify_one();
  }

  // Every few milliseconds: a taker serving one request for longer than kStuckMs lends its turn
  // to a parked thread until it is done.
  void watch() {
    constexpr int64_t kStuckMs = 10;
    std::unique_lock<std::mutex> lock(turns_mu_);
    while (!stopping_.load()) {
      watch_cv_.wait_for(lock, std::chrono::milliseconds(5));
      int64_t now = now_ms();
      for (int i = 0; i < n_threads_; ++i) {
        Slot& s = slots_[i];
        int64_t since = s.serving_since.load();
        if (since != 0 && !s.stuck && now - since >= kStuckMs) {
          s.stuck = true;
          ++turns_;
          turns_cv_.notify_one();
        }
      }
    }
  }

  // The connection of an epoll event, now owned by the caller; null when it was closed meanwhile.
  std::shared_ptr<Conn> take(uint64_t id) {
    std::shared_ptr<Conn> c;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = conns_.find(id);
      if (it == conns_.end()) return nullptr;
      c = it->second;
    }
    std::lock_guard<std::mutex> lock(c->mu);
    if (c->state != ConnState::kIdle) return nullptr;
    c->state = ConnState::kBusy;
    return c;
  }

  // Serves the requests of an owned connection until it has to wait for the next one.
  void serve(const std::shared_ptr<Conn>& c) {
    if (!c->out.empty()) {
      // The rest of a deferred response, for a client that was slow to read it.
      if (!flush(*c, write_ms())) return close_owned(c);
      if (c->close_after) return close_owned(c);
      if (c->in_begin == c->in_end) return rearm(c, EPOLLIN);
    }
    if (c->close_after) return close_owned(c);
    ConnStream stream(*c, read_ms(), write_ms());
    for (;;) {
      bool close_connection =
          stopping_.load() || ++c->served >= static_cast<size_t>(opt_.keep_alive_max_count);
      bool connection_closed = false;
      c->deferred = false;
      stream.begin_request();
      t_conn = c.get();
      t_loop = this;
      bool ok = server_.serve_one(stream, close_connection, connection_closed);
      t_conn = nullptr;
      t_loop = nullptr;
      c->close_after = !ok || connection_closed || close_connection || c->write_failed ||
                       stream.head_incomplete();
      if (c->deferred) return arrive(c);
      c->streaming = false;
      if (!c->out.empty() && !flush(*c, write_ms())) return close_owned(c);
      if (c->close_after) return close_owned(c);
      if (c->in_begin == c->in_end) return rearm(c, EPOLLIN);
      // The client sent its next request already: serve it now.
    }
  }

  // The serving thread and the completer of a deferred response each arrive once; the second
  // sends the response and hands the connection back to the set.
  void arrive(const std::shared_ptr<Conn>& c) {
    if (c->arrivals.fetch_add(1, std::memory_order_acq_rel) == 0) return;
    Conn& conn = *c;
    conn.capture = false;
    conn.deferred = false;
    if (conn.instead) {
      std::string body = std::move(conn.instead->json_body);
      int status = conn.instead->status;
      if (!conn.instead->keep_alive) conn.close_after = true;
      conn.instead.reset();
      // The connection header as httplib writes it for its own responses.
      std::string connection = conn.close_after ? "Connection: close\r\n" : keep_alive_header_;
      conn.out = "HTTP/1.1 " + std::to_string(status) + " " + reason_of(status) +
                 "\r\nContent-Type: application/json\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\n" + connection + "\r\n" + body;
    }
    // Without waiting: a full socket is left to a serving thread (EPOLLOUT).
    if (send_out(conn, -1) == Sent::kFailed) conn.close_after = true;
    if (!conn.out.empty() && stopping_.load()) {
      // No thread is left to finish it: wait here (bounded by the write timeout).
      flush(conn, write_ms());
      close_owned(c);
    } else if (!conn.out.empty()) {
      rearm(c, EPOLLOUT);
    } else if (conn.close_after || stopping_.load()) {
      close_owned(c);
    } else {
      // A request already buffered is served by a thread at once (the socket is writable).
      rearm(c, conn.in_begin < conn.in_end ? EPOLLOUT : EPOLLIN);
    }
    std::lock_guard<std::mutex> lock(inflight_mu_);
    if (--inflight_ == 0) inflight_cv_.notify_all();
  }

  // Hands an owned connection to the set (op ADD for a new one), to be taken by the thread that
  // sees `events` on it.
  void rearm(const std::shared_ptr<Conn>& c, uint32_t events, int op = EPOLL_CTL_MOD) {
    std::lock_guard<std::mutex> lock(c->mu);
    c->state = ConnState::kIdle;
    c->idle_since_ms = now_ms();
    epoll_event ev{};
    ev.events = events | EPOLLONESHOT;
    ev.data.u64 = c->id;
    if (::epoll_ctl(epfd_, op, c->fd, &ev) != 0) {
      c->state = ConnState::kBusy;  // not in the set: closed as its owner
      close_owned(c, /*locked=*/true);
    }
  }

  void close_owned(const std::shared_ptr<Conn>& c, bool locked = false) {
    if (locked) {
      close_fd_locked(*c);
    } else {
      std::lock_guard<std::mutex> lock(c->mu);
      close_fd_locked(*c);
    }
    std::lock_guard<std::mutex> lock(mu_);
    conns_.erase(c->id);
  }

  void close_fd(Conn& c) {
    std::lock_guard<std::mutex> lock(c.mu);
    close_fd_locked(c);
  }

  void close_fd_locked(Conn& c) {
    if (c.fd < 0) return;
    c.state = ConnState::kClosed;
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, c.fd, nullptr);
    ::shutdown(c.fd, SHUT_RDWR);
    ::close(c.fd);
    c.fd = -1;
  }

  // Closes keep-alive connections idle for longer than the keep-alive timeout (once a second,
  // by whichever thread passes by).
  void maybe_sweep() {
    int64_t now = now_ms();
    int64_t last = last_sweep_ms_.load();
    if (now - last < 1000 || !last_sweep_ms_.compare_exchange_strong(last, now)) return;
    std::vector<std::shared_ptr<Conn>> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all.reserve(conns_.size());
      for (auto& [id, c] : conns_) all.push_back(c);
    }
    const int64_t limit = static_cast<int64_t>(opt_.keep_alive_timeout_s) * 1000;
    std::vector<uint64_t> closed;
    for (auto& c : all) {
      std::lock_guard<std::mutex> lock(c->mu);
      if (c->state != ConnState::kIdle) continue;  // owned by a thread: not ours to read
      // One still being sent a response waits for its client up to the write timeout instead.
      int64_t allowed = c->out.empty() ? limit : static_cast<int64_t>(write_ms());
      if (now - c->idle_since_ms > allowed) {
        close_fd_locked(*c);
        closed.push_back(c->id);
      }
    }
    if (closed.empty()) return;
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t id : closed) conns_.erase(id);
  }

  HttpServer& server_;
  const HttpServerOptions& opt_;
  const int epfd_;
  const int wake_fd_;
  const int n_threads_;
  const std::string keep_alive_header_;  // of a kept-alive replacement reply, as httplib's own
  std::unique_ptr<Slot[]> slots_;
  std::vector<std::thread> threads_;
  std::thread watchdog_;
  std::atomic<bool> stopping_{false};

  std::mutex turns_mu_;
  std::condition_variable turns_cv_;  // a turn is free (parked threads wait here)
  std::condition_variable watch_cv_;  // stop, for the watchdog
  int turns_ = 0;                     // threads that may take requests; guarded by turns_mu_
  int takers_ = 0;                    // threads holding a turn; guarded by turns_mu_
  std::atomic<int64_t> last_sweep_ms_{0};

  std::mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Conn>> conns_;  // guarded by mu_
  uint64_t next_id_ = 0;                                       // guarded by mu_

  std::mutex inflight_mu_;
  std::condition_variable inflight_cv_;
  int inflight_ = 0;  // deferred responses not yet sent; guarded by inflight_mu_
};

bool can_defer_response() { return t_conn != nullptr && t_loop != nullptr && !t_conn->deferred; }

DeferredCompletion defer_response() {
  if (!can_defer_response()) return {};
  return t_loop->defer(*t_conn);
}

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
    loop_ = new Loop(*this);
    return loop_;
  };
}

HttpServer::~HttpServer() = default;

bool HttpServer::process_and_close_socket(socket_t sock) {
  loop_->add(sock);
  return true;
}

int HttpServer::bind(const std::string& host, int port, std::string* error) {
  int bound = port == 0 ? bind_to_any_port(host) : (bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    if (error) *error = std::string("cannot bind ") + host + ":" + std::to_string(port) + ": " +
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
    if (is_running()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return is_running();
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
