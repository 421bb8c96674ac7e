#pragma once
// Pools: the worker pools of a server, as the service sees them (PoolDirectory), built from the
// configuration. Part of the wiring (src/app/): it may include config. Thread-safe: the set of
// pools is fixed once the server starts.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "service/pool_directory.h"
#include "worker/worker_pool.h"

namespace ts {

// The options of the pool `p` under the server-wide settings of `c`.
PoolOptions pool_options(const ServeConfig& c, const PoolConfig& p);

class Pools final : public PoolDirectory {
 public:
  void add(std::unique_ptr<WorkerPool> pool);
  bool has_pool(const std::string& type) const override;
  std::vector<std::string> pool_names() const override;
  bool try_reserve(const std::string& type) override;
  void unreserve(const std::string& type) override;
  int default_max_attempts(const std::string& type) const override;
  int max_timeout_s(const std::string& type) const override;
  void on_change(const TaskChange& change) override;
  StatusOr<int64_t> queue_position(const std::string& type, int priority,
                                   int64_t seq) const override;
  std::optional<int64_t> estimate_start_ms(const std::string& type,
                                           int64_t position) const override;
  std::vector<PoolStats> stats() const;
  std::map<std::string, std::unique_ptr<WorkerPool>>& all() { return pools_; }

 private:
  std::map<std::string, std::unique_ptr<WorkerPool>> pools_;  // fixed after start
};

}  // namespace ts
