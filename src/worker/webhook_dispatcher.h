#pragma once
// WebhookDispatcher delivers the final task JSON to each task's webhook_url: a POST signed with
// HMAC-SHA256 of the body under the webhook secret (X-Taskserver-Signature: sha256=<hex>),
// retried with exponential backoff until a 2xx or the attempts run out. The pending deliveries
// live in the store (webhook_state = 'pending'), so they survive restarts; each attempt is
// recorded and shown on the task. Its own threads: a slow receiver never blocks a worker.
//
// Thread-safe: start() and stop() from the owner; wake() from anywhere.

#include <functional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/metrics.h"
#include "core/mutex.h"
#include "store/task_store.h"

namespace ts {

struct WebhookOptions {
  std::string secret;  // empty: no signature header
  int64_t base_ms = 1'000;
  int64_t cap_ms = 300'000;
  int max_attempts = 8;
  int timeout_ms = 10'000;
  int senders = 4;
};

// The signature header's value for `body`: "sha256=" + hex HMAC-SHA256 (OpenSSL).
std::string webhook_signature(const std::string& secret, const std::string& body);

class WebhookDispatcher {
 public:
  using Render = std::function<std::string(const Task&)>;
  WebhookDispatcher(WebhookOptions options, WebhookOutbox& store, const Clock& clock,
                    Metrics& metrics, Render render);
  ~WebhookDispatcher();
  void start();
  void stop();
  // A delivery may have fallen due (a task reached a final state).
  void wake();

 private:
  void scheduler_loop();
  void sender_loop();
  void deliver(int64_t seq);

  const WebhookOptions options_;
  WebhookOutbox& store_;
  const Clock& clock_;
  Metrics& metrics_;
  const Render render_;

  Mutex mu_;
  CondVar cv_;                                   // the scheduler waits here
  CondVar work_cv_;                              // senders wait here
  std::vector<int64_t> ready_ GUARDED_BY(mu_);   // due, not yet taken by a sender
  std::set<int64_t> in_flight_ GUARDED_BY(mu_);  // queued or being delivered
  bool woken_ GUARDED_BY(mu_) = false;
  bool stopping_ GUARDED_BY(mu_) = false;
  std::thread scheduler_;
  std::vector<std::thread> senders_;
};

}  // namespace ts
