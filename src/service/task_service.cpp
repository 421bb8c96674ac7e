#include "service/task_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "core/base64.h"
#include "core/ids.h"
#include "core/thread_name.h"

namespace ts {
namespace {

constexpr int kRetryAfterBacklogS = 5;

Status unknown_type(const std::string& type, const std::vector<std::string>& pools) {
  std::string names;
  for (const auto& p : pools) names += (names.empty() ? "" : ", ") + p;
  return Status::Invalid("type", "unknown type \"" + type + "\"; the pools are: " + names);
}

Status backlog_full(const std::string& type) {
  Status st(Code::kBacklogFull, "backlog_full",
            "the " + type + " pool's backlog is full; retry later");
  st.with_retry_after(kRetryAfterBacklogS);
  return st;
}

Status shutting_down_status() {
  return Status::Unavailable("shutting_down", "the server is shutting down");
}

}  // namespace

TaskService::TaskService(TaskStore& store, PoolDirectory& pools, EventHub& events,
                         const BlobStore& results, const BlobStore& inputs, const Clock& clock)
    : store_(store),
      pools_(pools),
      events_(events),
      results_(results),
      inputs_(inputs),
      clock_(clock) {}

TaskService::~TaskService() {
  stop_retention();  // when begin_shutdown() was not called (a start that failed half way)
  std::multimap<std::string, LongPollPtr> left;
  {
    std::lock_guard<std::mutex> lock(polls_mu_);
    polls_stop_ = true;
  }
  polls_cv_.notify_all();
  if (polls_thread_.joinable()) polls_thread_.join();
  {
    std::lock_guard<std::mutex> lock(polls_mu_);
    left.swap(polls_);
    polls_done_ = true;
  }
  for (auto& [id, poll] : left) answer(*poll);
}

Status TaskService::recover() {
  auto report = store_.recover_running(clock_.now_ms());
  if (!report.ok()) return report.status();
  recovered_requeued_ = report->requeued;
  recovered_failed_ = report->failed;
  if (report->requeued + report->failed > 0) {
    spdlog::warn("recovered {} tasks left RUNNING by a crash: {} queued again, {} failed "
                 "(attempts spent)",
                 report->requeued + report->failed, report->requeued, report->failed);
  }
  auto counts = store_.count_by_status();
  if (!counts.ok()) return counts.status();
  for (auto& t : totals_) t.store(0);
  for (const auto& [name, n] : *counts) {
    if (auto state = parse_task_state(name)) totals_[static_cast<size_t>(*state)].store(n);
  }
  return Status::Ok();
}

void TaskService::on_commit(const std::vector<TaskChange>& changes) {
  events_.publish(changes);
  for (const TaskChange& c : changes) {
    if (c.from) totals_[static_cast<size_t>(*c.from)].fetch_sub(1, std::memory_order_relaxed);
    totals_[static_cast<size_t>(c.to)].fetch_add(1, std::memory_order_relaxed);
  }
  for (const TaskChange& c : changes) {
    if (pools_.has_pool(c.type)) pools_.on_change(c);
    if (c.to != TaskState::kQueued || c.from) {
      spdlog::info("task {} {} -> {}{}{}", c.task_id,
                   c.from ? std::string(to_string(*c.from)) : std::string("new"),
                   to_string(c.to), c.backend.empty() ? "" : " on " + c.backend,
                   c.error.empty() ? "" : ": " + c.error);
    } else {
      spdlog::debug("task {} new -> QUEUED ({})", c.task_id, c.type);
    }
  }
}

std::map<std::string, int64_t> TaskService::totals() const {
  std::map<std::string, int64_t> out;
  for (TaskState s : {TaskState::kQueued, TaskState::kRunning, TaskState::kDone,
                      TaskState::kFailed, TaskState::kCanceled}) {
    out[std::string(to_string(s))] = totals_[static_cast<size_t>(s)].load();
  }
  return out;
}

void TaskService::begin_shutdown() {
  shutting_down_.store(true);
  events_.close();
  stop_retention();
}

void TaskService::stop_retention() {
  {
    std::lock_guard<std::mutex> lock(retention_mu_);
    retention_stop_ = true;
  }
  retention_cv_.notify_all();
  if (retention_thread_.joinable()) retention_thread_.join();
}

StatusOr<int64_t> TaskService::purge_final(int64_t before_ms,
                                           const std::function<void(int64_t)>& on_batch) {
  // Small batches: each is one transaction of the writer, which submits wait behind.
  constexpr int kBatch = 100;
  int64_t total = 0;
  for (;;) {
    auto purged = store_.purge_final(before_ms, kBatch);
    if (!purged.ok()) return purged.status();
    for (const TaskStore::Purged& p : *purged) {
      // After the commit: a crash in between leaves a file without its task, never the reverse.
      results_.remove(p.task_id);
      inputs_.remove(p.task_id);
      totals_[static_cast<size_t>(p.status)].fetch_sub(1, std::memory_order_relaxed);
    }
    total += static_cast<int64_t>(purged->size());
    if (on_batch && !purged->empty()) on_batch(static_cast<int64_t>(purged->size()));
    // A long backlog of old tasks (the first round after --retain-final is set) must not hold
    // up a shutdown: the next round goes on where this one stopped.
    if (purged->size() < static_cast<size_t>(kBatch) || shutting_down_.load() ||
        retention_stop_.load()) {
      return total;
    }
  }
}

void TaskService::start_retention(std::chrono::seconds keep,
                                  std::function<void(int64_t)> on_purged) {
  // A tenth of the retention between rounds, from 1 s to 1 min: a task is deleted at most that
  // long after it is due.
  auto every = std::clamp<std::chrono::milliseconds>(keep / 10, std::chrono::seconds(1),
                                                     std::chrono::minutes(1));
  retention_thread_ = std::thread([this, keep, every, on_purged = std::move(on_purged)] {
    name_this_thread("ts-retention");
    std::unique_lock<std::mutex> lock(retention_mu_);
    while (!retention_stop_.load()) {
      lock.unlock();
      int64_t before = clock_.now_ms() -
                       std::chrono::duration_cast<std::chrono::milliseconds>(keep).count();
      auto n = purge_final(before, on_purged);
      if (!n.ok()) {
        spdlog::warn("retention: cannot delete old tasks: {}", n.status().message());
      } else if (*n > 0) {
        spdlog::info("retention: deleted {} final tasks that finished over {} s ago", *n,
                     keep.count());
      }
      lock.lock();
      retention_cv_.wait_for(lock, every, [this] { return retention_stop_.load(); });
    }
  });
}

StatusOr<size_t> TaskService::sweep_orphan_files(const std::atomic<bool>& stop,
                                                 std::filesystem::file_time_type started) {
  size_t removed = 0;
  Status failed = Status::Ok();
  for (const BlobStore* blobs : {&results_, &inputs_}) {
    std::vector<std::string> batch;
    auto flush = [&] {
      if (batch.empty() || !failed.ok()) return;
      auto existing = store_.existing_task_ids(batch);
      if (!existing.ok()) {
        failed = existing.status();
        return;
      }
      for (const std::string& name : batch) {
        if (existing->count(name) || !blobs->written_before(name, started)) continue;
        std::error_code ec;
        if (std::filesystem::remove(blobs->path_of(name), ec)) ++removed;
      }
      batch.clear();
    };
    blobs->for_each_name(stop, [&](const std::string& name) {
      if (!is_valid_task_id(name)) return;  // temporaries and anything else are not ours to judge
      batch.push_back(name);
      if (batch.size() == 500) flush();
    });
    flush();
  }
  if (!failed.ok()) return failed;
  return removed;
}

StatusOr<Task> TaskService::build_task(NewTask& r, int64_t now) {
  if (!pools_.has_pool(r.type)) return unknown_type(r.type, pools_.pool_names());
  if (r.timeout_s && *r.timeout_s > pools_.max_timeout_s(r.type)) {
    return Status::Invalid("timeout_s", "timeout_s may be at most " +
                                            std::to_string(pools_.max_timeout_s(r.type)) +
                                            " for the " + r.type + " pool");
  }
  Task t;
  t.task_id = new_task_id(now);
  t.type = std::move(r.type);
  t.payload = std::move(r.payload);
  t.priority = r.priority;
  t.max_attempts = r.max_attempts.value_or(pools_.default_max_attempts(t.type));
  t.timeout_s = r.timeout_s;
  t.idempotency_key = std::move(r.idempotency_key);
  t.webhook_url = std::move(r.webhook_url);
  t.created_at = now;
  t.status = TaskState::kQueued;
  return t;
}

StatusOr<SubmitOutcome> TaskService::submit(NewTask request, std::optional<Upload> upload) {
  auto discard_upload = [&] {
    if (upload) ::remove(upload->temp_path.c_str());
  };
  if (shutting_down()) {
    discard_upload();
    return shutting_down_status();
  }
  auto built = build_task(request, clock_.now_ms());
  if (!built.ok()) {
    discard_upload();
    return built.status();
  }
  Task task = std::move(*built);
  if (!pools_.try_reserve(task.type)) {
    discard_upload();
    // A repeat adds nothing to the backlog: it is answered even when the backlog is full.
    if (task.idempotency_key) {
      auto existing = store_.get_by_idempotency_key(*task.idempotency_key);
      if (existing.ok() && *existing) return SubmitOutcome{std::move(**existing), false};
    }
    return backlog_full(task.type);
  }
  if (upload) {
    task.input_name = upload->filename;
    task.input_type = upload->content_type;
    task.input_size = upload->size;
    // The file is in place before the row that names it commits.
    Status st = inputs_.adopt(upload->temp_path, task.task_id);
    if (!st.ok()) {
      pools_.unreserve(task.type);
      return st;
    }
  }
  auto inserted = store_.insert(task);
  pools_.unreserve(task.type);
  if (!inserted.ok() || !inserted->created) {
    if (upload) inputs_.remove(task.task_id);
  }
  if (!inserted.ok()) return inserted.status();
  if (inserted->created) return SubmitOutcome{std::move(task), true};
  auto existing = store_.get(inserted->task_id, false);
  if (!existing.ok()) return existing.status();
  if (!*existing) return Status::Internal("idempotent repeat names a missing task");
  return SubmitOutcome{std::move(**existing), false};
}

Status TaskService::submit_nowait(NewTask request,
                                  const std::function<void(const Task&)>& accepted,
                                  SubmitCommitted committed) {
  if (shutting_down()) return shutting_down_status();
  auto built = build_task(request, clock_.now_ms());
  if (!built.ok()) return built.status();
  // A repeat of a committed key is answered from a reader, without a trip through the writer
  // (and even when the backlog is full: it adds nothing). One whose first is not committed yet
  // is found by the writer's insert instead.
  if (built->idempotency_key) {
    auto existing = store_.get_by_idempotency_key(*built->idempotency_key);
    if (!existing.ok()) return existing.status();
    if (*existing) {
      committed(Status::Ok(), &**existing);
      return Status::Ok();
    }
  }
  if (!pools_.try_reserve(built->type)) return backlog_full(built->type);
  accepted(*built);
  std::string type = built->type;
  store_.insert_async(
      std::move(*built), [this, type = std::move(type), committed = std::move(committed)](
                             const StatusOr<TaskStore::InsertOutcome>& out) {
        pools_.unreserve(type);
        if (!out.ok()) return committed(out.status(), nullptr);
        if (out->created) return committed(Status::Ok(), nullptr);
        // A repeat that raced its first (rare): one read, on the notifier thread.
        auto first = store_.get(out->task_id, false);
        if (!first.ok()) return committed(first.status(), nullptr);
        if (!*first) {
          return committed(Status::Internal("idempotent repeat names a missing task"), nullptr);
        }
        committed(Status::Ok(), &**first);
      });
  return Status::Ok();
}

StatusOr<std::vector<SubmitOutcome>> TaskService::submit_batch(std::vector<NewTask> requests) {
  if (shutting_down()) return shutting_down_status();
  int64_t now = clock_.now_ms();
  std::vector<Task> tasks;
  tasks.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto built = build_task(requests[i], now);
    if (!built.ok()) {
      const Status& s = built.status();
      return Status(s.code(), s.slug(), "tasks[" + std::to_string(i) + "]: " + s.message(),
                    "tasks[" + std::to_string(i) + "]." + s.field());
    }
    tasks.push_back(std::move(*built));
  }
  size_t reserved = 0;
  for (; reserved < tasks.size(); ++reserved) {
    if (!pools_.try_reserve(tasks[reserved].type)) break;
  }
  auto unreserve_all = [&] {
    for (size_t i = 0; i < reserved; ++i) pools_.unreserve(tasks[i].type);
  };
  if (reserved < tasks.size()) {
    std::string type = tasks[reserved].type;
    unreserve_all();
    return backlog_full(type);
  }
  auto inserted = store_.insert_batch(tasks);
  unreserve_all();
  if (!inserted.ok()) return inserted.status();
  std::vector<SubmitOutcome> out;
  out.reserve(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    if ((*inserted)[i].created) {
      out.push_back({std::move(tasks[i]), true});
      continue;
    }
    auto existing = store_.get((*inserted)[i].task_id, false);
    if (!existing.ok()) return existing.status();
    if (!*existing) return Status::Internal("idempotent repeat names a missing task");
    out.push_back({std::move(**existing), false});
  }
  return out;
}

