#include "worker/worker_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "backend/png.h"
#include "core/thread_name.h"

namespace ts {
namespace {

constexpr int kTakeWaitMs = 200;  // workers re-check timed health changes this often
constexpr int kWatchdogTickMs = 50;

CallOutcome outcome_for_balancer(CallResult r) {
  switch (r) {
    case CallResult::kOk: return CallOutcome::kSuccess;
    case CallResult::kClientError: return CallOutcome::kClientError;
    case CallResult::kBusy: return CallOutcome::kBusy;
    case CallResult::kAborted:
    case CallResult::kBadRequest: return CallOutcome::kAborted;
    case CallResult::kServerError:
    case CallResult::kConnectError:
    case CallResult::kTimeout: return CallOutcome::kFailure;
  }
  return CallOutcome::kFailure;
}

}  // namespace

WorkerPool::WorkerPool(PoolOptions options, TaskStore& store, const BlobStore& results,
                       const BlobStore& inputs, const Clock& clock)
    : options_(std::move(options)),
      store_(store),
      results_(results),
      inputs_(inputs),
      clock_(clock),
      balancer_(options_.name, options_.backends, options_.health_policy, clock),
      queue_(ReadyQueue::Options{options_.name, options_.queue_capacity},
             ReadyQueue::Source{
                 [this](size_t limit, const std::unordered_set<int64_t>& exclude,
                        int64_t now) -> StatusOr<std::vector<QueueItem>> {
                   auto rows = store_.fetch_ready(options_.name, limit, exclude, now);
                   if (!rows.ok()) return rows.status();
                   std::vector<QueueItem> items;
                   items.reserve(rows->size());
                   for (auto& r : *rows) {
                     items.push_back({r.seq, r.priority, std::move(r.task_id),
                                      std::move(r.last_backend)});
                   }
                   return items;
                 },
                 [this](int64_t now) { return store_.next_due(options_.name, now); }},
             clock),
      rng_(std::random_device{}()) {
  worker_count_ = options_.workers > 0 ? options_.workers : std::max(1, balancer_.total_slots());
  balancer_.set_listener([this] { queue_.wake(); });
}

WorkerPool::~WorkerPool() { shutdown(std::chrono::milliseconds(0)); }

Status WorkerPool::start() {
  auto blocks = store_.queued_blocks(options_.name, BacklogRanks::kBlockBits);
  if (!blocks.ok()) return blocks.status();
  std::vector<BacklogRanks::BlockCount> counts;
  counts.reserve(blocks->size());
  for (const TaskStore::QueuedBlock& b : *blocks) counts.push_back({b.priority, b.block, b.count});
  ranks_.reset(counts);
  queued_.store(ranks_.total());
  running_count_.store(0);  // recovery put every RUNNING row back before the pools start
  queue_.start();
  checker_ = std::make_unique<HealthChecker>(balancer_, options_.health);
  checker_->start();
  for (int i = 0; i < worker_count_; ++i) workers_.emplace_back([this] {
      name_this_thread("ts-work-" + options_.name);
      worker_loop();
    });
  watchdog_ = std::thread([this] {
    name_this_thread("ts-watch-" + options_.name);
    watchdog_loop();
  });
  return Status::Ok();
}

void WorkerPool::stop_taking() {
  taking_.store(false);
  queue_.stop();
}

void WorkerPool::shutdown(std::chrono::milliseconds grace) {
  stop_taking();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, grace, [&] { return running_.empty(); });
    for (auto& [seq, r] : running_) r.call->abort(AbortReason::kShutdown);
  }
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (checker_) checker_->stop();
}

void WorkerPool::on_change(const TaskChange& c) {
  if (c.from == TaskState::kQueued) {
    queued_.fetch_sub(1);
    ranks_.add(c.priority, c.seq, -1);
  }
  if (c.to == TaskState::kQueued) {
    queued_.fetch_add(1);
    ranks_.add(c.priority, c.seq, +1);
  }
  if (c.from == TaskState::kRunning) running_count_.fetch_sub(1);
  if (c.to == TaskState::kRunning) running_count_.fetch_add(1);
  // New tasks go straight into the channel; requeued ones are handed back by their worker, and
  // a backlog left in the store is found by the feeder.
  if (!c.from && c.to == TaskState::kQueued) {
    queue_.offer(QueueItem{c.seq, c.priority, c.task_id, ""});
  }
  if (c.to == TaskState::kCanceled && c.from) canceled(c.seq, *c.from);
  if (c.to == TaskState::kDone || c.to == TaskState::kFailed) {
    int64_t minute = c.at_ms / 60'000;
    std::lock_guard<std::mutex> lock(throughput_mu_);
    if (throughput_.empty() || throughput_.back().first < minute) {
      throughput_.emplace_back(minute, 0);
    }
    ++throughput_.back().second;
    while (throughput_.size() > kThroughputMinutes) throughput_.pop_front();
  }
}

bool WorkerPool::try_reserve() {
  int64_t r = reserved_.fetch_add(1) + 1;
  if (queued_.load() + r > options_.max_queued) {
    reserved_.fetch_sub(1);
    return false;
  }
  return true;
}

