#pragma once
// TaskService is the domain: submit, read, list, cancel, wait, results. No HTTP in it; the api
// module maps its Status values onto HTTP codes.
//
// Thread-safe. It sees the store through TaskLedger and the pools through PoolDirectory
// (implemented in src/app/ over the worker pools), keeping the dependency rule:
// service → store, queue. Submits live in task_service.cpp, reads in task_reads.cpp.

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "core/task.h"
#include "service/events.h"
#include "service/long_polls.h"
#include "service/pool_directory.h"
#include "service/scheduler.h"
#include "service/task_request.h"
#include "store/blob_store.h"
#include "store/task_store.h"

namespace ts {

// A task with what only a live server knows about it.
struct TaskView {
  Task task;
  std::optional<int64_t> queue_position;
  std::optional<int64_t> estimated_start_ms;
};

struct SubmitOutcome {
  Task task;
  bool created = true;  // false: an earlier task with the same idempotency key
};

struct ListPage {
  std::vector<Task> tasks;
  std::optional<std::string> next_cursor;
};

// A DONE task's result as stored: small ones in the store (bytes), large ones in a file, to be
// streamed from disk rather than read into memory.
struct StoredResult {
  std::string content_type;
  int64_t size = 0;
  std::optional<std::string> bytes;  // kept in the store
  std::string path;                  // else its file
};

// A file uploaded with a task (multipart), already fsynced inside the inputs folder; removed
// with the Upload unless a submit adopts it.
struct Upload {
  TempFile file;
  std::string filename;
  std::string content_type;
  int64_t size = 0;
};

class TaskService {
 public:
  TaskService(TaskLedger& store, PoolDirectory& pools, EventHub& events, const BlobStore& results,
              const BlobStore& inputs, const Clock& clock);
  // Answers the long-polls still waiting with the task as it is.
  ~TaskService();

  // Recovers tasks left RUNNING, then counts the store's tasks by state (for the totals).
  Status recover();
  // The store's commit listener.
  void on_commit(const std::vector<TaskChange>& changes);
  // Retention deleted these tasks: they leave the totals.
  void forget_purged(const std::vector<PurgedTask>& purged);

  // Blocks until the insert is committed. For submits with an upload.
  StatusOr<SubmitOutcome> submit(NewTask request, std::optional<Upload> upload = std::nullopt);
  // How a submit_nowait ended: `st` is its error, or else `first` is the earlier task its
  // idempotency key named (a repeat, which created nothing), or nullptr for a new task.
  using SubmitCommitted = std::function<void(const Status& st, const Task* first)>;
  // submit without waiting for the commit: the same checks and admission, then
  // `accepted(task)` on this thread with the task as it will be stored, then its insert;
  // `committed` is called once with the outcome, on the store's notifier thread (so it must not
  // block). A repeat of an idempotency key already committed is known at once: `committed` is
  // then called on this thread, and `accepted` not at all. A refusal before the insert is
  // returned, and then neither is called.
  Status submit_nowait(NewTask request, const std::function<void(const Task&)>& accepted,
                       SubmitCommitted committed);
  StatusOr<std::vector<SubmitOutcome>> submit_batch(std::vector<NewTask> requests);

  // The task as it is now, with its attempts (and queue position while QUEUED).
  StatusOr<TaskView> view(const std::string& task_id);
  // The view once the task is final or `wait` is over, without holding the calling thread:
  // `done` is called once, on this thread when the answer is known at once (a final task, no
  // such task, wait 0, shutting down), else on the long-poll thread. `done` must not block.
  using ViewDone = std::function<void(StatusOr<TaskView>)>;
  void get_async(const std::string& task_id, std::chrono::milliseconds wait, ViewDone done);
  StatusOr<ListPage> list(std::optional<TaskState> status, std::optional<std::string> type,
                          int limit, const std::optional<std::string>& cursor,
                          std::vector<std::pair<std::string, std::string>> labels = {});
  StatusOr<Task> cancel(const std::string& task_id);
  // FAILED|CANCELED → QUEUED with a fresh attempt budget; the task as it now is. kConflict in
  // another state, kBacklogFull when its pool's backlog is full.
  StatusOr<Task> retry(const std::string& task_id);
  // retry for the tasks the filter matches (up to its limit), in one transaction; tasks whose
  // pool's backlog is full are skipped and counted.
  StatusOr<RetryOutcome> retry_matching(const RetryFilter& filter);

  // The scheduler lets scheduled tasks into the backlog at their run_at: started once the pools
  // run, stopped before they stop.
  void start_scheduler() { scheduler_.start(); }
  void stop_scheduler() { scheduler_.stop(); }
  // The stored result of a DONE task. kConflict while it is not DONE.
  StatusOr<StoredResult> result(const std::string& task_id);
  // Why a DONE task's result file could not be opened: kNotFound when the task was deleted
  // meanwhile (--retain-final), else kInternal.
  Status missing_result(const std::string& task_id);

  // After this, submits get 503 shutting_down and waits return at once.
  void begin_shutdown();
  bool shutting_down() const { return shutting_down_.load(); }

  // Totals by state, kept from the commits (no table scan).
  std::map<TaskState, int64_t> totals() const;
  int64_t recovered_requeued() const { return recovered_requeued_; }
  int64_t recovered_failed() const { return recovered_failed_; }
  EventHub& events() { return events_; }
  const Clock& clock() const { return clock_; }

  static std::string encode_cursor(int64_t seq);
  static std::optional<int64_t> decode_cursor(const std::string& cursor);

 private:
  class RetryReservations;  // backlog room held for a retry's transaction (task_reads.cpp)
  // The checks every submit makes before admission: not shutting down, a known type, bounds the
  // pool sets. The task as it will be stored.
  StatusOr<Task> prepare(NewTask& request, int64_t now);
  // The view of a task as read now (queue position and start estimate while QUEUED).
  TaskView view_of(Task task);
  // The task by id; kNotFound for a malformed or unknown id.
  StatusOr<Task> read_task(const std::string& task_id, bool details);
  // The first task of an idempotent repeat.
  StatusOr<SubmitOutcome> first_of(const std::string& task_id);

  TaskLedger& store_;
  PoolDirectory& pools_;
  EventHub& events_;
  const BlobStore& results_;
  const BlobStore& inputs_;
  const Clock& clock_;
  std::atomic<bool> shutting_down_{false};
  int64_t recovered_requeued_ = 0;
  int64_t recovered_failed_ = 0;

  // Totals by state, indexed by TaskState: updated for every committed change on the writer
  // thread, so no string keys.
  std::array<std::atomic<int64_t>, kTaskStates.size()> totals_{};

  Scheduler scheduler_;
  LongPolls polls_;  // last: its destructor answers polls through this service
};

}  // namespace ts