StatusOr<Task> TaskService::read_task(const std::string& task_id, bool with_payload) {
  if (!is_valid_task_id(task_id)) return Status::NotFound("no task with id " + task_id);
  auto found = store_.get(task_id, with_payload);
  if (!found.ok()) return found.status();
  if (!*found) return Status::NotFound("no task with id " + task_id);
  return std::move(**found);
}

StatusOr<TaskView> TaskService::get(const std::string& task_id, std::chrono::milliseconds wait) {
  auto deadline = std::chrono::steady_clock::now() + wait;
  uint64_t cursor = events_.last_id();
  auto found = read_task(task_id, true);
  if (!found.ok()) return found.status();
  while (!is_final(found->status) && !shutting_down()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    auto events = events_.wait_after(
        &cursor, left, [&](const TaskEvent& e) { return e.task_id == task_id && is_final(e.status); },
        nullptr);
    if (events.empty()) continue;
    found = read_task(task_id, true);
    if (!found.ok()) return found.status();
  }
  return view_of(std::move(*found));
}

TaskView TaskService::view_of(Task task) {
  TaskView view;
  view.task = std::move(task);
  const Task& t = view.task;
  if (t.status != TaskState::kQueued) return view;
  // A task of a type no pool serves (any more: the store outlives the configuration) is
  // counted in the store, the slow way, and has no estimate.
  bool pooled = pools_.has_pool(t.type);
  auto pos = pooled ? pools_.queue_position(t.type, t.priority, t.seq)
                    : store_.queue_position(t.type, t.priority, t.seq);
  if (!pos.ok()) return view;
  view.queue_position = *pos;
  if (pooled) view.estimated_start_ms = pools_.estimate_start_ms(t.type, *pos);
  if (view.estimated_start_ms && t.next_attempt_at &&
      *t.next_attempt_at > *view.estimated_start_ms) {
    view.estimated_start_ms = t.next_attempt_at;
  }
  return view;
}