void WorkerPool::unreserve() { reserved_.fetch_sub(1); }

void WorkerPool::canceled(int64_t seq, TaskState was) {
  if (was == TaskState::kQueued) {
    queue_.remove(seq);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = running_.find(seq);
  if (it != running_.end()) it->second.call->abort(AbortReason::kCanceled);
}

int64_t WorkerPool::backoff_ms(int attempt) {
  int64_t ms = options_.retry.base_ms;
  for (int k = 1; k < attempt && ms < options_.retry.cap_ms; ++k) ms *= 2;
  ms = std::min(ms, options_.retry.cap_ms);
  std::lock_guard<std::mutex> lock(mu_);
  // "Equal jitter": half fixed, half random, so retries of a burst spread out but never
  // come back at once.
  return ms / 2 + std::uniform_int_distribution<int64_t>(0, ms / 2)(rng_);
}

void WorkerPool::worker_loop() {
  while (taking_.load()) {
    std::optional<Lease> lease;
    auto item = queue_.take(
        [&](const QueueItem& front) {
          lease = balancer_.acquire(front.avoid_backend);
          return lease.has_value();
        },
        kTakeWaitMs);
    if (!item) {
      if (lease) balancer_.release(*lease, CallOutcome::kAborted, 0, "");
      continue;
    }
    busy_.fetch_add(1);
    run_one(*item, *lease);
    busy_.fetch_sub(1);
  }
}

void WorkerPool::report(const std::string& task_id, const std::string& backend,
                        const std::string& outcome, int64_t duration_ms) {
  if (attempt_listener_) {
    attempt_listener_(AttemptReport{options_.name, task_id, backend, outcome, duration_ms});
  }
}

void WorkerPool::run_one(const QueueItem& item, const Lease& lease) {
  auto call = std::make_shared<BackendCall>();
  // Registered before the task turns RUNNING, so a cancel that lands in between still finds
  // the call and aborts it before it is sent.
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_[item.seq] = Running{call, INT64_MAX};
  }
  auto unregister = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    running_.erase(item.seq);
    cv_.notify_all();
  };

  int64_t started = clock_.now_ms();
  auto marked = store_.mark_running(item.seq, lease.url, started);
  if (!marked.ok() || !*marked) {
    unregister();
    balancer_.release(lease, CallOutcome::kAborted, 0, "");
    if (!marked.ok()) {
      spdlog::error("pool {}: cannot mark task {} running: {}", options_.name, item.task_id,
                    marked.status().message());
      queue_.give_back(item);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    } else {
      queue_.release(item.seq);  // canceled while queued
    }
    return;
  }
  const Task& task = **marked;
  int timeout_s = std::clamp(task.timeout_s.value_or(options_.default_timeout_s), 1,
                             options_.max_timeout_s);
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_[item.seq].deadline_ms = started + int64_t{timeout_s} * 1000;
  }

  BackendRequest req;
  req.base_url = lease.url;
  req.path = options_.request_path;
  req.body = task.payload;
  req.timeout_ms = int64_t{timeout_s} * 1000;
  req.connect_timeout_ms = options_.connect_timeout_ms;
  req.max_answer_bytes = options_.max_answer_bytes;
  if (task.input_name) {
    req.file = InputFile{inputs_.path_of(task.task_id), *task.input_name,
                         task.input_type.value_or("application/octet-stream")};
  }
  BackendResponse resp = call->run(req);
  unregister();
  if (resp.result == CallResult::kOk && options_.expect_images && !is_images_answer(resp.body)) {
    // A 2xx that is not an images answer is the backend misbehaving: it counts against it and
    // the task tries again, rather than ending DONE with no image.
    resp.result = CallResult::kServerError;
    resp.error = "the backend answered HTTP " + std::to_string(resp.http_status) +
                 " without an images answer (data[0].b64_json or url): " +
                 resp.body.substr(0, 120);
    resp.body.clear();
  }
  int64_t ended = clock_.now_ms();
  int64_t duration = ended - started;
  balancer_.release(lease, outcome_for_balancer(resp.result), duration, resp.error,
                    resp.retry_after_ms);

  Attempt attempt{task.attempt, lease.url, "", resp.error, started, duration};
  auto finish_failed = [&](const std::string& error) {
    attempt.outcome = "failed";
    auto r = store_.finish_failed(item.seq, attempt, error);
    if (!r.ok()) spdlog::error("task {}: cannot record failure: {}", task.task_id, r.status().message());
    queue_.release(item.seq);
  };
  auto requeue = [&](std::optional<int64_t> next_at, bool give_back, const std::string& outcome) {
    attempt.outcome = outcome;
    auto r = store_.requeue(item.seq, attempt, next_at, give_back, resp.error);
    if (!r.ok()) {
      spdlog::error("task {}: cannot requeue: {}", task.task_id, r.status().message());
      queue_.release(item.seq);
      return;
    }
    if (!*r) {  // canceled meanwhile
      queue_.release(item.seq);
    } else if (next_at) {
      queue_.release(item.seq);
      queue_.schedule(*next_at);
    } else {
      queue_.give_back(QueueItem{item.seq, item.priority, item.task_id, lease.url});
    }
  };

  switch (resp.result) {
    case CallResult::kOk: {
      Status st = results_.put(task.task_id, resp.body);
      if (!st.ok()) {
        spdlog::error("task {}: cannot store result: {}", task.task_id, st.message());
        resp.error = "cannot store the result: " + st.message();
        requeue(ended + backoff_ms(task.attempt), false, "retry");
        break;
      }
      attempt.outcome = "done";
      attempt.error.clear();
      ResultMeta meta{static_cast<int64_t>(resp.body.size()),
                      resp.content_type.empty() ? "application/octet-stream" : resp.content_type};
      auto r = store_.finish_done(item.seq, attempt, meta);
      if (!r.ok()) {
        spdlog::error("task {}: cannot record result: {}", task.task_id, r.status().message());
      } else if (!*r) {
        results_.remove(task.task_id);  // canceled while running: the result is not kept
      }
      queue_.release(item.seq);
      break;
    }
    case CallResult::kClientError:
    case CallResult::kBadRequest:
      finish_failed(resp.error);
      break;
    case CallResult::kServerError:
    case CallResult::kConnectError:
    case CallResult::kTimeout:
      if (task.attempt >= task.max_attempts) {
        finish_failed("all " + std::to_string(task.max_attempts) +
                      " attempts failed; the last: " + resp.error);
      } else {
        requeue(ended + backoff_ms(task.attempt), false, "retry");
      }
      break;
    case CallResult::kBusy:
      // Busy is not broken: the attempt does not count and another backend may take it now.
      requeue(std::nullopt, true, "busy");
      break;
    case CallResult::kAborted:
      if (call->abort_reason() == AbortReason::kShutdown) {
        resp.error = "interrupted by shutdown";
        requeue(std::nullopt, true, "interrupted");
      } else {
        queue_.release(item.seq);  // canceled: the store already says so
      }
      break;
  }
  report(task.task_id, lease.url, attempt.outcome.empty() ? "canceled" : attempt.outcome,
         duration);
}

