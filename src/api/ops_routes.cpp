// The routes an operator reads: liveness and readiness, backends, stats per pool, and the
// Prometheus metrics.

#include <malloc.h>

#include "api/api_context.h"
#include "api/request_context.h"
#include "core/time_format.h"

namespace ts {
namespace {

using httplib::Request;
using httplib::Response;
using nlohmann::json;

json backend_json(const std::string& pool, const BackendSnapshot& b) {
  return {{"pool", pool},
          {"url", b.url},
          {"state", to_string(b.state)},
          {"since", format_rfc3339_ms(b.since_ms)},
          {"slots", b.slots},
          {"slots_busy", b.slots_busy},
          {"successes", b.successes},
          {"failures", b.failures},
          {"client_errors", b.client_errors},
          {"ejections", b.ejections},
          {"last_error", b.last_error.empty() ? json(nullptr) : json(b.last_error)},
          {"last_error_at",
           b.last_error_at_ms ? json(format_rfc3339_ms(b.last_error_at_ms)) : json(nullptr)},
          {"latency_ms", {{"mean", b.latency_mean_ms}, {"p95", b.latency_p95_ms}}}};
}

int healthy_backends(const PoolStats& p) {
  int n = 0;
  for (const auto& b : p.backends) n += is_healthy(b.state) ? 1 : 0;
  return n;
}

class OpsRoutes {
 public:
  explicit OpsRoutes(Context ctx) : ctx_(std::move(ctx)) {}

  void health(Response& res) {
    // `auth` tells the dashboard to ask for a token before its first API call.
    send_json(res, 200,
              {{"status", "ok"}, {"version", ctx_->opt.version}, {"auth", !ctx_->tokens.empty()}});
  }

  void backends(Response& res) {
    json list = json::array();
    for (const PoolStats& p : ctx_->view.pools()) {
      for (const BackendSnapshot& b : p.backends) list.push_back(backend_json(p.name, b));
    }
    send_json(res, 200, {{"backends", list}});
  }

  void stats_queues(Response& res) {
    json pools = json::array();
    int64_t now = ctx_->svc.clock().now_ms();
    for (const PoolStats& p : ctx_->view.pools()) {
      json oldest = nullptr;
      if (p.oldest_queued_ms) oldest = static_cast<double>(now - *p.oldest_queued_ms) / 1000.0;
      pools.push_back({{"pool", p.name},
                       {"depth", p.queued},
                       {"in_memory", p.in_memory},
                       {"running", p.running},
                       {"max_queued", p.max_queued},
                       {"oldest_queued_age_s", oldest},
                       {"completed_last_minute", p.completed_last_minute},
                       {"throughput_per_minute", p.throughput_per_minute}});
    }
    send_json(res, 200, {{"queues", pools}});
  }

  void stats_workers(Response& res) {
    json pools = json::array();
    for (const PoolStats& p : ctx_->view.pools()) {
      int slots = 0, busy_slots = 0;
      for (const auto& b : p.backends) {
        slots += b.slots;
        busy_slots += b.slots_busy;
      }
      pools.push_back({{"pool", p.name},
                       {"workers", p.workers},
                       {"busy", p.workers_busy},
                       {"idle", p.workers - p.workers_busy},
                       {"backends", p.backends.size()},
                       {"backends_up", healthy_backends(p)},
                       {"slots", slots},
                       {"slots_busy", busy_slots}});
    }
    send_json(res, 200, {{"workers", pools}});
  }

  void stats_summary(Response& res) {
    json totals = json::object();
    for (const auto& [state, n] : ctx_->svc.totals()) totals[std::string(to_string(state))] = n;
    int64_t now = ctx_->svc.clock().now_ms();
    send_json(res, 200,
              {{"version", ctx_->opt.version},
               {"started_at", format_rfc3339_ms(ctx_->view.started_at_ms)},
               {"uptime_s", (now - ctx_->view.started_at_ms) / 1000},
               {"totals", totals},
               {"auth", !ctx_->tokens.empty()},
               {"last_event_id", ctx_->svc.events().last_id()}});
  }

  void ready(Response& res) {
    json reasons = json::array();
    if (ctx_->svc.shutting_down()) reasons.push_back("the server is shutting down");
    Status st = ctx_->view.store_writable();
    if (!st.ok()) reasons.push_back("store: " + st.message());
    json pools = json::object();
    for (const PoolStats& p : ctx_->view.pools()) {
      int usable = healthy_backends(p);
      pools[p.name] = {{"backends", p.backends.size()}, {"healthy", usable}};
      if (usable == 0) {
        reasons.push_back("pool " + p.name + " has no healthy backend (" +
                          std::to_string(p.backends.size()) + " configured)");
      }
    }
    send_json(res, reasons.empty() ? 200 : 503,
              {{"ready", reasons.empty()},
               {"reasons", reasons},
               {"pools", pools},
               {"store", st.ok() ? "writable" : st.message()}});
  }

