#pragma once
// TaskService is the domain: submit, get, list, cancel, wait, results. No HTTP in it; the api
// module maps its Status values onto HTTP codes.
//
// Thread-safe. It sees the pools only through PoolDirectory (implemented in main.cpp over the
// worker pools), keeping the dependency rule: service → store, queue.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/status.h"
#include "core/task.h"
#include "service/events.h"
#include "service/task_request.h"
#include "store/blob_store.h"
#include "store/task_store.h"

namespace ts {

// What the service needs of the pools.
class PoolDirectory {
 public:
  virtual ~PoolDirectory() = default;
  virtual bool has_pool(const std::string& type) const = 0;
  virtual std::vector<std::string> pool_names() const = 0;
  // Room for one more queued task of `type`? A true must be paired with unreserve().
  virtual bool try_reserve(const std::string& type) = 0;
  virtual void unreserve(const std::string& type) = 0;
  virtual int default_max_attempts(const std::string& type) const = 0;
  virtual int max_timeout_s(const std::string& type) const = 0;
  // A committed change, in commit order: feeds the pool's queue and counters; a cancel takes
  // the task out of the queue or aborts its backend call.
  virtual void on_change(const TaskChange& change) = 0;
  // QUEUED tasks of `type` that run before a queued one of this priority and seq.
  virtual StatusOr<int64_t> queue_position(const std::string& type, int priority,
                                           int64_t seq) const = 0;
  virtual std::optional<int64_t> estimate_start_ms(const std::string& type,
                                                   int64_t position) const = 0;
};

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

struct Blob {
  std::string bytes;
  std::string content_type;
};

// A stored result, to be streamed from disk rather than read into memory.
struct ResultFile {
  std::string path;
  std::string content_type;
};

// A file uploaded with a task (multipart), already fsynced at temp_path inside the inputs
// folder.
struct Upload {
  std::string temp_path;
  std::string filename;
  std::string content_type;
  int64_t size = 0;
};

class TaskService {
 public:
  TaskService(TaskStore& store, PoolDirectory& pools, EventHub& events, const BlobStore& results,
              const BlobStore& inputs, const Clock& clock);
  // Answers the long-polls still waiting with the task as it is, and stops their thread.
  ~TaskService();

  // Counts the store's tasks by state (for the totals) and recovers tasks left RUNNING.
  Status recover();
  // The store's commit listener.
  void on_commit(const std::vector<TaskChange>& changes);

  StatusOr<SubmitOutcome> submit(NewTask request, std::optional<Upload> upload = std::nullopt);
  // How a submit_nowait ended: `st` is its error, or else `first` is the earlier task its
  // idempotency key named (a repeat, which created nothing), or nullptr for a new task.
  using SubmitCommitted = std::function<void(const Status& st, const Task* first)>;
  // submit for a request without upload, without waiting for the commit: the same checks and
  // admission, then `accepted(task)` on this thread with the task as it will be stored, then its
  // insert; `committed` is called once with the outcome, on the store's notifier thread (so it
  // must not block). A repeat of an idempotency key already committed is known at once:
  // `committed` is then called on this thread, and `accepted` not at all. A refusal before the
  // insert is returned, and then neither is called.
  Status submit_nowait(NewTask request, const std::function<void(const Task&)>& accepted,
                       SubmitCommitted committed);
  StatusOr<std::vector<SubmitOutcome>> submit_batch(std::vector<NewTask> requests);
  // wait > 0 holds the call until the task is final or the wait is over.
  StatusOr<TaskView> get(const std::string& task_id, std::chrono::milliseconds wait);
  // get without holding the calling thread through the wait: `done` is called once with the
  // answer, on this thread when it is known at once (a final task, no such task, wait 0,
  // shutting down), else on the service's long-poll thread when the task turns final, the wait
  // is over or the service shuts down. `done` must not block: other long-polls wait behind it.
  using ViewDone = std::function<void(StatusOr<TaskView>)>;
  void get_async(const std::string& task_id, std::chrono::milliseconds wait, ViewDone done);
  StatusOr<ListPage> list(std::optional<TaskState> status, std::optional<std::string> type,
                          int limit, const std::optional<std::string>& cursor);
  StatusOr<Task> cancel(const std::string& task_id);
  // The stored result of a DONE task. kConflict while it is not DONE.
  StatusOr<Blob> result(const std::string& task_id);
  // Where that result is, to stream it; the same kNotFound/kConflict as result().
  StatusOr<ResultFile> result_file(const std::string& task_id);
  // Why a DONE task's result file could not be opened: kNotFound when the task was deleted
  // meanwhile (--retain-final), else kInternal.
  Status missing_result(const std::string& task_id);

