#include "core/clock.h"

#include <chrono>

namespace ts {

int64_t SystemClock::now_ms() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const Clock& SystemClock::instance() {
  static const SystemClock clock;
  return clock;
}

}  // namespace ts
