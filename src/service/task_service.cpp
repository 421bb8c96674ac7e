// TaskService: construction, recovery, the commit listener's bookkeeping and the submits.

#include "service/task_service.h"

#include <spdlog/spdlog.h>

#include "core/ids.h"

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

TaskService::TaskService(TaskLedger& store, PoolDirectory& pools, EventHub& events,
                         const BlobStore& results, const BlobStore& inputs, const Clock& clock)
    : store_(store),
      pools_(pools),
      events_(events),
      results_(results),
      inputs_(inputs),
      clock_(clock),
      scheduler_(store, clock),
      polls_(events, [this](const std::string& task_id) {
        auto t = read_task(task_id, false);
        return !t.ok() || is_final(t->status);
      }) {}

TaskService::~TaskService() = default;

Status TaskService::recover() {
  auto report = store_.recover_running(clock_.now_ms());
  if (!report.ok()) return report.status();
  recovered_requeued_ = report->requeued;
  recovered_failed_ = report->failed;
  if (report->requeued + report->failed > 0) {
    spdlog::warn(
        "recovered {} tasks left RUNNING by a crash: {} queued again, {} failed "
        "(attempts spent)",
        report->requeued + report->failed, report->requeued, report->failed);
  }
  auto counts = store_.count_by_status();
  if (!counts.ok()) return counts.status();
  for (auto& t : totals_) t.store(0);
  for (const auto& [state, n] : *counts) totals_[static_cast<size_t>(state)].store(n);
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
    if (c.to_scheduled && c.next_attempt_at) scheduler_.note(*c.next_attempt_at);
    if (c.to != TaskState::kQueued || c.from) {
      spdlog::info("task {} {} -> {}{}{}", c.task_id,
                   c.from ? std::string(to_string(*c.from)) : std::string("new"), to_string(c.to),
                   c.backend.empty() ? "" : " on " + c.backend,
                   c.error.empty() ? "" : ": " + c.error);
    } else {
      spdlog::debug("task {} new -> QUEUED ({})", c.task_id, c.type);
    }
  }
}

void TaskService::forget_purged(const std::vector<PurgedTask>& purged) {
  for (const PurgedTask& p : purged) {
    totals_[static_cast<size_t>(p.status)].fetch_sub(1, std::memory_order_relaxed);
  }
}

std::map<TaskState, int64_t> TaskService::totals() const {
  std::map<TaskState, int64_t> out;
  for (TaskState s : kTaskStates) out[s] = totals_[static_cast<size_t>(s)].load();
  return out;
}

void TaskService::begin_shutdown() {
  shutting_down_.store(true);
  events_.close();
}

StatusOr<Task> TaskService::prepare(NewTask& r, int64_t now) {
  if (shutting_down()) return shutting_down_status();
  if (!pools_.has_pool(r.type)) return unknown_type(r.type, pools_.pool_names());
  if (r.timeout_s && *r.timeout_s > pools_.max_timeout_s(r.type)) {
    return Status::Invalid("timeout_s", "timeout_s may be at most " +
                                            std::to_string(pools_.max_timeout_s(r.type)) +
                                            " for the " + r.type + " pool");
  }
  if (r.delay_s) r.run_at_ms = now + *r.delay_s * 1000;
  if (r.run_at_ms && *r.run_at_ms > now + kMaxScheduleAheadS * 1000) {
    return Status::Invalid(r.delay_s ? "delay_s" : "run_at",
                           "a task may be scheduled at most " +
                               std::to_string(kMaxScheduleAheadS / 86400) + " days ahead");
  }
  Task t;
  t.task_id = new_task_id(now);
  // A run_at in the past (or now) runs at once; it is kept to show what was asked.
  t.run_at = r.run_at_ms;
  t.scheduled = r.run_at_ms && *r.run_at_ms > now ? 1 : 0;
  t.labels = std::move(r.labels);
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

StatusOr<SubmitOutcome> TaskService::first_of(const std::string& task_id) {
  auto existing = store_.get(task_id, false);
  if (!existing.ok()) return existing.status();
  if (!*existing) return Status::Internal("idempotent repeat names a missing task");
  return SubmitOutcome{std::move(**existing), false};
}

StatusOr<SubmitOutcome> TaskService::submit(NewTask request, std::optional<Upload> upload) {
  auto prepared = prepare(request, clock_.now_ms());
  if (!prepared.ok()) return prepared.status();
  Task task = std::move(*prepared);
  if (!pools_.try_reserve(task.type)) {
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
    Status st = inputs_.adopt(std::move(upload->file), task.task_id);
    if (!st.ok()) {
      pools_.unreserve(task.type);
      return st;
    }
  }
  auto inserted = store_.insert(task);
  pools_.unreserve(task.type);
  if (upload && (!inserted.ok() || !inserted->created)) inputs_.remove(task.task_id);
  if (!inserted.ok()) return inserted.status();
  if (inserted->created) return SubmitOutcome{std::move(task), true};
  return first_of(inserted->task_id);
}

Status TaskService::submit_nowait(NewTask request, const std::function<void(const Task&)>& accepted,
                                  SubmitCommitted committed) {
  auto prepared = prepare(request, clock_.now_ms());
  if (!prepared.ok()) return prepared.status();
  // A repeat of a committed key is answered from a reader, without a trip through the writer
  // (and even when the backlog is full: it adds nothing). One whose first is not committed yet
  // is found by the writer's insert instead.
  if (prepared->idempotency_key) {
    auto existing = store_.get_by_idempotency_key(*prepared->idempotency_key);
    if (!existing.ok()) return existing.status();
    if (*existing) {
      committed(Status::Ok(), &**existing);
      return Status::Ok();
    }
  }
  if (!pools_.try_reserve(prepared->type)) return backlog_full(prepared->type);
  accepted(*prepared);
  std::string type = prepared->type;
  store_.insert_async(std::move(*prepared),
                      [this, type = std::move(type),
                       committed = std::move(committed)](const StatusOr<InsertOutcome>& out) {
                        pools_.unreserve(type);
                        if (!out.ok()) return committed(out.status(), nullptr);
                        if (out->created) return committed(Status::Ok(), nullptr);
                        // A repeat that raced its first (rare): one read, on the notifier thread.
                        auto first = first_of(out->task_id);
                        if (!first.ok()) return committed(first.status(), nullptr);
                        committed(Status::Ok(), &first->task);
                      });
  return Status::Ok();
}

StatusOr<std::vector<SubmitOutcome>> TaskService::submit_batch(std::vector<NewTask> requests) {
  int64_t now = clock_.now_ms();
  std::vector<Task> tasks;
  tasks.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    auto prepared = prepare(requests[i], now);
    if (!prepared.ok()) {
      const Status& s = prepared.status();
      if (s.code() == Code::kUnavailable) return s;
      return Status(s.code(), s.slug(), "tasks[" + std::to_string(i) + "]: " + s.message(),
                    "tasks[" + std::to_string(i) + "]." + s.field());
    }
    tasks.push_back(std::move(*prepared));
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
    auto first = first_of((*inserted)[i].task_id);
    if (!first.ok()) return first.status();
    out.push_back(std::move(*first));
  }
  return out;
}

}  // namespace ts
