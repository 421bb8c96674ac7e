#include "balancer/health_checker.h"

#include <chrono>

#include "core/thread_name.h"

namespace ts {

HealthChecker::HealthChecker(Balancer& balancer, HealthCheckOptions options, Probe probe)
    : balancer_(balancer), options_(std::move(options)), probe_(std::move(probe)) {
  if (!probe_) {
    probe_ = [path = options_.path, timeout = options_.timeout_ms](const std::string& url) {
      return probe_health(url, path, timeout);
    };
  }
}

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::start() {
  for (size_t i = 0; i < balancer_.size(); ++i) {
    threads_.emplace_back([this, i] {
      name_this_thread("ts-health");
      loop(i);
    });
  }
}

void HealthChecker::stop() {
  {
    MutexLock lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void HealthChecker::loop(size_t index) {
  const std::string url = balancer_.url(index);
  for (;;) {
    auto next = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.interval_ms);
    ProbeResult r = probe_(url);
    {
      MutexLock lock(mu_);
      if (stopping_) return;
    }
    balancer_.report_probe(index, r.ok, r.error);
    MutexLock lock(mu_);
    while (!stopping_) {
      if (cv_.wait_until(mu_, next) == std::cv_status::timeout) break;
    }
    if (stopping_) return;
  }
}

}  // namespace ts
