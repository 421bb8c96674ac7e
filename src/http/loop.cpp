// The epoll set, the serving threads and the connection registry of one HttpServer::serve().

#include "http/loop.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/blocking.h"
#include "core/mutex.h"
#include "core/thread_name.h"
#include "http/connection.h"

namespace ts {
namespace {

thread_local Conn* t_conn = nullptr;  // the connection this Loop thread serves
thread_local HttpServer::Loop* t_loop = nullptr;

}  // namespace

class HttpServer::Loop final : public httplib::TaskQueue {
  // One per serving thread.
  struct Slot {
    Loop* loop = nullptr;
    std::atomic<int64_t> serving_since{0};  // ms, 0 while not serving
    // Lent its turn; guarded by loop->turns_mu_ (unannotated: clang can't prove loop == this).
    bool stuck = false;
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
      MutexLock lock(turns_mu_);  // no waiter between its check and its wait
    }
    turns_cv_.notify_all();
    watch_cv_.notify_all();
    for (auto& t : threads_) t.join();
    if (watchdog_.joinable()) watchdog_.join();
    {
      // A deferred response still on its way is sent, then its connection closed.
      MutexLock lock(inflight_mu_);
      while (inflight_ != 0) inflight_cv_.wait(inflight_mu_);
    }
    std::unordered_map<uint64_t, std::shared_ptr<Conn>> left;
    {
      MutexLock lock(mu_);
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
      MutexLock lock(mu_);
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
      MutexLock lock(inflight_mu_);
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
        ReplacementReply lost{500,
                              R"({"error":{"code":"internal","message":"the response was lost"}})"};
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
        MutexLock lock(turns_mu_);
        while (takers_ >= turns_ && !stopping_.load()) turns_cv_.wait(turns_mu_);
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
          MutexLock lock(turns_mu_);
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
    MutexLock lock(loop.turns_mu_);
    if (me.serving_since.load() == 0 || me.stuck) return;
    me.stuck = true;
    ++loop.turns_;
    loop.turns_cv_.notify_one();
  }

  // Every few milliseconds: a taker serving one request for longer than kStuckMs lends its turn
  // to a parked thread until it is done.
  void watch() {
    constexpr int64_t kStuckMs = 10;
    MutexLock lock(turns_mu_);
    while (!stopping_.load()) {
      watch_cv_.wait_for(turns_mu_, std::chrono::milliseconds(5));
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
      MutexLock lock(mu_);
      auto it = conns_.find(id);
      if (it == conns_.end()) return nullptr;
      c = it->second;
    }
    MutexLock lock(c->mu);
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
      conn.out =
          "HTTP/1.1 " + std::to_string(status) + " " + reason_of(status) +
          "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
          "\r\n" + connection + "\r\n" + body;
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
    MutexLock lock(inflight_mu_);
    if (--inflight_ == 0) inflight_cv_.notify_all();
  }

  // Hands an owned connection to the set (op ADD for a new one), to be taken by the thread that
  // sees `events` on it.
  void rearm(const std::shared_ptr<Conn>& c, uint32_t events, int op = EPOLL_CTL_MOD) {
    MutexLock lock(c->mu);
    c->state = ConnState::kIdle;
    c->idle_since_ms = now_ms();
    epoll_event ev{};
    ev.events = events | EPOLLONESHOT;
    ev.data.u64 = c->id;
    if (::epoll_ctl(epfd_, op, c->fd, &ev) != 0) {
      c->state = ConnState::kBusy;  // not in the set: closed as its owner
      close_fd_locked(*c);
      forget(c->id);
    }
  }

  void close_owned(const std::shared_ptr<Conn>& c) {
    {
      MutexLock lock(c->mu);
      close_fd_locked(*c);
    }
    forget(c->id);
  }

  void forget(uint64_t id) {
    MutexLock lock(mu_);
    conns_.erase(id);
  }

  void close_fd(Conn& c) {
    MutexLock lock(c.mu);
    close_fd_locked(c);
  }

  void close_fd_locked(Conn& c) REQUIRES(c.mu) {
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
      MutexLock lock(mu_);
      all.reserve(conns_.size());
      for (auto& [id, c] : conns_) all.push_back(c);
    }
    const int64_t limit = static_cast<int64_t>(opt_.keep_alive_timeout_s) * 1000;
    std::vector<uint64_t> closed;
    for (auto& c : all) {
      MutexLock lock(c->mu);
      if (c->state != ConnState::kIdle) continue;  // owned by a thread: not ours to read
      // One still being sent a response waits for its client up to the write timeout instead.
      int64_t allowed = c->out.empty() ? limit : static_cast<int64_t>(write_ms());
      if (now - c->idle_since_ms > allowed) {
        close_fd_locked(*c);
        closed.push_back(c->id);
      }
    }
    if (closed.empty()) return;
    MutexLock lock(mu_);
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

  Mutex turns_mu_;
  CondVar turns_cv_;                      // a turn is free (parked threads wait here)
  CondVar watch_cv_;                      // stop, for the watchdog
  int turns_ GUARDED_BY(turns_mu_) = 0;   // threads that may take requests
  int takers_ GUARDED_BY(turns_mu_) = 0;  // threads holding a turn
  std::atomic<int64_t> last_sweep_ms_{0};

  Mutex mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Conn>> conns_ GUARDED_BY(mu_);
  uint64_t next_id_ GUARDED_BY(mu_) = 0;

  Mutex inflight_mu_;
  CondVar inflight_cv_;
  int inflight_ GUARDED_BY(inflight_mu_) = 0;  // deferred responses not yet sent
};

bool can_defer_response() { return t_conn != nullptr && t_loop != nullptr && !t_conn->deferred; }

DeferredCompletion defer_response() {
  if (!can_defer_response()) return {};
  return t_loop->defer(*t_conn);
}

httplib::TaskQueue* new_loop(HttpServer& server, HttpServer::Loop** out) {
  *out = new HttpServer::Loop(server);
  return *out;
}

void loop_add(HttpServer::Loop& loop, int fd) { loop.add(fd); }

}  // namespace ts
