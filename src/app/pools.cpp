#include "app/pools.h"

#include <algorithm>

namespace ts {

PoolOptions pool_options(const ServeConfig& c, const PoolConfig& p) {
  PoolOptions o;
  o.name = p.name;
  o.request_path = p.request_path;
  for (const auto& url : p.urls) o.backends.push_back({url, p.slots});
  o.health.path = p.health_path;
  o.health.interval_ms = c.health_interval_ms;
  o.health.timeout_ms = c.health_timeout_ms;
  o.health_policy.fall = c.fall;
  o.health_policy.rise = c.rise;
  o.health_policy.max_fails = c.max_fails;
  o.health_policy.eject_base_ms = c.eject_base_ms;
  o.health_policy.eject_max_ms = c.eject_max_ms;
  o.workers = p.workers;
  o.queue_capacity = static_cast<size_t>(c.queue_capacity);
  o.max_queued = c.max_queued;
  o.default_timeout_s =
      p.timeout_s > 0 ? std::min(p.timeout_s, c.max_timeout_s) : c.default_timeout_s;
  o.max_timeout_s = c.max_timeout_s;
  o.default_max_attempts = p.max_attempts > 0 ? p.max_attempts : c.max_attempts;
  o.retry.base_ms = p.retry_base_ms > 0 ? p.retry_base_ms : c.retry_base_ms;
  o.retry.cap_ms = p.retry_cap_ms > 0 ? p.retry_cap_ms : c.retry_cap_ms;
  o.max_answer_bytes = static_cast<size_t>(c.max_result);
  o.inline_result_max = static_cast<size_t>(std::max<int64_t>(0, c.inline_result_max));
  // The image pool's answers are served as images (/api/images/{id}): check they are some.
  o.expect_images = p.name == "image";
  return o;
}

void Pools::add(std::unique_ptr<WorkerPool> pool) {
  std::string name = pool->options().name;
  pools_[name] = std::move(pool);
}

bool Pools::has_pool(const std::string& type) const { return pools_.count(type) != 0; }

std::vector<std::string> Pools::pool_names() const {
  std::vector<std::string> names;
  for (const auto& [n, p] : pools_) names.push_back(n);
  return names;
}

bool Pools::try_reserve(const std::string& type) { return pools_.at(type)->try_reserve(); }

void Pools::unreserve(const std::string& type) { pools_.at(type)->unreserve(); }

int Pools::default_max_attempts(const std::string& type) const {
  return pools_.at(type)->options().default_max_attempts;
}

int Pools::max_timeout_s(const std::string& type) const {
  return pools_.at(type)->options().max_timeout_s;
}

void Pools::on_change(const TaskChange& change) { pools_.at(change.type)->on_change(change); }

StatusOr<int64_t> Pools::queue_position(const std::string& type, int priority, int64_t seq) const {
  return pools_.at(type)->queue_position(priority, seq);
}

std::optional<int64_t> Pools::estimate_start_ms(const std::string& type, int64_t position) const {
  return pools_.at(type)->estimate_start_ms(position);
}

std::vector<PoolStats> Pools::stats() const {
  std::vector<PoolStats> out;
  for (const auto& [n, p] : pools_) out.push_back(p->stats());
  return out;
}

}  // namespace ts
