#pragma once
// HealthChecker: the active half of backend health. One thread per backend probes
// GET {url}{health_path} every interval (the first probe at once) and reports each verdict to
// the Balancer, which applies HAProxy's rise/fall counts. It keeps probing a backend that is
// down or ejected, so it is seen coming back. Thread-safe; start() once, stop() joins.

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend_client.h"
#include "balancer/balancer.h"
#include "core/mutex.h"

namespace ts {

struct HealthCheckOptions {
  std::string path = "/health";
  int interval_ms = 2000;
  int timeout_ms = 1000;
};

class HealthChecker {
 public:
  using Probe = std::function<ProbeResult(const std::string& url)>;
  // The default probe is an HTTP GET with the options' path and timeout.
  HealthChecker(Balancer& balancer, HealthCheckOptions options, Probe probe = nullptr);
  ~HealthChecker();
  void start();
  void stop();

 private:
  void loop(size_t index);

  Balancer& balancer_;
  const HealthCheckOptions options_;
  Probe probe_;
  Mutex mu_;
  CondVar cv_;
  bool stopping_ GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace ts