void TaskService::get_async(const std::string& task_id, std::chrono::milliseconds wait,
                            ViewDone done) {
  // Taken before the read: the change that makes the task final after the read is an event
  // after this, which the long-poll thread looks at (see long_poll_loop).
  uint64_t cursor = events_.last_id();
  auto found = read_task(task_id, true);
  if (!found.ok()) return done(found.status());
  if (wait.count() <= 0 || is_final(found->status) || shutting_down()) {
    return done(view_of(std::move(*found)));
  }
  auto poll = std::make_shared<LongPoll>(
      LongPoll{task_id, std::chrono::steady_clock::now() + wait, std::move(done)});
  {
    std::unique_lock<std::mutex> lock(polls_mu_);
    if (polls_done_) {  // shut down meanwhile: no thread left to answer it later
      lock.unlock();
      return answer(*poll);
    }
    polls_.emplace(task_id, poll);
    rewind_to_ = std::min(rewind_to_, cursor);
    if (!polls_thread_.joinable()) {
      polls_thread_ = std::thread([this] {
        name_this_thread("ts-longpoll");
        long_poll_loop();
      });
    }
  }
  polls_cv_.notify_one();
}

void TaskService::answer(const LongPoll& poll) {
  auto found = read_task(poll.task_id, true);
  if (!found.ok()) return poll.done(found.status());
  poll.done(view_of(std::move(*found)));
}