  // Deletes final tasks (with their results and uploads) once they are older than `keep`, in
  // rounds on a thread of its own, from now until begin_shutdown(); `on_purged(n)` after each
  // transaction that deleted n > 0. Tasks whose webhook is still to be delivered are kept until
  // it is.
  void start_retention(std::chrono::seconds keep, std::function<void(int64_t)> on_purged);

  // Removes the files in results/ and inputs/ of tasks the store does not have, written before
  // `started` (by an earlier process): a crash between a purge's commit and its unlinks, or
  // between an upload's arrival and its insert, leaves them. Walks every file: for a thread of
  // its own once serving. Stops early once *stop is set. Returns how many it removed.
  StatusOr<size_t> sweep_orphan_files(const std::atomic<bool>& stop,
                                      std::filesystem::file_time_type started);

  // After this, submits get 503 shutting_down and waits return at once; the retention thread
  // has ended when it returns.
  void begin_shutdown();
  bool shutting_down() const { return shutting_down_.load(); }

  // Totals by state, kept from the commits (no table scan).
  std::map<std::string, int64_t> totals() const;
  int64_t recovered_requeued() const { return recovered_requeued_; }
  int64_t recovered_failed() const { return recovered_failed_; }
  EventHub& events() { return events_; }
  const Clock& clock() const { return clock_; }

  static std::string encode_cursor(int64_t seq);
  static std::optional<int64_t> decode_cursor(const std::string& cursor);

 private:
  // A get_async waiting for its task to turn final.
  struct LongPoll {
    std::string task_id;
    std::chrono::steady_clock::time_point deadline;
    ViewDone done;
  };
  using LongPollPtr = std::shared_ptr<LongPoll>;

  StatusOr<Task> build_task(NewTask& request, int64_t now);
  // The view of a task as read now (queue position and start estimate while QUEUED).
  TaskView view_of(Task task);
  // The task by id; kNotFound for a malformed or unknown id.
  StatusOr<Task> read_task(const std::string& task_id, bool with_payload);
  // Reads the task and answers the long-poll with it.
  void answer(const LongPoll& poll);
  // The long-poll thread: answers the waiting ones as their tasks turn final (from the
  // EventHub), as their waits end, and all of them at shutdown.
  void long_poll_loop();
  // Ends the retention thread, if any (the caller may not be that thread).
  void stop_retention();
  // One round: every final task that finished before before_ms, in batches of a transaction
  // each, `on_batch(n)` after each. Returns how many.
  StatusOr<int64_t> purge_final(int64_t before_ms, const std::function<void(int64_t)>& on_batch);

  TaskStore& store_;
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
  std::array<std::atomic<int64_t>, 5> totals_{};

  std::mutex polls_mu_;
  std::condition_variable polls_cv_;            // a long-poll came while none waited, or stop
  std::multimap<std::string, LongPollPtr> polls_;  // by task id; guarded by polls_mu_
  // The oldest EventHub cursor of the polls registered since the thread last looked; guarded
  // by polls_mu_.
  uint64_t rewind_to_ = UINT64_MAX;
  bool polls_done_ = false;      // the thread has ended (shutdown); guarded by polls_mu_
  bool polls_stop_ = false;      // ~TaskService; guarded by polls_mu_
  std::thread polls_thread_;     // started by the first long-poll; guarded by polls_mu_

  std::mutex retention_mu_;
  std::condition_variable retention_cv_;  // stop
  std::atomic<bool> retention_stop_{false};  // set under retention_mu_
  std::thread retention_thread_;
};

}  // namespace ts
