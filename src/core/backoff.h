#pragma once
// The doubling delay every retry in the server uses: a task's next attempt (worker), a
// backend's ejection (balancer) and a webhook's next delivery. Pure; thread-safe (the jitter
// takes the caller's generator).

#include <cstdint>
#include <random>

namespace ts {

// base · 2^(n-1) for the n-th time in a row (n ≥ 1), never above cap.
int64_t doubling_delay_ms(int64_t base_ms, int n, int64_t cap_ms);

// "Equal jitter": half of `ms` fixed, the other half random, so the retries of a burst spread
// out but never come back at once.
int64_t equal_jitter_ms(int64_t ms, std::mt19937_64& rng);

}  // namespace ts
