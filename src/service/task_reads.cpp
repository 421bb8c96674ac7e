// TaskService: reads of tasks (one, a page, held until final), cancels and results.

#include <charconv>

#include "core/base64.h"
#include "core/ids.h"
#include "service/task_service.h"

namespace ts {

StatusOr<Task> TaskService::read_task(const std::string& task_id, bool details) {
  if (!is_valid_task_id(task_id)) return Status::NotFound("no task with id " + task_id);
  auto found = store_.get(task_id, details);
  if (!found.ok()) return found.status();
  if (!*found) return Status::NotFound("no task with id " + task_id);
  return std::move(**found);
}

StatusOr<TaskView> TaskService::view(const std::string& task_id) {
  auto found = read_task(task_id, true);
  if (!found.ok()) return found.status();
  return view_of(std::move(*found));
}

TaskView TaskService::view_of(Task task) {
  TaskView view;
  view.task = std::move(task);
  const Task& t = view.task;
  if (t.status != TaskState::kQueued) return view;
  // A scheduled task is outside the backlog until its run_at: no position, it starts then.
  if (t.scheduled) {
    view.estimated_start_ms = t.run_at;
    return view;
  }
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
  // after this, which the long-poll thread looks at.
  uint64_t cursor = events_.last_id();
  auto found = read_task(task_id, true);
  if (!found.ok()) return done(found.status());
  if (wait.count() <= 0 || is_final(found->status) || shutting_down()) {
    return done(view_of(std::move(*found)));
  }
  auto answer = [this, task_id, done = std::move(done)] { done(view(task_id)); };
  if (!polls_.add(task_id, cursor, std::chrono::steady_clock::now() + wait, answer)) answer();
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
                                     const std::optional<std::string>& cursor,
                                     std::vector<std::pair<std::string, std::string>> labels) {
  ListQuery q;
  q.status = status;
  q.type = std::move(type);
  q.labels = std::move(labels);
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

// Backlog room for the tasks a retry puts back: reserved per task as the store admits it, and
// let go once the transaction is over (the commit listener counts what went in).
class TaskService::RetryReservations {
 public:
  explicit RetryReservations(PoolDirectory& pools) : pools_(pools) {}
  ~RetryReservations() {
    for (const std::string& type : reserved_) pools_.unreserve(type);
  }
  RetryAdmit admit() {
    return [this](const std::string& type) {
      // A type no pool serves any more has no backlog to respect; it waits for a pool.
      if (!pools_.has_pool(type)) return true;
      if (!pools_.try_reserve(type)) return false;
      reserved_.push_back(type);
      return true;
    };
  }

 private:
  PoolDirectory& pools_;
  std::vector<std::string> reserved_;
};

StatusOr<Task> TaskService::retry(const std::string& task_id) {
  if (!is_valid_task_id(task_id)) return Status::NotFound("no task with id " + task_id);
  if (shutting_down()) {
    return Status::Unavailable("shutting_down", "the server is shutting down");
  }
  {
    RetryReservations room(pools_);
    auto was = store_.retry(task_id, clock_.now_ms(), room.admit());
    if (!was.ok()) return was.status();
  }
  return read_task(task_id, true);
}

StatusOr<RetryOutcome> TaskService::retry_matching(const RetryFilter& filter) {
  if (shutting_down()) {
    return Status::Unavailable("shutting_down", "the server is shutting down");
  }
  RetryReservations room(pools_);
  return store_.retry_matching(filter, clock_.now_ms(), room.admit());
}

StatusOr<StoredResult> TaskService::result(const std::string& task_id) {
  auto found = read_task(task_id, false);
  if (!found.ok()) return found.status();
  const Task& t = *found;
  if (t.status != TaskState::kDone) {
    return Status::Conflict(
        "not_done", "task " + task_id + " is " + std::string(to_string(t.status)) + ", not DONE");
  }
  StoredResult out;
  out.content_type = t.result_type.value_or("application/octet-stream");
  out.size = t.result_size.value_or(0);
  auto bytes = store_.inline_result(t.seq);
  if (!bytes.ok()) return bytes.status();
  out.bytes = std::move(*bytes);
  if (!out.bytes) out.path = results_.path_of(task_id);
  return out;
}

Status TaskService::missing_result(const std::string& task_id) {
  // --retain-final may have deleted the task since it was read: then it is simply not found.
  auto again = read_task(task_id, false);
  if (!again.ok()) return again.status();
  return Status::Internal("the result file of task " + task_id + " is missing");
}

}  // namespace ts
