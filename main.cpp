// taskserver: wiring only. config → logging → store → recover → pools → http → wait for a
// signal → stop in reverse order.

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <thread>

#include <spdlog/spdlog.h>

#include "api/api_server.h"
#include "api/task_json.h"
#include "backend/mock_backend.h"
#include "cli/client.h"
#include "config/config.h"
#include "core/clock.h"
#include "http/server.h"
#include "core/logging.h"
#include "core/metrics.h"
#include "core/sd_notify.h"
#include "core/thread_name.h"
#include "service/events.h"
#include "service/task_service.h"
#include "store/blob_store.h"
#include "store/migrations.h"
#include "store/task_store.h"
#include "worker/webhook_dispatcher.h"
#include "worker/worker_pool.h"

namespace {

using namespace ts;

// The pools as the service sees them.
class Pools final : public PoolDirectory {
 public:
  void add(std::unique_ptr<WorkerPool> pool) {
    std::string name = pool->options().name;
    pools_[name] = std::move(pool);
  }
  bool has_pool(const std::string& type) const override { return pools_.count(type) != 0; }
  std::vector<std::string> pool_names() const override {
    std::vector<std::string> names;
    for (const auto& [n, p] : pools_) names.push_back(n);
    return names;
  }
  bool try_reserve(const std::string& type) override { return pools_.at(type)->try_reserve(); }
  void unreserve(const std::string& type) override { pools_.at(type)->unreserve(); }
  int default_max_attempts(const std::string& type) const override {
    return pools_.at(type)->options().default_max_attempts;
  }
  int max_timeout_s(const std::string& type) const override {
    return pools_.at(type)->options().max_timeout_s;
  }
  void on_change(const TaskChange& change) override { pools_.at(change.type)->on_change(change); }
  StatusOr<int64_t> queue_position(const std::string& type, int priority,
                                   int64_t seq) const override {
    return pools_.at(type)->queue_position(priority, seq);
  }
  std::optional<int64_t> estimate_start_ms(const std::string& type,
                                           int64_t position) const override {
    return pools_.at(type)->estimate_start_ms(position);
  }
  std::vector<PoolStats> stats() const {
    std::vector<PoolStats> out;
    for (const auto& [n, p] : pools_) out.push_back(p->stats());
    return out;
  }
  std::map<std::string, std::unique_ptr<WorkerPool>>& all() { return pools_; }

 private:
  std::map<std::string, std::unique_ptr<WorkerPool>> pools_;  // fixed after start
};

// Holds the data folder for this process alone: two servers on one store would both recover
// each other's RUNNING tasks.
class DataDirLock {
 public:
  bool acquire(const std::string& dir, std::string* error) {
    std::string path = dir + "/taskserver.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      *error = "the data folder " + dir + " is in use by another taskserver (" + path + ")";
      return false;
    }
    return true;
  }
  ~DataDirLock() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_ = -1;
};

// Sweeps what an earlier process left in the blob folders (temporaries of writes it did not
// finish, files of tasks it did not insert or had just deleted) on a thread of its own once the
// server serves: the walk visits every result file. Stopped and joined when it goes.
class FileSweep {
 public:
  FileSweep(TaskService& service, const BlobStore& results, const BlobStore& inputs,
            std::filesystem::file_time_type started)
      : thread_([this, &service, &results, &inputs, started] {
          name_this_thread("ts-sweep");
          size_t n =
              results.sweep_temporaries(stop_, started) + inputs.sweep_temporaries(stop_, started);
          if (n > 0) spdlog::info("removed {} temporary files left by an earlier process", n);
          auto orphans = service.sweep_orphan_files(stop_, started);
          if (!orphans.ok()) {
            spdlog::warn("cannot look for files of deleted tasks: {}", orphans.status().message());
          } else if (*orphans > 0) {
            spdlog::info("removed {} files of tasks the store does not have", *orphans);
          }
        }) {}
  ~FileSweep() { stop(); }
  void stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: it reads stop_
};

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

std::vector<BackendSpec> backends_of(const PoolConfig& p) {
  std::vector<BackendSpec> out;
  for (const auto& url : p.urls) out.push_back({url, p.slots});
  return out;
}