void WorkerPool::watchdog_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    int64_t now = clock_.now_ms();
    for (auto& [seq, r] : running_) {
      if (now >= r.deadline_ms && r.call->abort_reason() == AbortReason::kNone) {
        r.call->abort(AbortReason::kTimeout);
      }
    }
    cv_.wait_for(lock, std::chrono::milliseconds(kWatchdogTickMs));
  }
}

StatusOr<int64_t> WorkerPool::queue_position(int priority, int64_t seq) const {
  BacklogRanks::Ahead ahead = ranks_.ahead(priority, seq);
  auto in_block = store_.count_queued_between(options_.name, priority, ahead.block_first_seq, seq);
  if (!in_block.ok()) return in_block.status();
  // The counts follow commits a moment after a reader sees them: never below zero.
  return std::max<int64_t>(0, ahead.outside_block + *in_block);
}

std::optional<int64_t> WorkerPool::estimate_start_ms(int64_t position) const {
  auto backends = balancer_.snapshot();
  double mean = 0;
  int samples = 0, slots = 0, busy = 0;
  for (const auto& b : backends) {
    if (b.state == "down") continue;
    slots += b.slots;
    busy += b.slots_busy;
    if (b.latency_mean_ms > 0) {
      mean += b.latency_mean_ms;
      ++samples;
    }
  }
  if (slots == 0 || samples == 0) return std::nullopt;
  mean /= samples;
  int64_t now = clock_.now_ms();
  int64_t free_slots = slots - busy;
  if (position < free_slots) return now;
  // Each round of `slots` tasks takes about one mean duration; the running ones are, on
  // average, half done.
  int64_t rounds = (position - free_slots) / slots;
  return now + static_cast<int64_t>(mean * (0.5 + static_cast<double>(rounds)));
}

PoolStats WorkerPool::stats() const {
  PoolStats s;
  s.name = options_.name;
  s.queued = queued_.load();
  s.in_memory = queue_.size();
  s.running = running_count_.load();
  s.workers = worker_count_;
  s.workers_busy = busy_.load();
  s.max_queued = options_.max_queued;
  s.backends = balancer_.snapshot();
  if (s.queued > 0) {
    auto oldest = store_.oldest_queued_created_at(options_.name);
    if (oldest.ok()) s.oldest_queued_ms = *oldest;
  }
  int64_t now_minute = clock_.now_ms() / 60'000;
  s.throughput_per_minute.assign(kThroughputMinutes, 0);
  {
    std::lock_guard<std::mutex> lock(throughput_mu_);
    for (const auto& [minute, n] : throughput_) {
      int64_t age = now_minute - minute;
      if (age >= 0 && age < kThroughputMinutes) {
        s.throughput_per_minute[kThroughputMinutes - 1 - age] = n;
      }
    }
  }
  s.completed_last_minute = s.throughput_per_minute.back();
  return s;
}

}  // namespace ts
