#include "core/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace ts {
namespace {

std::string escape_label(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string label_set(const std::vector<std::string>& names, const std::vector<std::string>& values,
                      const std::string& extra_name = "", const std::string& extra_value = "") {
  std::string out;
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) {
    out += out.empty() ? "{" : ",";
    out += names[i] + "=\"" + escape_label(values[i]) + "\"";
  }
  if (!extra_name.empty()) {
    out += out.empty() ? "{" : ",";
    out += extra_name + "=\"" + extra_value + "\"";
  }
  if (!out.empty()) out += "}";
  return out;
}

void header(std::string& out, const std::string& name, const std::string& help, const char* type) {
  out += "# HELP " + name + " " + help + "\n";
  out += "# TYPE " + name + " " + type + "\n";
}

}  // namespace

CounterFamily::CounterFamily(std::string name, std::string help, std::vector<std::string> labels)
    : name_(std::move(name)), help_(std::move(help)), labels_(std::move(labels)) {}

CounterFamily::Cell& CounterFamily::cell(const std::vector<std::string>& label_values) {
  MutexLock lock(mu_);
  return values_[label_values];
}

double CounterFamily::value(const std::vector<std::string>& label_values) const {
  MutexLock lock(mu_);
  auto it = values_.find(label_values);
  return it == values_.end() ? 0 : it->second.value.load();
}

void CounterFamily::render(std::string& out) const {
  header(out, name_, help_, "counter");
  MutexLock lock(mu_);
  for (const auto& [values, v] : values_) {
    out += name_ + label_set(labels_, values) + " " + format_value(v.value.load()) + "\n";
  }
}

HistogramFamily::HistogramFamily(std::string name, std::string help,
                                 std::vector<std::string> labels, std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      labels_(std::move(labels)),
      bounds_(std::move(bounds)) {}

void HistogramFamily::Series::observe(double value) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (value <= bounds_[i]) {
      buckets_[i].fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  sum_.fetch_add(value, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
}

HistogramFamily::Series& HistogramFamily::series(const std::vector<std::string>& label_values) {
  MutexLock lock(mu_);
  auto it = series_.find(label_values);
  if (it == series_.end()) it = series_.try_emplace(label_values, bounds_).first;
  return it->second;
}

uint64_t HistogramFamily::count(const std::vector<std::string>& label_values) const {
  MutexLock lock(mu_);
  auto it = series_.find(label_values);
  return it == series_.end() ? 0 : it->second.count();
}

void HistogramFamily::render(std::string& out) const {
  header(out, name_, help_, "histogram");
  MutexLock lock(mu_);
  for (const auto& [values, s] : series_) {
    // Read the count last-but-consistent enough: +Inf is the sum of the buckets read, so the
    // exposition never has a bucket above +Inf even while observations race the scrape.
    uint64_t cumulative = 0;
    for (size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += s.buckets_[i].load(std::memory_order_relaxed);
      out += name_ + "_bucket" + label_set(labels_, values, "le", format_value(bounds_[i])) + " " +
             std::to_string(cumulative) + "\n";
    }
    uint64_t count = std::max(cumulative, s.count());
    out += name_ + "_bucket" + label_set(labels_, values, "le", "+Inf") + " " +
           std::to_string(count) + "\n";
    out += name_ + "_sum" + label_set(labels_, values) + " " + format_value(s.sum_.load()) + "\n";
    out += name_ + "_count" + label_set(labels_, values) + " " + std::to_string(count) + "\n";
  }
}

Metrics::Metrics()
    : http_requests("http_requests_total", "HTTP requests answered, by route and status code.",
                    {"method", "route", "code"}),
      http_duration(
          "http_request_duration_seconds", "Time to answer an HTTP request.", {"route"},
          {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      task_success("task_success_total", "Tasks that ended DONE.", {"task_type"}),
      task_failure("task_failure_total", "Tasks that ended FAILED.", {"task_type"}),
      task_canceled("task_canceled_total", "Tasks that ended CANCELED.", {"task_type"}),
      tasks_submitted("tasks_submitted_total", "Tasks accepted (202).", {"task_type"}),
      task_duration("task_processing_duration_seconds",
                    "Duration of backend attempts that produced a result, by task type.",
                    {"task_type"},
                    {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}),
      backend_calls("backend_requests_total", "Requests to backends, by how they ended.",
                    {"pool", "backend", "outcome"}),
      webhook_deliveries("webhook_deliveries_total", "Webhook delivery attempts, by result.",
                         {"outcome"}),
      tasks_purged("tasks_purged_total",
                   "Final tasks deleted with their results once older than --retain-final.", {}) {}

void Metrics::render(std::string& out) const {
  http_requests.render(out);
  http_duration.render(out);
  tasks_submitted.render(out);
  task_success.render(out);
  task_failure.render(out);
  task_canceled.render(out);
  task_duration.render(out);
  backend_calls.render(out);
  webhook_deliveries.render(out);
  tasks_purged.render(out);
}

void write_gauge(std::string& out, const std::string& name, const std::string& help,
                 const std::vector<std::string>& labels,
                 const std::vector<std::pair<std::vector<std::string>, double>>& samples) {
  header(out, name, help, "gauge");
  for (const auto& [values, v] : samples) {
    out += name + label_set(labels, values) + " " + format_value(v) + "\n";
  }
}

}  // namespace ts
