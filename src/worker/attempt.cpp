// WorkerPool: one attempt of a task (mark it RUNNING, call the backend, store the result) and
// what the attempt's outcome does to the task: DONE, FAILED, or back to QUEUED.

#include <spdlog/spdlog.h>

#include <thread>

#include "backend/images_answer.h"
#include "store/result_writer.h"
#include "worker/worker_pool.h"

namespace ts {
namespace {

CallOutcome outcome_for_balancer(CallResult r) {
  switch (r) {
    case CallResult::kOk:
      return CallOutcome::kSuccess;
    case CallResult::kClientError:
      return CallOutcome::kClientError;
    case CallResult::kBusy:
      return CallOutcome::kBusy;
    case CallResult::kAborted:
    case CallResult::kBadRequest:
      return CallOutcome::kAborted;
    case CallResult::kServerError:
    case CallResult::kConnectError:
    case CallResult::kTimeout:
      return CallOutcome::kFailure;
  }
  return CallOutcome::kFailure;
}

}  // namespace

void WorkerPool::run_one(const QueueItem& item, BackendConnections& connections) {
  auto call = std::make_shared<BackendCall>();
  // Registered before the task turns RUNNING, so a cancel that lands in between still finds
  // the call and aborts it before it is sent.
  {
    MutexLock lock(mu_);
    running_[item.seq] = Running{call, INT64_MAX};
  }
  auto unregister = [&] {
    MutexLock lock(mu_);
    running_.erase(item.seq);
    cv_.notify_all();
  };

  // The claim: RUNNING with its attempt counted, its call not started.
  auto marked = transitions_.mark_running(item.seq, "", clock_.now_ms());
  if (!marked.ok() || !*marked) {
    unregister();
    unclaim();
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
  std::optional<Lease> got = wait_for_slot(item.avoid_backend, *call);
  unclaim();
  if (!got) {
    unregister();
    if (call->abort_reason() == AbortReason::kNone && taking_.load()) {
      // No slot for it now: back to the queue, its attempt given back.
      auto r = transitions_.release_claim(item.seq, task.attempt, clock_.now_ms());
      if (r.ok() && *r) {
        queue_.give_back(item);
        return;
      }
    }
    // Canceled (the store says so), or stopping: shutdown's release_running gives it back.
    queue_.release(item.seq);
    return;
  }
  const Lease lease = *got;
  int64_t started = clock_.now_ms();
  transitions_.note_started(item.seq, task.attempt, lease.url, started);
  int timeout_s =
      std::clamp(task.timeout_s.value_or(options_.default_timeout_s), 1, options_.max_timeout_s);
  {
    MutexLock lock(mu_);
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
  // The answer streams into the writer (memory up to the inline limit, a file past it) and,
  // for an images pool, through the scanner that judges it: never held whole.
  ResultWriter writer(results_, options_.inline_result_max, options_.max_answer_bytes);
  ImagesAnswerScanner scan;
  std::string head;  // the answer's first bytes, for an error message
  Status write_error;
  req.sink = [&](std::string_view bytes) {
    if (head.size() < 120) head.append(bytes.substr(0, 120 - head.size()));
    if (options_.expect_images) scan.feed(bytes);
    write_error = writer.write(bytes);
    return write_error.ok();
  };
  req.sink_error = [&] { return "cannot store the result: " + write_error.message(); };
  BackendResponse resp = call->run(req, &connections);
  unregister();
  if (resp.result == CallResult::kOk && options_.expect_images && !scan.finish()) {
    // A 2xx that is not an images answer is the backend misbehaving: it counts against it and
    // the task tries again, rather than ending DONE with no image.
    resp.result = CallResult::kServerError;
    resp.error = "the backend answered HTTP " + std::to_string(resp.http_status) +
                 " without an images answer (data[0].b64_json or url): " + head;
    writer.discard();
  }
  // The slot is free the moment the answer is read: storing the result is not the GPU's wait.
  int64_t ended = clock_.now_ms();
  int64_t duration = ended - started;
  // A refused write (a full disk) says nothing about the backend.
  bool storage_failed = resp.result == CallResult::kBadRequest && !write_error.ok();
  balancer_.release(lease,
                    storage_failed ? CallOutcome::kAborted : outcome_for_balancer(resp.result),
                    duration, resp.error, resp.retry_after_ms);

  Attempt attempt{task.attempt, lease.url, "", resp.error, started, duration};
  auto finish_failed = [&](const std::string& error) {
    attempt.outcome = "failed";
    auto r = transitions_.finish_failed(item.seq, attempt, error);
    if (!r.ok())
      spdlog::error("task {}: cannot record failure: {}", task.task_id, r.status().message());
    queue_.release(item.seq);
  };
  auto requeue = [&](std::optional<int64_t> next_at, bool give_back, const std::string& outcome) {
    attempt.outcome = outcome;
    auto r = transitions_.requeue(item.seq, attempt, next_at, give_back, resp.error);
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
      // Small: its bytes go into the store with the DONE. Large: its fsynced file is moved
      // into place first, so a DONE task's result is durable once its state is.
      auto finished = writer.finish();
      Status st = finished.ok() ? Status::Ok() : finished.status();
      bool in_file = st.ok() && finished->in_file;
      if (in_file) st = results_.adopt(std::move(finished->file), task.task_id);
      if (!st.ok()) {
        spdlog::error("task {}: cannot store result: {}", task.task_id, st.message());
        resp.error = "cannot store the result: " + st.message();
        requeue(ended + backoff_ms(task.attempt - task.attempt_base), false, "retry");
        break;
      }
      attempt.outcome = "done";
      attempt.error.clear();
      ResultMeta meta{finished->size,
                      resp.content_type.empty() ? "application/octet-stream" : resp.content_type,
                      in_file ? nullptr : &finished->bytes};
      auto r = transitions_.finish_done(item.seq, attempt, meta);
      if (!r.ok()) {
        spdlog::error("task {}: cannot record result: {}", task.task_id, r.status().message());
      } else if (!*r && in_file) {
        results_.remove(task.task_id);  // canceled while running: the result is not kept
      }
      queue_.release(item.seq);
      break;
    }
    case CallResult::kBadRequest:
      if (storage_failed) {  // our disk, not the task: try again later
        requeue(ended + backoff_ms(task.attempt - task.attempt_base), false, "retry");
        break;
      }
      finish_failed(resp.error);
      break;
    case CallResult::kClientError:
      finish_failed(resp.error);
      break;
    case CallResult::kServerError:
    case CallResult::kConnectError:
    case CallResult::kTimeout:
      // After a retry the budget counts from attempt_base: the attempts before it are history.
      if (task.attempt - task.attempt_base >= task.max_attempts) {
        finish_failed("all " + std::to_string(task.max_attempts) +
                      " attempts failed; the last: " + resp.error);
      } else {
        requeue(ended + backoff_ms(task.attempt - task.attempt_base), false, "retry");
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
  report(task.task_id, lease.url, attempt.outcome.empty() ? "canceled" : attempt.outcome, duration);
}

}  // namespace ts
