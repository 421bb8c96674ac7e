#include "balancer/balancer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <numeric>

#include "core/backoff.h"

namespace ts {

std::string_view to_string(BackendState state) {
  switch (state) {
    case BackendState::kUp:
      return "up";
    case BackendState::kBusy:
      return "busy";
    case BackendState::kEjected:
      return "ejected";
    case BackendState::kDown:
      return "down";
  }
  return "down";
}

namespace {

constexpr size_t kLatencyWindow = 100;

}  // namespace

Balancer::Balancer(std::string pool, std::vector<BackendSpec> backends, HealthPolicy policy,
                   const Clock& clock)
    : pool_(std::move(pool)), policy_(policy), clock_(clock) {
  int64_t now = clock_.now_ms();
  for (auto& spec : backends) {
    Backend b;
    b.spec = std::move(spec);
    if (b.spec.slots < 1) b.spec.slots = 1;
    b.since = now;
    backends_.push_back(std::move(b));
  }
}

bool Balancer::may_take(const Backend& b, int64_t now) const {
  return b.probe_up && now >= b.ejected_until && now >= b.resting_until &&
         b.in_flight < b.spec.slots;
}

bool Balancer::has_free_slot() const {
  MutexLock lock(mu_);
  int64_t now = clock_.now_ms();
  for (const Backend& b : backends_) {
    if (may_take(b, now)) return true;
  }
  return false;
}

std::optional<Lease> Balancer::acquire(const std::string& avoid) {
  MutexLock lock(mu_);
  int64_t now = clock_.now_ms();
  size_t n = backends_.size();
  std::optional<size_t> fallback;
  for (size_t k = 0; k < n; ++k) {
    size_t i = (next_ + k) % n;
    Backend& b = backends_[i];
    if (!may_take(b, now)) continue;
    if (!avoid.empty() && b.spec.url == avoid && n > 1) {
      if (!fallback) fallback = i;
      continue;
    }
    ++b.in_flight;
    next_ = (i + 1) % n;
    return Lease{i, b.spec.url};
  }
  if (!fallback) return std::nullopt;
  Backend& b = backends_[*fallback];
  ++b.in_flight;
  next_ = (*fallback + 1) % n;
  return Lease{*fallback, b.spec.url};
}

void Balancer::release(const Lease& lease, CallOutcome outcome, int64_t latency_ms,
                       const std::string& error, int64_t rest_ms) {
  Change change = Change::kSlotFreed;
  {
    MutexLock lock(mu_);
    Backend& b = backends_[lease.index];
    int64_t now = clock_.now_ms();
    if (b.in_flight > 0) --b.in_flight;
    switch (outcome) {
      case CallOutcome::kSuccess:
      case CallOutcome::kClientError:
        (outcome == CallOutcome::kSuccess ? b.successes : b.client_errors) += 1;
        b.task_fails_in_row = 0;
        b.ejections_in_row = 0;
        b.latencies.push_back(latency_ms);
        if (b.latencies.size() > kLatencyWindow) b.latencies.pop_front();
        break;
      case CallOutcome::kFailure:
        ++b.failures;
        b.last_error = error;
        b.last_error_at = now;
        if (++b.task_fails_in_row >= policy_.max_fails && now >= b.ejected_until) {
          ++b.ejections_in_row;
          ++b.ejections;
          int64_t ms =
              doubling_delay_ms(policy_.eject_base_ms, b.ejections_in_row, policy_.eject_max_ms);
          b.ejected_until = now + ms;
          b.since = now;
          b.task_fails_in_row = 0;
          change = Change::kHealth;
          spdlog::warn("backend {} of pool {} ejected for {} ms after {} failed calls in a row: {}",
                       b.spec.url, pool_, ms, policy_.max_fails, error);
        }
        break;
      case CallOutcome::kBusy:
        b.resting_until = now + (rest_ms > 0 ? rest_ms : policy_.default_rest_ms);
        b.last_error = error;
        b.last_error_at = now;
        b.since = now;
        change = Change::kHealth;
        break;
      case CallOutcome::kAborted:
        break;
    }
  }
  notify(change);
}

void Balancer::report_probe(size_t index, bool ok, const std::string& error) {
  bool changed = false;
  {
    MutexLock lock(mu_);
    Backend& b = backends_[index];
    int64_t now = clock_.now_ms();
    if (ok) {
      b.probe_fails = 0;
      ++b.probe_passes;
      if (!b.probe_up && b.probe_passes >= policy_.rise) {
        b.probe_up = true;
        b.since = now;
        changed = true;
        spdlog::info("backend {} of pool {} is up ({} passing probes)", b.spec.url, pool_,
                     policy_.rise);
      }
    } else {
      b.probe_passes = 0;
      ++b.probe_fails;
      b.last_error = "health probe: " + error;
      b.last_error_at = now;
      if (b.probe_up && b.probe_fails >= policy_.fall) {
        b.probe_up = false;
        b.since = now;
        changed = true;
        spdlog::warn("backend {} of pool {} is down ({} failing probes): {}", b.spec.url, pool_,
                     policy_.fall, error);
      }
    }
  }
  if (changed) notify(Change::kHealth);
}

void Balancer::notify(Change change) {
  if (listener_) listener_(change);
}

std::vector<BackendSnapshot> Balancer::snapshot() const {
  MutexLock lock(mu_);
  int64_t now = clock_.now_ms();
  std::vector<BackendSnapshot> out;
  for (const Backend& b : backends_) {
    BackendSnapshot s;
    s.url = b.spec.url;
    s.since_ms = b.since;
    if (!b.probe_up) {
      s.state = BackendState::kDown;
    } else if (now < b.ejected_until) {
      s.state = BackendState::kEjected;
    } else if (now < b.resting_until) {
      s.state = BackendState::kBusy;
    } else {
      s.state = BackendState::kUp;
      // A timed-out ejection or rest ended on its own: that end is when it came back.
      s.since_ms =
          std::max({b.since, std::min(b.ejected_until, now), std::min(b.resting_until, now)});
    }
    s.slots = b.spec.slots;
    s.slots_busy = b.in_flight;
    s.successes = b.successes;
    s.failures = b.failures;
    s.client_errors = b.client_errors;
    s.ejections = b.ejections;
    s.last_error = b.last_error;
    s.last_error_at_ms = b.last_error_at;
    s.ejected_until_ms = b.ejected_until;
    s.resting_until_ms = b.resting_until;
    if (!b.latencies.empty()) {
      s.latency_mean_ms =
          std::accumulate(b.latencies.begin(), b.latencies.end(), 0.0) / b.latencies.size();
      std::vector<int64_t> sorted(b.latencies.begin(), b.latencies.end());
      std::sort(sorted.begin(), sorted.end());
      size_t idx = (sorted.size() * 95 + 99) / 100;
      s.latency_p95_ms = static_cast<double>(sorted[std::min(sorted.size() - 1, idx - 1)]);
    }
    out.push_back(std::move(s));
  }
  return out;
}

int Balancer::claimable_slots() const {
  MutexLock lock(mu_);
  int64_t now = clock_.now_ms();
  int n = 0;
  for (const Backend& b : backends_) {
    if (b.probe_up && now >= b.ejected_until && now >= b.resting_until) n += b.spec.slots;
  }
  return n;
}

int Balancer::total_slots() const {
  MutexLock lock(mu_);
  int total = 0;
  for (const Backend& b : backends_) total += b.spec.slots;
  return total;
}

}  // namespace ts
