#pragma once
// The demo's built-in backends (`taskserver demo`): mock image backends for the image pool
// unless it has URLs, and one mock transcription backend, started in this process. Part of the
// wiring; not thread-safe (start and stop from main).

#include <memory>
#include <vector>

#include "backend/mock_backend.h"
#include "config/config.h"

namespace ts {

class DemoBackends {
 public:
  // Starts the mocks and adds their URLs to `cfg`'s pools (one that cannot start is logged and
  // leaves an empty URL: its pool waits).
  void start(ServeConfig& cfg);
  void stop();

 private:
  std::vector<std::unique_ptr<MockBackend>> mocks_;
};

}  // namespace ts