void TaskService::long_poll_loop() {
  uint64_t cursor = UINT64_MAX;  // nothing watched yet
  for (;;) {
    std::vector<LongPollPtr> due, recheck;
    std::chrono::milliseconds sleep(100);  // the waits end within this of their deadline
    {
      std::unique_lock<std::mutex> lock(polls_mu_);
      if (polls_.empty()) cursor = UINT64_MAX;  // the next poll's cursor says where to look
      polls_cv_.wait(lock, [&] { return !polls_.empty() || polls_stop_; });
      if (polls_stop_) return;
      // Back to the oldest cursor of the polls registered since: an event that made one final
      // may be behind the events already looked at.
      cursor = std::min(cursor, rewind_to_);
      rewind_to_ = UINT64_MAX;
      auto now = std::chrono::steady_clock::now();
      for (const auto& [id, poll] : polls_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(poll->deadline - now);
        sleep = std::max(std::chrono::milliseconds(0), std::min(sleep, left));
      }
    }
    bool lost = false;
    auto events = events_.wait_after(
        &cursor, sleep, [](const TaskEvent& e) { return is_final(e.status); }, &lost);
    bool closed = events_.closed();
    {
      std::lock_guard<std::mutex> lock(polls_mu_);
      auto now = std::chrono::steady_clock::now();
      for (const TaskEvent& e : events) {
        auto [from, to] = polls_.equal_range(e.task_id);
        for (auto it = from; it != to; ++it) due.push_back(it->second);
        polls_.erase(from, to);
      }
      for (auto it = polls_.begin(); it != polls_.end();) {
        if (closed || it->second->deadline <= now) {
          due.push_back(it->second);
          it = polls_.erase(it);
        } else {
          // Fallen behind the EventHub's ring: whether it turned final is found by reading.
          if (lost) recheck.push_back(it->second);
          ++it;
        }
      }
      if (closed) polls_done_ = true;  // from now on get_async answers on its own thread
    }
    for (const LongPollPtr& poll : due) answer(*poll);
    for (const LongPollPtr& poll : recheck) {
      auto now_task = read_task(poll->task_id, true);
      if (now_task.ok() && !is_final(now_task->status)) continue;
      bool taken = false;
      {
        std::lock_guard<std::mutex> lock(polls_mu_);
        auto [from, to] = polls_.equal_range(poll->task_id);
        for (auto it = from; it != to && !taken; ++it) {
          if (it->second == poll) {
            polls_.erase(it);
            taken = true;
          }
        }
      }
      if (taken) answer(*poll);
    }
    if (closed) return;
  }
}

