#pragma once
// Balancer: the backends of one pool, their slots and their health, and the round-robin pick
// over those that may take a request now.
//
// Thread-safe (one mutex). Health reaches it through two narrow reports, as in Envoy's
// upstream module: report_probe() from the active checker, and the outcome passed to release()
// by the worker that used the backend (passive checks). The listener hears, without the lock
// held, that capacity may have grown (a slot freed, a backend back), so waiting workers look
// again.
//
// A backend may take a request when all hold:
//   - its probes say up     (fall failing probes in a row take it down, rise passing bring it up)
//   - it is not ejected     (max_fails failing tasks in a row eject it for base·2^(n-1), capped)
//   - it is not resting     (a 429/503 answer rests it for its Retry-After)
//   - it has a free slot    (in-flight requests < slots)

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/mutex.h"

namespace ts {

struct BackendSpec {
  std::string url;
  int slots = 1;
};

struct HealthPolicy {
  int fall = 3;
  int rise = 2;
  int max_fails = 3;  // task failures in a row that eject a backend
  int64_t eject_base_ms = 5'000;
  int64_t eject_max_ms = 300'000;
  int64_t default_rest_ms = 1'000;  // a 429/503 without Retry-After
};

// How a request to a backend ended, from the backend's point of view.
enum class CallOutcome {
  kSuccess,      // 2xx
  kClientError,  // 4xx other than 429: the task's fault, the backend is fine
  kFailure,      // connection error, timeout, 5xx other than 503: counts against the backend
  kBusy,         // 429/503: busy, not broken; it rests
  kAborted,      // we aborted it (cancel, shutdown): says nothing about the backend
};

struct Lease {
  size_t index = 0;
  std::string url;
};

// A backend's health as every reader sees it (api, worker, ETA), as in Envoy's one healthy():
// up or busy take tasks (busy only after its rest), ejected and down do not.
enum class BackendState {
  kUp,       // probes pass, not ejected, not resting
  kBusy,     // resting after a 429/503, for its Retry-After
  kEjected,  // failing tasks took it out for a while, probes or not
  kDown,     // failing probes took it out until `rise` pass
};
std::string_view to_string(BackendState state);
// Up or busy: counted as healthy by /ready, backend_up and the start estimate.
inline bool is_healthy(BackendState state) {
  return state == BackendState::kUp || state == BackendState::kBusy;
}

struct BackendSnapshot {
  std::string url;
  BackendState state = BackendState::kUp;
  int64_t since_ms = 0;
  int slots = 0;
  int slots_busy = 0;
  int64_t successes = 0;
  int64_t failures = 0;
  int64_t client_errors = 0;
  int64_t ejections = 0;
  std::string last_error;
  int64_t last_error_at_ms = 0;
  double latency_mean_ms = 0;
  double latency_p95_ms = 0;
  int64_t ejected_until_ms = 0;
  int64_t resting_until_ms = 0;
};

class Balancer {
 public:
  Balancer(std::string pool, std::vector<BackendSpec> backends, HealthPolicy policy,
           const Clock& clock);

  // Set once, before use.
  // What the listener hears: a slot freed (a waiting call may take it), or a change of what the
  // backends may take at all (probes, ejections, rests).
  enum class Change { kSlotFreed, kHealth };
  void set_listener(std::function<void(Change)> listener) { listener_ = std::move(listener); }

  // True when some backend may take a request now.
  bool has_free_slot() const;
  // Reserves a slot on the next backend round-robin that may take a request, preferring one
  // other than `avoid` (the backend a retry failed on). nullopt when none may.
  std::optional<Lease> acquire(const std::string& avoid);
  // Frees the slot and records how the call went.
  void release(const Lease& lease, CallOutcome outcome, int64_t latency_ms,
               const std::string& error, int64_t rest_ms = 0);
  // The active health checker's verdict on one probe.
  void report_probe(size_t index, bool ok, const std::string& error);

  std::vector<BackendSnapshot> snapshot() const;
  const std::string& pool() const { return pool_; }
  // Without the lock: backends_ never changes size, nor a backend its spec, after construction.
  size_t size() const NO_THREAD_SAFETY_ANALYSIS { return backends_.size(); }
  int total_slots() const;
  // Slots of the backends that take tasks now or once their calls end: probes up, neither
  // ejected nor resting. A pool claims no more tasks ahead of a slot than this.
  int claimable_slots() const;
  // Without the lock, as size().
  std::string url(size_t index) const NO_THREAD_SAFETY_ANALYSIS {
    return backends_[index].spec.url;
  }

 private:
  struct Backend {
    BackendSpec spec;
    bool probe_up = true;  // optimistic at start; the first probe runs at once
    int probe_fails = 0;
    int probe_passes = 0;
    int task_fails_in_row = 0;
    int ejections_in_row = 0;
    int64_t ejected_until = 0;
    int64_t resting_until = 0;
    int64_t since = 0;
    int in_flight = 0;
    int64_t successes = 0, failures = 0, client_errors = 0, ejections = 0;
    std::string last_error;
    int64_t last_error_at = 0;
    std::deque<int64_t> latencies;  // most recent calls, newest last
  };
  bool may_take(const Backend& b, int64_t now) const REQUIRES(mu_);
  void notify(Change change) EXCLUDES(mu_);  // the listener hears without the lock held

  const std::string pool_;
  const HealthPolicy policy_;
  const Clock& clock_;
  std::function<void(Change)> listener_;

  mutable Mutex mu_;
  std::vector<Backend> backends_ GUARDED_BY(mu_);  // the vector's size never changes
  size_t next_ GUARDED_BY(mu_) = 0;                // where the round-robin scan starts
};

}  // namespace ts
