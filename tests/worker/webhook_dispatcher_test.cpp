// WebhookDispatcher (worker/webhook_dispatcher.h) against a fake outbox (support/fake_store.h)
// and a real HTTP receiver on 127.0.0.1, with the time of retries on a ManualClock.
#include "worker/webhook_dispatcher.h"

#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/ids.h"
#include "core/metrics.h"
#include "support/fake_store.h"
#include "support/harness.h"

using namespace ts;
using namespace std::chrono_literals;

namespace {

// A webhook receiver on a free loopback port: answers POST /hook with the next status of its
// script (200 once the script is used up) and keeps every request it got.
class Receiver {
 public:
  struct Got {
    std::string body;
    httplib::Headers headers;
    std::string header(const std::string& name) const {
      auto it = headers.find(name);
      return it == headers.end() ? "" : it->second;
    }
  };

  explicit Receiver(std::vector<int> statuses = {}) : statuses_(statuses.begin(), statuses.end()) {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(mu_);
      got_.push_back({req.body, req.headers});
      res.status = 200;
      if (!statuses_.empty()) {
        res.status = statuses_.front();
        statuses_.pop_front();
      }
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    REQUIRE(tst::eventually([&] { return server_.is_running(); }, 10s, 1ms));
  }
  ~Receiver() {
    server_.stop();
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/hook"; }
  std::vector<Got> got() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_.size();
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::deque<int> statuses_;  // guarded by mu_
  std::vector<Got> got_;      // guarded by mu_
};

// What the dispatcher sends: deliveries.size() makes each attempt's body differ.
std::string render(const Task& t) {
  return R"({"task_id":")" + t.task_id + R"(","status":")" + std::string(to_string(t.status)) +
         R"(","earlier_deliveries":)" + std::to_string(t.deliveries.size()) + "}";
}

// A DONE task whose webhook is due now.
Task hooked(const Clock& clock, const std::string& url) {
  Task t;
  t.task_id = new_task_id(clock.now_ms());
  t.type = "image";
  t.status = TaskState::kDone;
  t.attempt = 1;
  t.created_at = clock.now_ms();
  t.finished_at = clock.now_ms();
  t.webhook_url = url;
  t.webhook_state = WebhookState::kPending;
  return t;
}

WebhookOptions options(const std::string& secret = "s3cret") {
  WebhookOptions o;
  o.secret = secret;
  o.base_ms = 100;
  o.max_attempts = 3;
  o.timeout_ms = 5'000;
  o.senders = 2;
  return o;
}

// Waits until the dispatcher has asked the outbox what is due, at the clock's present time,
// after the last delivery it recorded: whatever it would send by now it has started to send.
bool polled_since_last_record(tst::FakeStore& store, const Clock& clock) {
  int64_t now = clock.now_ms();
  return tst::eventually(
      [&] {
        bool recorded = false, polled = false;
        for (const auto& c : store.calls()) {
          if (c.op == "record_webhook") {
            recorded = true;
            polled = false;
          }
          if (c.op == "webhooks_due" && recorded && c.now_ms >= now) polled = true;
        }
        return polled;
      },
      10s, 1ms);
}

bool records_reach(tst::FakeStore& store, size_t n) {
  return tst::eventually([&] { return store.calls_of("record_webhook").size() >= n; }, 10s, 1ms);
}

}  // namespace

