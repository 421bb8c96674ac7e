#pragma once
// FakeStore: an in-memory stand-in for the parts of a TaskStore that a pool's workers and the
// webhook dispatcher see (TaskTransitions, BacklogSource, WebhookOutbox), for their unit tests.
//
// It keeps the state machine of core/task_state.h as a store does: each state change checks
// the state it expects (mark_running only from QUEUED, finish_* and requeue only from RUNNING,
// cancel only from QUEUED or RUNNING) and a lost race changes nothing. Attempts are counted as
// the SQL does (mark_running +1, a requeue that gives the attempt back -1); a final state makes
// a task's webhook due at once when it has a webhook_url.
//
// It records every call made to it, in order, with its arguments and whether it changed
// anything (calls(), calls_of()), and every change as the commit listener would hear it
// (changes()). The listener, when set, hears each change on the thread that made it, in commit
// order, before the call returns: wire it to WorkerPool::on_change as the server's commit
// listener does. Thread-safe.

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "store/task_store.h"

namespace tst {

class FakeStore final : public ts::TaskTransitions,
                        public ts::BacklogSource,
                        public ts::WebhookOutbox {
 public:
  // One call to the store as it was made.
  struct Call {
    explicit Call(std::string op_name, int64_t task_seq = 0, int64_t now = 0)
        : op(std::move(op_name)), seq(task_seq), now_ms(now) {}
    std::string op;  // the method's name: "mark_running", "requeue", "webhooks_due", ...
    int64_t seq = 0;
    int64_t now_ms = 0;      // mark_running, cancel, fetch_ready, next_due, webhooks_due
    std::string backend;     // mark_running, note_started
    int attempt_number = 0;  // note_started
    ts::Attempt attempt;     // finish_done, finish_failed, requeue
    ts::ResultMeta result;   // finish_done (its inline_bytes is not kept: see below)
    std::optional<std::string> result_bytes;  // finish_done: the bytes kept in the store
    std::string error;                        // finish_failed, requeue
    std::optional<int64_t> next_at;           // requeue: next_attempt_at; record_webhook: next_at
    bool give_back_attempt = false;           // requeue
    ts::WebhookDelivery delivery;             // record_webhook
    ts::WebhookState webhook_state = ts::WebhookState::kNone;  // record_webhook
    bool changed = false;  // a state change happened (or, for reads, something came back)
  };

  explicit FakeStore(const ts::Clock& clock) : clock_(clock) {}

  // Set once, before the first change.
  void set_listener(std::function<void(const ts::TaskChange&)> listener) {
    listener_ = std::move(listener);
  }

  // Stores a task as given (seq assigned, in insertion order) and returns its seq; the listener
  // hears it as new. A final task with webhook_state kPending is due at its finished_at.
  int64_t add(ts::Task task);
  // QUEUED|RUNNING → CANCELED, as a client's cancel. False when the task was final.
  bool cancel(int64_t seq);
  // The task as it is now, with its attempts and deliveries.
  std::optional<ts::Task> task(int64_t seq) const;

  std::vector<Call> calls() const;
  std::vector<Call> calls_of(const std::string& op) const;
  std::vector<ts::TaskChange> changes() const;

  // TaskTransitions
  ts::StatusOr<std::optional<ts::Task>> mark_running(int64_t seq, const std::string& backend,
                                                     int64_t now_ms) override;
  void note_started(int64_t seq, int attempt, const std::string& backend, int64_t at_ms) override;
  ts::StatusOr<bool> release_claim(int64_t seq, int attempt, int64_t now_ms) override;
  ts::StatusOr<bool> finish_done(int64_t seq, const ts::Attempt& attempt,
                                 const ts::ResultMeta& result) override;
  ts::StatusOr<bool> finish_failed(int64_t seq, const ts::Attempt& attempt,
                                   const std::string& error) override;
  ts::StatusOr<bool> requeue(int64_t seq, const ts::Attempt& attempt,
                             std::optional<int64_t> next_attempt_at, bool give_back_attempt,
                             const std::string& error) override;

  // BacklogSource
  ts::StatusOr<std::vector<ts::ReadyRow>> fetch_ready(const std::string& type, size_t limit,
                                                      const std::unordered_set<int64_t>& exclude,
                                                      int64_t now_ms) override;
  ts::StatusOr<std::optional<int64_t>> next_due(const std::string& type, int64_t now_ms) override;
  ts::StatusOr<std::vector<ts::QueuedBlock>> queued_blocks(const std::string& type,
                                                           int block_bits) override;
  ts::StatusOr<int64_t> count_queued_between(const std::string& type, int priority,
                                             int64_t from_seq, int64_t before_seq) override;
  ts::StatusOr<std::optional<int64_t>> oldest_queued_created_at(const std::string& type) override;

  // WebhookOutbox
  ts::StatusOr<std::vector<int64_t>> webhooks_due(int64_t now_ms, int limit) override;
  ts::StatusOr<std::optional<int64_t>> next_webhook_due() override;
  ts::StatusOr<std::optional<ts::Task>> delivery_of(int64_t seq) override;
  ts::Status record_webhook(int64_t seq, const ts::WebhookDelivery& delivery,
                            ts::WebhookState new_state, std::optional<int64_t> next_at) override;

 private:
  struct Row {
    ts::Task task;
    std::optional<int64_t> webhook_next_at;
  };
  // Changes the state of `row` from its current one to `to` (which the state machine must
  // allow) and returns the change for the listener.
  ts::TaskChange move_locked(Row& row, ts::TaskState to, int64_t at_ms,
                             const std::string& error) const;
  // Leaves RUNNING for `to`: the guarded update shared by finish_done, finish_failed and
  // requeue. `apply` sets the columns that operation sets.
  ts::StatusOr<bool> leave_running(Call call, ts::TaskState to,
                                   const std::function<void(ts::Task&)>& apply);
  void record_locked(Call call) { calls_.push_back(std::move(call)); }
  // Tells the listener, in commit order, outside the data lock.
  void publish(std::unique_lock<std::mutex>& data_lock, std::optional<ts::TaskChange> change);

  const ts::Clock& clock_;
  std::function<void(const ts::TaskChange&)> listener_;

  // Held from a change until its listener has heard it, so listeners hear changes in the order
  // they were made (the writer thread's order in a real store). Taken before mu_.
  std::mutex commit_mu_;
  mutable std::mutex mu_;
  std::map<int64_t, Row> rows_;          // guarded by mu_: by seq
  int64_t next_seq_ = 1;                 // guarded by mu_
  std::vector<Call> calls_;              // guarded by mu_
  std::vector<ts::TaskChange> changes_;  // guarded by mu_
};

}  // namespace tst