  void metrics_text(Response& res) {
    std::string out;
    ctx_->metrics.render(out);
    std::vector<std::pair<std::vector<std::string>, double>> queue, active, idle, up, inflight,
        slots, running;
    for (const PoolStats& p : ctx_->view.pools()) {
      queue.push_back({{p.name}, static_cast<double>(p.queued)});
      running.push_back({{p.name}, static_cast<double>(p.running)});
      active.push_back({{p.name}, static_cast<double>(p.workers_busy)});
      idle.push_back({{p.name}, static_cast<double>(p.workers - p.workers_busy)});
      for (const auto& b : p.backends) {
        up.push_back({{p.name, b.url}, is_healthy(b.state) ? 1.0 : 0.0});
        inflight.push_back({{p.name, b.url}, static_cast<double>(b.slots_busy)});
        slots.push_back({{p.name, b.url}, static_cast<double>(b.slots)});
      }
    }
    write_gauge(out, "task_queue_size", "Tasks QUEUED in the store, by queue (pool).", {"queue"},
                queue);
    write_gauge(out, "task_running", "Tasks RUNNING, by pool.", {"queue"}, running);
    write_gauge(out, "worker_pool_active", "Workers running a task, by pool.", {"pool"}, active);
    write_gauge(out, "worker_pool_idle", "Workers waiting for a task, by pool.", {"pool"}, idle);
    write_gauge(out, "backend_up", "1 when the backend may take requests (up or busy).",
                {"pool", "backend"}, up);
    write_gauge(out, "backend_inflight", "Requests in flight to the backend.", {"pool", "backend"},
                inflight);
    write_gauge(out, "backend_slots", "Requests the backend may hold at once.", {"pool", "backend"},
                slots);
    write_gauge(out, "http_event_streams_open",
                "SSE streams open now; past --max-streams a new one gets 503 too_many_streams.", {},
                {{{}, static_cast<double>(ctx_->open_streams.load())}});
    if (ctx_->view.store_memory_bytes) {
      write_gauge(out, "store_sqlite_memory_bytes",
                  "Heap held by SQLite, page caches included (bounded by their cache_size).", {},
                  {{{}, static_cast<double>(ctx_->view.store_memory_bytes())}});
    }
    // glibc's count of allocated bytes over every arena: unlike RSS it does not include what
    // malloc keeps after a free, so a leak shows here first.
    struct mallinfo2 mi = mallinfo2();
    write_gauge(out, "process_heap_inuse_bytes", "Bytes allocated with malloc and not freed.", {},
                {{{}, static_cast<double>(mi.uordblks + mi.hblkhd)}});
    res.status = 200;
    res.set_content(out, "text/plain; version=0.0.4; charset=utf-8");
  }

 private:
  Context ctx_;
};

}  // namespace

void install_ops_routes(Routes& r, const Context& ctx) {
  auto o = std::make_shared<OpsRoutes>(ctx);
  r.get("/health", {"health", "/health", "Liveness: the process answers."},
        [o](const Request&, Response& res) { o->health(res); });
  r.get("/api/v1/backends",
        {"backends", "/api/v1/backends", "Every backend: state, slots, counters, latency."},
        [o](const Request&, Response& res) { o->backends(res); });
  r.get("/api/v1/stats/queues",
        {"stats_queues", "/api/v1/stats/queues", "Per pool: depth, oldest queued age, throughput."},
        [o](const Request&, Response& res) { o->stats_queues(res); });
  r.get("/api/v1/stats/workers",
        {"stats_workers", "/api/v1/stats/workers", "Per pool: busy and idle workers, slots."},
        [o](const Request&, Response& res) { o->stats_workers(res); });
  r.get("/api/v1/stats", {"stats", "/api/v1/stats", "Version, uptime and task totals by state."},
        [o](const Request&, Response& res) { o->stats_summary(res); });
  r.get("/ready",
        {"ready", "/ready", "Readiness: store writable and a healthy backend in every pool."},
        [o](const Request&, Response& res) { o->ready(res); });
  r.get("/metrics", {"metrics", "/metrics", "Prometheus metrics."},
        [o](const Request&, Response& res) { o->metrics_text(res); });
}

}  // namespace ts