std::string TaskService::encode_cursor(int64_t seq) {
  return base64url_encode("t1:" + std::to_string(seq));
}

std::optional<int64_t> TaskService::decode_cursor(const std::string& cursor) {
  if (cursor.size() > 64) return std::nullopt;
  auto raw = base64url_decode(cursor);
  if (!raw || raw->rfind("t1:", 0) != 0) return std::nullopt;
  int64_t seq = 0;
  const char* b = raw->data() + 3;
  const char* e = raw->data() + raw->size();
  auto [p, ec] = std::from_chars(b, e, seq);
  if (ec != std::errc() || p != e || b == e || seq <= 0) return std::nullopt;
  return seq;
}

StatusOr<ListPage> TaskService::list(std::optional<TaskState> status,
                                     std::optional<std::string> type, int limit,
                                     const std::optional<std::string>& cursor) {
  ListQuery q;
  q.status = status;
  q.type = std::move(type);
  q.limit = limit;
  if (cursor) {
    auto seq = decode_cursor(*cursor);
    if (!seq) return Status::Invalid("cursor", "cursor is not one this server handed out");
    q.before_seq = *seq;
  }
  auto rows = store_.list(q);
  if (!rows.ok()) return rows.status();
  ListPage page;
  page.tasks = std::move(*rows);
  if (static_cast<int>(page.tasks.size()) == limit && !page.tasks.empty()) {
    page.next_cursor = encode_cursor(page.tasks.back().seq);
  }
  return page;
}

StatusOr<Task> TaskService::cancel(const std::string& task_id) {
  if (!is_valid_task_id(task_id)) return Status::NotFound("no task with id " + task_id);
  auto was = store_.cancel(task_id, clock_.now_ms());
  if (!was.ok()) return was.status();
  return read_task(task_id, true);
}

StatusOr<ResultFile> TaskService::result_file(const std::string& task_id) {
  auto found = read_task(task_id, false);
  if (!found.ok()) return found.status();
  const Task& t = *found;
  if (t.status != TaskState::kDone) {
    return Status::Conflict("not_done", "task " + task_id + " is " +
                                            std::string(to_string(t.status)) + ", not DONE");
  }
  return ResultFile{results_.path_of(task_id), t.result_type.value_or("application/octet-stream")};
}

StatusOr<Blob> TaskService::result(const std::string& task_id) {
  auto file = result_file(task_id);
  if (!file.ok()) return file.status();
  auto bytes = results_.read(task_id);
  if (!bytes.ok()) return missing_result(task_id);
  return Blob{std::move(*bytes), file->content_type};
}

Status TaskService::missing_result(const std::string& task_id) {
  // --retain-final may have deleted the task since it was read: then it is simply not found.
  auto again = result_file(task_id);
  if (!again.ok()) return again.status();
  return Status::Internal("the result file of task " + task_id + " is missing");
}

}  // namespace ts
