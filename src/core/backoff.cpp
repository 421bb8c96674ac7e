#include "core/backoff.h"

#include <algorithm>

namespace ts {

int64_t doubling_delay_ms(int64_t base_ms, int n, int64_t cap_ms) {
  int64_t ms = base_ms;
  for (int k = 1; k < n && ms < cap_ms; ++k) ms *= 2;
  return std::min(ms, cap_ms);
}

int64_t equal_jitter_ms(int64_t ms, std::mt19937_64& rng) {
  return ms / 2 + std::uniform_int_distribution<int64_t>(0, ms / 2)(rng);
}

}  // namespace ts
