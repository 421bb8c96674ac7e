#pragma once
// Metrics: counters and histograms in Prometheus' text exposition format (version 0.0.4).
// Families are declared once with their label names; samples are added by label values.
// Gauges are not stored: whoever renders /metrics appends them from live snapshots with
// write_gauge(). Thread-safe: a family's mutex guards its set of series; each series is a
// stable cell of atomics, so a hot path can keep a pointer to its cell and skip the lookup.

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mutex.h"

namespace ts {

class CounterFamily {
 public:
  struct Cell {
    std::atomic<double> value{0};
    void inc(double by = 1) { value.fetch_add(by, std::memory_order_relaxed); }
  };
  CounterFamily(std::string name, std::string help, std::vector<std::string> labels);
  // The series of these label values, created at zero on first use; the reference stays valid.
  Cell& cell(const std::vector<std::string>& label_values);
  void inc(const std::vector<std::string>& label_values, double by = 1) {
    cell(label_values).inc(by);
  }
  double value(const std::vector<std::string>& label_values) const;
  void render(std::string& out) const;

 private:
  const std::string name_, help_;
  const std::vector<std::string> labels_;
  mutable Mutex mu_;
  std::map<std::vector<std::string>, Cell> values_ GUARDED_BY(mu_);  // the map, not the cells
};

class HistogramFamily {
 public:
  class Series {
   public:
    explicit Series(const std::vector<double>& bounds) : bounds_(bounds), buckets_(bounds.size()) {}
    void observe(double value);
    uint64_t count() const { return count_.load(std::memory_order_relaxed); }

   private:
    friend class HistogramFamily;
    const std::vector<double>& bounds_;
    std::vector<std::atomic<uint64_t>> buckets_;  // per bound, not cumulative
    std::atomic<uint64_t> count_{0};
    std::atomic<double> sum_{0};
  };
  HistogramFamily(std::string name, std::string help, std::vector<std::string> labels,
                  std::vector<double> bounds);
  // The series of these label values; the reference stays valid.
  Series& series(const std::vector<std::string>& label_values);
  void observe(const std::vector<std::string>& label_values, double value) {
    series(label_values).observe(value);
  }
  uint64_t count(const std::vector<std::string>& label_values) const;
  void render(std::string& out) const;

 private:
  const std::string name_, help_;
  const std::vector<std::string> labels_;
  const std::vector<double> bounds_;
  mutable Mutex mu_;
  std::map<std::vector<std::string>, Series> series_ GUARDED_BY(mu_);  // the map, not the cells
};

// The server's metric families.
class Metrics {
 public:
  Metrics();
  CounterFamily http_requests;       // http_requests_total{method,route,code}
  HistogramFamily http_duration;     // http_request_duration_seconds{route}
  CounterFamily task_success;        // task_success_total{task_type}
  CounterFamily task_failure;        // task_failure_total{task_type}
  CounterFamily task_canceled;       // task_canceled_total{task_type}
  CounterFamily tasks_submitted;     // tasks_submitted_total{task_type}
  HistogramFamily task_duration;     // task_processing_duration_seconds{task_type}
  CounterFamily backend_calls;       // backend_requests_total{pool,backend,outcome}
  CounterFamily webhook_deliveries;  // webhook_deliveries_total{outcome}
  CounterFamily tasks_purged;        // tasks_purged_total (--retain-final)
  // Appends every stored family.
  void render(std::string& out) const;
};

// Appends one gauge family: samples are (label values, value) in the given label order.
void write_gauge(std::string& out, const std::string& name, const std::string& help,
                 const std::vector<std::string>& labels,
                 const std::vector<std::pair<std::vector<std::string>, double>>& samples);

}  // namespace ts