PoolOptions pool_options(const ServeConfig& c, const PoolConfig& p) {
  PoolOptions o;
  o.name = p.name;
  o.request_path = p.request_path;
  o.backends = backends_of(p);
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
  o.default_timeout_s = p.timeout_s > 0 ? std::min(p.timeout_s, c.max_timeout_s) : c.default_timeout_s;
  o.max_timeout_s = c.max_timeout_s;
  o.default_max_attempts = p.max_attempts > 0 ? p.max_attempts : c.max_attempts;
  o.retry.base_ms = p.retry_base_ms > 0 ? p.retry_base_ms : c.retry_base_ms;
  o.retry.cap_ms = p.retry_cap_ms > 0 ? p.retry_cap_ms : c.retry_cap_ms;
  o.max_answer_bytes = static_cast<size_t>(c.max_result);
  // The image pool's answers are served as images (/api/images/{id}): check they are some.
  o.expect_images = p.name == "image";
  return o;
}

int serve(ServeConfig cfg, bool demo) {
  const Clock& clock = SystemClock::instance();
  int64_t started_at = clock.now_ms();
  const auto started_files = std::filesystem::file_time_type::clock::now();

  std::vector<std::unique_ptr<MockBackend>> mocks;
  if (demo) {
    auto start_mock = [&](int latency) -> std::string {
      MockBackendOptions mo;
      mo.latency_ms = latency;
      mo.latency_jitter_ms = latency / 2;
      mo.image_size = 256;
      auto mock = std::make_unique<MockBackend>(mo);
      std::string err;
      if (mock->start(&err) < 0) {
        spdlog::error("demo: cannot start a mock backend: {}", err);
        return "";
      }
      std::string url = mock->url();
      mocks.push_back(std::move(mock));
      return url;
    };
    for (PoolConfig& p : cfg.pools) {
      if (p.name == "image" && p.urls.empty()) {
        for (int i = 0; i < cfg.demo_backends; ++i) p.urls.push_back(start_mock(cfg.demo_latency_ms));
      }
    }
    if (std::none_of(cfg.pools.begin(), cfg.pools.end(),
                     [](const PoolConfig& p) { return p.name == "transcribe"; })) {
      PoolConfig t;
      t.name = "transcribe";
      t.request_path = "/v1/audio/transcriptions";
      t.urls.push_back(start_mock(cfg.demo_latency_ms / 2));
      cfg.pools.push_back(t);
    }
  }

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

  StoreOptions so;
  so.path = cfg.data_dir + "/tasks.db";
  so.sync_full = cfg.sync == "full";
  auto opened = TaskStore::open(so, clock);
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
    auto pool = std::make_unique<WorkerPool>(pool_options(cfg, p), *store, *results, *inputs, clock);
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
  store->set_commit_listener(
      [&service, &metrics, &webhooks](const std::vector<TaskChange>& changes) {
        // Counted before on_commit publishes the events: a client woken by a task's final
        // state (a long-poll, a stream) then finds it in /metrics too.
        for (const TaskChange& c : changes) {
          if (c.to == TaskState::kDone) metrics.task_success.inc({c.type});
          if (c.to == TaskState::kFailed) metrics.task_failure.inc({c.type});
          if (c.to == TaskState::kCanceled) metrics.task_canceled.inc({c.type});
        }
        service.on_commit(changes);
        for (const TaskChange& c : changes) {
          if (c.webhook_pending) webhooks.wake();
        }
      });
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
  view.store_memory_bytes = [] { return TaskStore::sqlite_memory_bytes(); };
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
  if (cfg.retain_final_s > 0) {
    metrics.tasks_purged.cell({});  // shown at 0 until the first deletion
    service.start_retention(std::chrono::seconds(cfg.retain_final_s), [&metrics](int64_t n) {
      metrics.tasks_purged.inc({}, static_cast<double>(n));
    });
  }
  FileSweep sweep(service, *results, *inputs, started_files);
  if (cfg.api_tokens.empty() && host != "127.0.0.1" && host != "localhost" && host != "::1") {
    spdlog::warn("listening on {} without --api-token: anyone who reaches this address can "
                 "submit and cancel tasks", host);
  }
  std::thread http_thread([&http] { http.serve(); });
  http.wait_running(5000);
  std::string base = "http://" + (host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                     ":" + std::to_string(bound);
  std::printf("listening on %s\n", base.c_str());
  std::fflush(stdout);
  spdlog::info("taskserver {} serving {} (data {}, sync {}, pools: {})", TASKSERVER_VERSION, base,
               cfg.data_dir, cfg.sync, [&] {
                 std::string s;
                 for (const auto& p : cfg.pools) {
                   s += (s.empty() ? "" : ", ") + p.name + "=" + std::to_string(p.urls.size());
                 }
                 return s;
               }());
  if (demo) {
    std::printf(
        "\nDemo running with %zu mock image backends. Try:\n\n"
        "  curl -s -XPOST %s/api/v1/image/async -d '{\"prompt\":\"a red fox\"}'\n"
        "  curl -s '%s/api/v1/tasks?task_id=<task_id>'\n"
        "  curl -s -o fox.png %s/api/images/<task_id>\n"
        "  open %s/ for the dashboard\n\n",
        static_cast<size_t>(cfg.demo_backends), base.c_str(), base.c_str(), base.c_str(), base.c_str());
    std::fflush(stdout);
  }
  sd_notify("READY=1\nSTATUS=serving " + base);

  int sig = wait_for_stop_signal();
  spdlog::info("signal {}: stopping; running attempts have {} s to finish", sig,
               cfg.shutdown_grace_s);
  sd_notify("STOPPING=1");
  sweep.stop();
  service.begin_shutdown();
  std::vector<std::thread> stoppers;
  for (auto& [name, pool] : pools.all()) {
    WorkerPool* p = pool.get();
    stoppers.emplace_back([p, grace = cfg.shutdown_grace_s] {
      p->shutdown(std::chrono::seconds(grace));
    });
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
  for (auto& m : mocks) m->stop();
  spdlog::info("stopped cleanly");
  return 0;
}

int migrate(const ServeConfig& cfg) {
  std::error_code ec;
  std::filesystem::create_directories(cfg.data_dir, ec);
  std::string path = cfg.data_dir + "/tasks.db";
  auto migrations = builtin_migrations();
  if (!migrations.ok()) {
    std::cerr << migrations.status().message() << "\n";
    return 1;
  }
  try {
    SQLite::Database db(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, 5000);
    db.exec("PRAGMA journal_mode = WAL");
    auto report = apply_migrations(db, *migrations);
    if (!report.ok()) {
      std::cerr << "taskserver migrate: " << report.status().message() << "\n";
      return report.status().slug() == "schema_too_new" ? 3 : 1;
    }
    std::printf("%s: schema version %d -> %d", path.c_str(), report->from_version,
                report->to_version);
    if (report->applied.empty()) std::printf(" (up to date)");
    for (const auto& name : report->applied) std::printf("\n  applied %s", name.c_str());
    std::printf("\n");
  } catch (const std::exception& e) {
    std::cerr << "taskserver migrate: " << e.what() << "\n";
    return 1;
  }
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

}  // namespace

int main(int argc, char** argv) {
  // Stop signals are taken by sigwait in the main thread; every thread made later inherits the
  // mask. Writes to a closed socket must fail, not kill the process.
  sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ts::Parsed parsed = ts::parse_command_line(argc, argv);
  if (parsed.exit_code >= 0) return parsed.exit_code;
  if (!ts::setup_logging(parsed.serve.log_format, parsed.serve.log_level)) {
    std::cerr << "unknown --log-level " << parsed.serve.log_level << "\n";
    return 2;
  }
  switch (parsed.command) {
    case ts::Command::kServe: return serve(parsed.serve, false);
    case ts::Command::kDemo: return serve(parsed.serve, true);
    case ts::Command::kMigrate: return migrate(parsed.serve);
    case ts::Command::kMockBackend: return mock_backend(parsed.mock);
    default: return ts::run_client(parsed.command, parsed.client);
  }
}
