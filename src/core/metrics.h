#pragma once
// Metrics: counters and histograms in Prometheus' text exposition format (version 0.0.4).
// Families are declared once with their label names; samples are added by label values.
// Gauges are not stored: whoever renders /metrics appends them from live snapshots with
// write_gauge(). Thread-safe: one mutex per family, held for a map update.

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ts {

class CounterFamily {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> labels);
  void inc(const std::vector<std::string>& label_values, double by = 1);
  double value(const std::vector<std::string>& label_values) const;
  void render(std::string& out) const;

 private:
  const std::string name_, help_;
  const std::vector<std::string> labels_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, double> values_;  // guarded by mu_
};

class HistogramFamily {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> labels,
                  std::vector<double> bounds);
  void observe(const std::vector<std::string>& label_values, double value);
  uint64_t count(const std::vector<std::string>& label_values) const;
  void render(std::string& out) const;

 private:
  struct Series {
    std::vector<uint64_t> buckets;  // per bound, not cumulative
    uint64_t count = 0;
    double sum = 0;
  };
  const std::string name_, help_;
  const std::vector<std::string> labels_;
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, Series> series_;  // guarded by mu_
};

// The server's metric families.
class Metrics {
 public:
  Metrics();
  CounterFamily http_requests;          // http_requests_total{method,route,code}
  HistogramFamily http_duration;        // http_request_duration_seconds{route}
  CounterFamily task_success;           // task_success_total{task_type}
  CounterFamily task_failure;           // task_failure_total{task_type}
  CounterFamily task_canceled;          // task_canceled_total{task_type}
  CounterFamily tasks_submitted;        // tasks_submitted_total{task_type}
  HistogramFamily task_duration;        // task_processing_duration_seconds{task_type}
  CounterFamily backend_calls;          // backend_requests_total{pool,backend,outcome}
  CounterFamily webhook_deliveries;     // webhook_deliveries_total{outcome}
  // Appends every stored family.
  void render(std::string& out) const;
};

// Appends one gauge family: samples are (label values, value) in the given label order.
void write_gauge(std::string& out, const std::string& name, const std::string& help,
                 const std::vector<std::string>& labels,
                 const std::vector<std::pair<std::vector<std::string>, double>>& samples);

}  // namespace ts
