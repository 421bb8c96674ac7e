#include "worker/webhook_dispatcher.h"

#include <httplib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/backoff.h"
#include "core/thread_name.h"
#include "http/client.h"

namespace ts {
namespace {

constexpr int64_t kIdleCheckMs = 5'000;

}  // namespace

std::string webhook_signature(const std::string& secret, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static const char* hex = "0123456789abcdef";
  std::string out = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[mac[i] >> 4];
    out += hex[mac[i] & 15];
  }
  return out;
}

WebhookDispatcher::WebhookDispatcher(WebhookOptions options, WebhookOutbox& store,
                                     const Clock& clock, Metrics& metrics, Render render)
    : options_(std::move(options)),
      store_(store),
      clock_(clock),
      metrics_(metrics),
      render_(std::move(render)) {}

WebhookDispatcher::~WebhookDispatcher() { stop(); }

void WebhookDispatcher::start() {
  scheduler_ = std::thread([this] {
    name_this_thread("ts-webhook");
    scheduler_loop();
  });
  for (int i = 0; i < options_.senders; ++i)
    senders_.emplace_back([this] {
      name_this_thread("ts-webhook-send");
      sender_loop();
    });
}

void WebhookDispatcher::stop() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  work_cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  for (auto& t : senders_) {
    if (t.joinable()) t.join();
  }
  senders_.clear();
}

void WebhookDispatcher::wake() {
  {
    MutexLock lock(mu_);
    woken_ = true;
  }
  cv_.notify_one();
}

void WebhookDispatcher::scheduler_loop() {
  MutexLock lock(mu_);
  while (!stopping_) {
    woken_ = false;
    lock.unlock();
    int64_t now = clock_.now_ms();
    auto due = store_.webhooks_due(now, 256);
    auto next = store_.next_webhook_due();
    lock.lock();
    if (due.ok()) {
      for (int64_t seq : *due) {
        if (in_flight_.insert(seq).second) ready_.push_back(seq);
      }
      if (!ready_.empty()) work_cv_.notify_all();
    }
    int64_t wait_ms = kIdleCheckMs;
    if (next.ok() && *next) wait_ms = std::clamp<int64_t>(**next - now, 10, kIdleCheckMs);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    while (!woken_ && !stopping_) {
      if (cv_.wait_until(mu_, deadline) == std::cv_status::timeout) break;
    }
  }
}

void WebhookDispatcher::sender_loop() {
  MutexLock lock(mu_);
  for (;;) {
    while (!stopping_ && ready_.empty()) work_cv_.wait(mu_);
    if (stopping_) return;
    int64_t seq = ready_.back();
    ready_.pop_back();
    lock.unlock();
    deliver(seq);
    lock.lock();
    in_flight_.erase(seq);
    woken_ = true;  // the next attempt of this one may be due soon
    cv_.notify_one();
  }
}

void WebhookDispatcher::deliver(int64_t seq) {
  auto found = store_.delivery_of(seq);
  if (!found.ok() || !*found) return;
  const Task& task = **found;
  if (task.webhook_state != WebhookState::kPending || !task.webhook_url) return;
  int number = static_cast<int>(task.deliveries.size()) + 1;
  std::string body = render_(task);

  WebhookDelivery d;
  d.number = number;
  d.at = clock_.now_ms();
  auto url = parse_url(*task.webhook_url);
  if (!url) {
    d.error = "not an http(s) URL";
  } else {
    auto client = make_client(*url);
    httplib::Client& cli = *client;
    int t = options_.timeout_ms;
    cli.set_connection_timeout(t / 1000, (t % 1000) * 1000);
    cli.set_read_timeout(t / 1000, (t % 1000) * 1000);
    cli.set_write_timeout(t / 1000, (t % 1000) * 1000);
    httplib::Headers headers = {{"X-Taskserver-Task", task.task_id},
                                {"X-Taskserver-Delivery", std::to_string(number)},
                                {"User-Agent", "taskserver-webhook"}};
    if (!options_.secret.empty()) {
      headers.emplace("X-Taskserver-Signature", webhook_signature(options_.secret, body));
    }
    std::string path = url->path.empty() ? "/" : url->path;
    auto res = cli.Post(path.c_str(), headers, body, "application/json");
    if (!res) {
      d.error = "no answer: " + httplib::to_string(res.error());
    } else {
      d.status_code = res->status;
      if (res->status < 200 || res->status >= 300) d.error = "HTTP " + std::to_string(res->status);
    }
  }
  bool ok = d.error.empty();
  WebhookState state = WebhookState::kDelivered;
  std::optional<int64_t> next_at;
  if (!ok) {
    if (number >= options_.max_attempts) {
      state = WebhookState::kFailed;
    } else {
      state = WebhookState::kPending;
      next_at = clock_.now_ms() + doubling_delay_ms(options_.base_ms, number, options_.cap_ms);
    }
  }
  metrics_.webhook_deliveries.inc(
      {ok ? "delivered" : (state == WebhookState::kFailed ? "failed" : "retry")});
  Status st = store_.record_webhook(seq, d, state, next_at);
  if (!st.ok())
    spdlog::error("task {}: cannot record webhook delivery: {}", task.task_id, st.message());
  if (ok) {
    spdlog::info("task {} webhook delivered (attempt {})", task.task_id, number);
  } else {
    spdlog::warn("task {} webhook attempt {} failed: {}{}", task.task_id, number, d.error,
                 state == WebhookState::kFailed ? " (giving up)" : "");
  }
}

}  // namespace ts