TEST_CASE("webhooks: the signature is HMAC-SHA256 of the body in hex (RFC 4231 case 2)") {
  CHECK(webhook_signature("Jefe", "what do ya want for nothing?") ==
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(webhook_signature("s3cret", "a") != webhook_signature("s3cret", "b"));
  CHECK(webhook_signature("k1", "a") != webhook_signature("k2", "a"));
}

TEST_CASE("webhooks: a 2xx is recorded delivered - the body is render()'s - signed") {
  ManualClock clock;
  tst::FakeStore store(clock);
  Metrics metrics;
  Receiver receiver;
  Task task = hooked(clock, receiver.url());
  int64_t seq = store.add(task);
  WebhookDispatcher dispatcher(options(), store, clock, metrics, render);
  dispatcher.start();

  REQUIRE(records_reach(store, 1));
  auto rec = store.calls_of("record_webhook").front();
  CHECK(rec.seq == seq);
  CHECK(rec.webhook_state == WebhookState::kDelivered);
  CHECK_FALSE(rec.next_at.has_value());
  CHECK(rec.delivery.number == 1);
  CHECK(rec.delivery.status_code == 200);
  CHECK(rec.delivery.error.empty());
  CHECK(rec.delivery.at == clock.now_ms());

  auto got = receiver.got();
  REQUIRE(got.size() == 1);
  CHECK(got[0].body == render(task));
  CHECK(got[0].header("Content-Type") == "application/json");
  CHECK(got[0].header("X-Taskserver-Signature") == webhook_signature("s3cret", got[0].body));
  CHECK(got[0].header("X-Taskserver-Task") == task.task_id);
  CHECK(got[0].header("X-Taskserver-Delivery") == "1");

  // Delivered is the end of it, however often the dispatcher is woken.
  dispatcher.wake();
  REQUIRE(polled_since_last_record(store, clock));
  CHECK(receiver.count() == 1);
  CHECK(store.task(seq)->webhook_state == WebhookState::kDelivered);
  CHECK(metrics.webhook_deliveries.value({"delivered"}) == 1);
  dispatcher.stop();
}

TEST_CASE("webhooks: without a secret no signature header is sent") {
  ManualClock clock;
  tst::FakeStore store(clock);
  Metrics metrics;
  Receiver receiver;
  store.add(hooked(clock, receiver.url()));
  WebhookDispatcher dispatcher(options(""), store, clock, metrics, render);
  dispatcher.start();
  REQUIRE(records_reach(store, 1));
  auto got = receiver.got();
  REQUIRE(got.size() == 1);
  CHECK(got[0].headers.count("X-Taskserver-Signature") == 0);
  dispatcher.stop();
}

TEST_CASE("webhooks: a 500 stays pending for base*2^(n-1) - then the next attempt - then failed") {
  ManualClock clock;
  tst::FakeStore store(clock);
  Metrics metrics;
  Receiver receiver({500, 500, 500, 500});
  Task task = hooked(clock, receiver.url());
  int64_t seq = store.add(task);
  WebhookOptions o = options();
  WebhookDispatcher dispatcher(o, store, clock, metrics, render);
  dispatcher.start();

  for (int n = 1; n <= o.max_attempts; ++n) {
    REQUIRE(records_reach(store, n));
    auto rec = store.calls_of("record_webhook").back();
    CHECK(rec.seq == seq);
    CHECK(rec.delivery.number == n);
    CHECK(rec.delivery.status_code == 500);
    CHECK(rec.delivery.error == "HTTP 500");
    CHECK(rec.delivery.at == clock.now_ms());
    if (n == o.max_attempts) {
      CHECK(rec.webhook_state == WebhookState::kFailed);
      CHECK_FALSE(rec.next_at.has_value());
      break;
    }
    CHECK(rec.webhook_state == WebhookState::kPending);
    int64_t delay = o.base_ms << (n - 1);
    REQUIRE(rec.next_at.has_value());
    CHECK(*rec.next_at == clock.now_ms() + delay);

    // Not a moment early: 1 ms short of the due time the dispatcher looks and sends nothing.
    clock.advance_ms(delay - 1);
    dispatcher.wake();
    REQUIRE(polled_since_last_record(store, clock));
    CHECK(receiver.count() == static_cast<size_t>(n));
    CHECK(store.calls_of("record_webhook").size() == static_cast<size_t>(n));
    clock.advance_ms(1);  // due now: the dispatcher's own timer finds it, no wake needed
  }

  // Failed is the end of it.
  dispatcher.wake();
  REQUIRE(polled_since_last_record(store, clock));
  CHECK(receiver.count() == 3);
  auto t = store.task(seq);
  REQUIRE(t);
  CHECK(t->webhook_state == WebhookState::kFailed);
  REQUIRE(t->deliveries.size() == 3);

  // Each attempt sent what render() made of the task as it stood then, signed.
  auto got = receiver.got();
  REQUIRE(got.size() == 3);
  for (size_t i = 0; i < got.size(); ++i) {
    Task then = task;
    then.deliveries.resize(i);
    CHECK(got[i].body == render(then));
    CHECK(got[i].header("X-Taskserver-Delivery") == std::to_string(i + 1));
    CHECK(got[i].header("X-Taskserver-Signature") == webhook_signature("s3cret", got[i].body));
  }
  CHECK(metrics.webhook_deliveries.value({"retry"}) == 2);
  CHECK(metrics.webhook_deliveries.value({"failed"}) == 1);
  CHECK(metrics.webhook_deliveries.value({"delivered"}) == 0);
  dispatcher.stop();
}

TEST_CASE("webhooks: no answer or a URL that is not http(s) is a failed attempt - kept pending") {
  // A port nothing listens on: bound, then closed.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  std::string closed = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/hook";

  ManualClock clock;
  tst::FakeStore store(clock);
  Metrics metrics;
  int64_t refused = store.add(hooked(clock, closed));
  int64_t not_http = store.add(hooked(clock, "ftp://127.0.0.1/hook"));
  WebhookDispatcher dispatcher(options(), store, clock, metrics, render);
  dispatcher.start();
  REQUIRE(records_reach(store, 2));
  for (const auto& rec : store.calls_of("record_webhook")) {
    CHECK(rec.delivery.number == 1);
    CHECK(rec.delivery.status_code == 0);
    CHECK(rec.webhook_state == WebhookState::kPending);
    CHECK(rec.next_at == clock.now_ms() + 100);
    if (rec.seq == refused) {
      CHECK(rec.delivery.error.rfind("no answer", 0) == 0);
    } else {
      CHECK(rec.seq == not_http);
      CHECK(rec.delivery.error == "not an http(s) URL");
    }
  }
  dispatcher.stop();
}
