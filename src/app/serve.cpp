// The serve sequence: config → store → recover → pools → http → wait for a signal → stop in
// reverse order.

#include "app/serve.h"

#include <malloc.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include <spdlog/spdlog.h>

#include "api/api_server.h"
#include "api/task_json.h"
#include "app/data_dir_lock.h"
#include "app/demo.h"
#include "app/pools.h"
#include "backend/mock_backend.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "core/sd_notify.h"
#include "http/server.h"
#include "service/events.h"
#include "service/file_sweep.h"
#include "service/retention.h"
#include "service/task_service.h"
#include "store/blob_store.h"
#include "store/store_factory.h"
#include "worker/webhook_dispatcher.h"

namespace ts {
namespace {

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

int wait_for_stop_signal() {
  sigset_t set = stop_signals();
  int sig = 0;
  sigwait(&set, &sig);
  return sig;
}

StoreOptions store_options(const ServeConfig& cfg) {
  StoreOptions so;
  so.path = cfg.data_dir + "/tasks.db";
  so.sync_full = cfg.sync == "full";
  return so;
}

// The commit listener: metrics first, then the service, then the webhooks' wake-up.
CommitListener commit_listener(TaskService& service, Metrics& metrics,
                               WebhookDispatcher& webhooks) {
  return [&service, &metrics, &webhooks](const std::vector<TaskChange>& changes) {
    // Counted before on_commit publishes the events: a client woken by a task's final state
    // (a long-poll, a stream) then finds it in /metrics too.
    for (const TaskChange& c : changes) {
      if (c.to == TaskState::kDone) metrics.task_success.inc({c.type});
      if (c.to == TaskState::kFailed) metrics.task_failure.inc({c.type});
      if (c.to == TaskState::kCanceled) metrics.task_canceled.inc({c.type});
    }
    service.on_commit(changes);
    for (const TaskChange& c : changes) {
      if (c.webhook_pending) webhooks.wake();
    }
  };
}

std::string pools_line(const ServeConfig& cfg) {
  std::string s;
  for (const auto& p : cfg.pools) {
    s += (s.empty() ? "" : ", ") + p.name + "=" + std::to_string(p.urls.size());
  }
  return s;
}

}  // namespace

void tune_malloc() {
  // glibc hands freed memory at the top of a thread's heap back to the kernel (madvise) as soon
  // as 128 KiB are free there. The writer frees SQLite's statement journals and temporary
  // tables on every write, and each give-back flushed the TLB of every core: in a VM that was
  // most of the writer's CPU. Kept up to 64 MiB, the memory is reused instead.
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
}

void block_stop_signals() {
  // Every thread made later inherits the mask; writes to a closed socket must fail, not kill
  // the process.
  sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

int serve(ServeConfig cfg, bool demo) {
  tune_malloc();
  const Clock& clock = SystemClock::instance();
  int64_t started_at = clock.now_ms();
  const auto started_files = std::filesystem::file_time_type::clock::now();

  DemoBackends mocks;
  if (demo) mocks.start(cfg);

  std::error_code ec;
  std::filesystem::create_directories(cfg.data_dir, ec);
  if (ec) {
    spdlog::error("cannot create the data folder {}: {}", cfg.data_dir, ec.message());
    return 1;
  }
  DataDirLock lock;
  std::string error;
  if (!lock.acquire(cfg.data_dir, &error)) {
    spdlog::error("{}", error);
    return 1;
  }

  StoreOptions so = store_options(cfg);
  auto opened = open_task_store(so, clock);
  if (!opened.ok()) {
    spdlog::error("cannot open the store {}: {}", so.path, opened.status().message());
    return opened.status().slug() == "schema_too_new" ? 3 : 1;
  }
  std::unique_ptr<TaskStore> store = std::move(*opened);
  auto results = BlobStore::open(cfg.data_dir + "/results");
  auto inputs = BlobStore::open(cfg.data_dir + "/inputs");
  if (!results.ok() || !inputs.ok()) {
    spdlog::error("cannot create the result folders under {}", cfg.data_dir);
    return 1;
  }

  Metrics metrics;
  EventHub events;
  Pools pools;
  for (const PoolConfig& p : cfg.pools) {
    auto pool = std::make_unique<WorkerPool>(pool_options(cfg, p), *store, *store, *results,
                                             *inputs, clock);
    pool->set_attempt_listener([&metrics](const AttemptReport& r) {
      metrics.backend_calls.inc({r.pool, r.backend, r.outcome});
      if (r.outcome == "done") {
        metrics.task_duration.observe({r.pool}, static_cast<double>(r.duration_ms) / 1000.0);
      }
    });
    if (p.urls.empty()) {
      spdlog::warn("pool {} has no backend: its tasks wait until one is configured", p.name);
    }
    pools.add(std::move(pool));
  }

  TaskService service(*store, pools, events, *results, *inputs, clock);
  WebhookOptions wo;
  wo.secret = cfg.webhook_secret;
  wo.base_ms = cfg.retry_base_ms;
  WebhookDispatcher webhooks(wo, *store, clock, metrics,
                             [](const Task& t) { return task_json(t, true); });
  store->set_commit_listener(commit_listener(service, metrics, webhooks));
  Status st = service.recover();
  if (!st.ok()) {
    spdlog::error("recovery failed: {}", st.message());
    return 1;
  }
  for (auto& [name, pool] : pools.all()) {
    st = pool->start();
    if (!st.ok()) {
      spdlog::error("pool {} cannot start: {}", name, st.message());
      return 1;
    }
  }
  webhooks.start();
  service.start_scheduler();

  HttpServerOptions ho;
  ho.threads = cfg.http_threads;
  ho.read_timeout_s = cfg.read_timeout_s;
  ho.thread_name = "ts-http";
  HttpServer http(ho);
  ApiOptions ao;
  ao.max_body = static_cast<size_t>(cfg.max_body);
  ao.max_upload = static_cast<size_t>(cfg.max_upload);
  ao.api_tokens = cfg.api_tokens;
  ao.sse_heartbeat_s = cfg.sse_heartbeat_s;
  ao.max_streams = cfg.max_streams;
  ao.version = TASKSERVER_VERSION;
  ServerView view;
  view.pools = [&pools] { return pools.stats(); };
  view.store_writable = [&store] { return store->check_writable(); };
  view.store_memory_bytes = [&store] { return store->memory_bytes(); };
  view.started_at_ms = started_at;
  ApiServer api(ao, service, view, metrics, *inputs);
  api.install(http);

  std::string host;
  int port = 0;
  if (!split_host_port(cfg.listen, &host, &port)) {
    spdlog::error("--listen wants host:port, not {}", cfg.listen);
    return 2;
  }
  int bound = http.bind(host, port, &error);
  if (bound < 0) {
    spdlog::error("{}", error);
    return 1;
  }
  // Only a server that serves deletes anything: not one that failed to start.
  Retention retention(*store, *results, *inputs, clock,
                      [&service, &metrics](const std::vector<PurgedTask>& purged) {
                        service.forget_purged(purged);
                        metrics.tasks_purged.inc({}, static_cast<double>(purged.size()));
                      });
  if (cfg.retain_final_s > 0) {
    metrics.tasks_purged.cell({});  // shown at 0 until the first deletion
    retention.start(std::chrono::seconds(cfg.retain_final_s));
  }
  FileSweep sweep(*store, *results, *inputs, started_files);
  if (cfg.api_tokens.empty() && host != "127.0.0.1" && host != "localhost" && host != "::1") {
    spdlog::warn(
        "listening on {} without --api-token: anyone who reaches this address can "
        "submit and cancel tasks",
        host);
  }
  std::thread http_thread([&http] { http.serve(); });
  http.wait_running(5000);
  std::string base = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                     ":" + std::to_string(bound);
  std::printf("listening on %s\n", base.c_str());
  std::fflush(stdout);
  spdlog::info("taskserver {} serving {} (data {}, sync {}, pools: {})", TASKSERVER_VERSION, base,
               cfg.data_dir, cfg.sync, pools_line(cfg));
  if (demo) {
    std::printf(
        "\nDemo running with %zu mock image backends. Try:\n\n"
        "  curl -s -XPOST %s/api/v1/image/async -d '{\"prompt\":\"a red fox\"}'\n"
        "  curl -s '%s/api/v1/tasks?task_id=<task_id>'\n"
        "  curl -s -o fox.png %s/api/images/<task_id>\n"
        "  open %s/ for the dashboard\n\n",
        static_cast<size_t>(cfg.demo_backends), base.c_str(), base.c_str(), base.c_str(),
        base.c_str());
    std::fflush(stdout);
  }
  sd_notify("READY=1\nSTATUS=serving " + base);

  int sig = wait_for_stop_signal();
  spdlog::info("signal {}: stopping; running attempts have {} s to finish", sig,
               cfg.shutdown_grace_s);
  sd_notify("STOPPING=1");
  sweep.stop();
  service.begin_shutdown();
  service.stop_scheduler();
  retention.stop();
  std::vector<std::thread> stoppers;
  for (auto& [name, pool] : pools.all()) {
    WorkerPool* p = pool.get();
    stoppers.emplace_back(
        [p, grace = cfg.shutdown_grace_s] { p->shutdown(std::chrono::seconds(grace)); });
  }
  for (auto& t : stoppers) t.join();
  auto released = store->release_running(clock.now_ms());
  if (released.ok() && *released > 0) {
    spdlog::warn("{} tasks still marked RUNNING went back to QUEUED", *released);
  }
  webhooks.stop();
  http.stop();
  http_thread.join();
  store->close();
  mocks.stop();
  spdlog::info("stopped cleanly");
  return 0;
}

int migrate(const ServeConfig& cfg) {
  std::error_code ec;
  std::filesystem::create_directories(cfg.data_dir, ec);
  StoreOptions so = store_options(cfg);
  auto report = migrate_task_store(so);
  if (!report.ok()) {
    std::cerr << "taskserver migrate: " << report.status().message() << "\n";
    return report.status().slug() == "schema_too_new" ? 3 : 1;
  }
  std::printf("%s: schema version %d -> %d", so.path.c_str(), report->from_version,
              report->to_version);
  if (report->applied.empty()) std::printf(" (up to date)");
  for (const auto& name : report->applied) std::printf("\n  applied %s", name.c_str());
  std::printf("\n");
  return 0;
}

int mock_backend(const MockConfig& cfg) {
  MockBackendOptions o;
  if (!split_host_port(cfg.listen, &o.host, &o.port)) {
    std::cerr << "--listen wants host:port\n";
    return 2;
  }
  o.latency_ms = cfg.latency_ms;
  o.latency_jitter_ms = cfg.latency_jitter_ms;
  o.fail_rate = cfg.fail_rate;
  o.hang_rate = cfg.hang_rate;
  o.status_code = cfg.status_code;
  o.retry_after_s = cfg.retry_after_s;
  o.seed = cfg.seed;
  o.threads = cfg.threads;
  MockBackend mock(o);
  std::string error;
  if (mock.start(&error) < 0) {
    std::cerr << error << "\n";
    return 1;
  }
  std::printf("listening on %s\n", mock.url().c_str());
  std::fflush(stdout);
  wait_for_stop_signal();
  mock.stop();
  return 0;
}

}  // namespace ts
