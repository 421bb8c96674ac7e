#include "app/demo.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace ts {

void DemoBackends::start(ServeConfig& cfg) {
  auto start_mock = [&](int latency) -> std::string {
    MockBackendOptions mo;
    mo.latency_ms = latency;
    mo.latency_jitter_ms = latency / 2;
    mo.image_size = 256;
    auto mock = std::make_unique<MockBackend>(mo);
    std::string err;
    if (mock->start(&err) < 0) {
      spdlog::error("demo: cannot start a mock backend: {}", err);
      return "";
    }
    std::string url = mock->url();
    mocks_.push_back(std::move(mock));
    return url;
  };
  for (PoolConfig& p : cfg.pools) {
    if (p.name == "image" && p.urls.empty()) {
      for (int i = 0; i < cfg.demo_backends; ++i) p.urls.push_back(start_mock(cfg.demo_latency_ms));
    }
  }
  if (std::none_of(cfg.pools.begin(), cfg.pools.end(),
                   [](const PoolConfig& p) { return p.name == "transcribe"; })) {
    PoolConfig t;
    t.name = "transcribe";
    t.request_path = "/v1/audio/transcriptions";
    t.urls.push_back(start_mock(cfg.demo_latency_ms / 2));
    cfg.pools.push_back(t);
  }
}

void DemoBackends::stop() {
  for (auto& m : mocks_) m->stop();
}

}  // namespace ts
