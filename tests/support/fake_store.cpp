#include "support/fake_store.h"

#include <doctest/doctest.h>

#include <algorithm>

namespace tst {

using ts::Task;
using ts::TaskChange;
using ts::TaskState;

TaskChange FakeStore::move_locked(Row& row, TaskState to, int64_t at_ms,
                                  const std::string& error) const {
  Task& t = row.task;
  // Each operation has checked the state it expects (a lost race changes nothing and never gets
  // here): this catches a fake whose checks disagree with core/task_state.h.
  std::string what = "FakeStore: " + std::string(ts::to_string(t.status)) + " -> " +
                     std::string(ts::to_string(to));
  CHECK_MESSAGE(ts::can_transition(t.status, to), what);
  TaskChange c;
  c.seq = t.seq;
  c.task_id = t.task_id;
  c.type = t.type;
  c.priority = t.priority;
  c.from = t.status;
  c.to = to;
  c.at_ms = at_ms;
  c.error = error;
  t.status = to;
  if (ts::is_final(to)) {
    t.finished_at = at_ms;
    t.next_attempt_at.reset();
    if (t.webhook_url) {
      t.webhook_state = ts::WebhookState::kPending;
      row.webhook_next_at = at_ms;
      c.webhook_pending = true;
    }
  }
  c.attempt = t.attempt;
  c.backend = t.backend.value_or("");
  c.next_attempt_at = t.next_attempt_at;
  return c;
}

void FakeStore::publish(std::unique_lock<std::mutex>& data_lock, std::optional<TaskChange> change) {
  if (change) changes_.push_back(*change);
  data_lock.unlock();
  if (change && listener_) listener_(*change);
}

int64_t FakeStore::add(Task task) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  task.seq = next_seq_++;
  if (task.created_at == 0) task.created_at = clock_.now_ms();
  Row row{task, std::nullopt};
  if (ts::is_final(task.status) && task.webhook_state == ts::WebhookState::kPending) {
    row.webhook_next_at = task.finished_at.value_or(0);
  }
  rows_[task.seq] = row;
  Call call("add", task.seq);
  call.changed = true;
  record_locked(call);
  TaskChange c;
  c.seq = task.seq;
  c.task_id = task.task_id;
  c.type = task.type;
  c.priority = task.priority;
  c.to = task.status;
  c.attempt = task.attempt;
  c.at_ms = task.created_at;
  publish(lock, c);
  return task.seq;
}

bool FakeStore::cancel(int64_t seq) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  Call call("cancel", seq);
  call.now_ms = clock_.now_ms();
  auto it = rows_.find(seq);
  std::optional<TaskChange> change;
  if (it != rows_.end() && ts::can_transition(it->second.task.status, TaskState::kCanceled)) {
    change = move_locked(it->second, TaskState::kCanceled, call.now_ms, "canceled by request");
    it->second.task.error = "canceled by request";
  }
  call.changed = change.has_value();
  record_locked(call);
  publish(lock, change);
  return call.changed;
}

std::optional<Task> FakeStore::task(int64_t seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = rows_.find(seq);
  if (it == rows_.end()) return std::nullopt;
  return it->second.task;
}

std::vector<FakeStore::Call> FakeStore::calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}

std::vector<FakeStore::Call> FakeStore::calls_of(const std::string& op) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Call> out;
  for (const Call& c : calls_) {
    if (c.op == op) out.push_back(c);
  }
  return out;
}

std::vector<TaskChange> FakeStore::changes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return changes_;
}

ts::StatusOr<std::optional<Task>> FakeStore::mark_running(int64_t seq, const std::string& backend,
                                                          int64_t now_ms) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  Call call("mark_running", seq, now_ms);
  call.backend = backend;
  auto it = rows_.find(seq);
  std::optional<TaskChange> change;
  std::optional<Task> out;
  if (it != rows_.end() && it->second.task.status == TaskState::kQueued) {
    Task& t = it->second.task;
    t.attempt += 1;
    // A claim ahead of its call ("" backend) starts later (note_started), as in the stores.
    if (backend.empty()) {
      t.started_at.reset();
    } else {
      t.started_at = now_ms;
      t.backend = backend;
    }
    t.next_attempt_at.reset();
    change = move_locked(it->second, TaskState::kRunning, now_ms, "");
    out = t;
  }
  call.changed = change.has_value();
  record_locked(call);
  publish(lock, change);
  return out;
}

void FakeStore::note_started(int64_t seq, int attempt, const std::string& backend, int64_t at_ms) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  Call call("note_started", seq, at_ms);
  call.backend = backend;
  call.attempt_number = attempt;
  auto it = rows_.find(seq);
  if (it != rows_.end() && it->second.task.status == TaskState::kRunning &&
      it->second.task.attempt == attempt) {
    it->second.task.started_at = at_ms;
    it->second.task.backend = backend;
    call.changed = true;
  }
  record_locked(call);
}

ts::StatusOr<bool> FakeStore::release_claim(int64_t seq, int attempt, int64_t now_ms) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  Call call("release_claim", seq, now_ms);
  call.attempt_number = attempt;
  auto it = rows_.find(seq);
  std::optional<TaskChange> change;
  if (it != rows_.end() && it->second.task.status == TaskState::kRunning &&
      it->second.task.attempt == attempt && !it->second.task.started_at) {
    it->second.task.attempt -= 1;
    change = move_locked(it->second, TaskState::kQueued, now_ms, "");
  }
  call.changed = change.has_value();
  record_locked(call);
  publish(lock, change);
  return change.has_value();
}

ts::StatusOr<bool> FakeStore::leave_running(Call call, TaskState to,
                                            const std::function<void(Task&)>& apply) {
  std::lock_guard<std::mutex> commit(commit_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  auto it = rows_.find(call.seq);
  std::optional<TaskChange> change;
  if (it != rows_.end() && it->second.task.status == TaskState::kRunning) {
    Task& t = it->second.task;
    apply(t);
    t.attempts.push_back(call.attempt);
    change =
        move_locked(it->second, to, call.attempt.started_at + call.attempt.duration_ms, call.error);
  }
  call.changed = change.has_value();
  record_locked(call);
  publish(lock, change);
  return call.changed;
}

ts::StatusOr<bool> FakeStore::finish_done(int64_t seq, const ts::Attempt& attempt,
                                          const ts::ResultMeta& result) {
  Call call("finish_done", seq);
  call.attempt = attempt;
  call.result = result;
  call.result.inline_bytes = nullptr;  // the caller's, gone once this returns
  if (result.inline_bytes) call.result_bytes = *result.inline_bytes;
  return leave_running(call, TaskState::kDone, [&](Task& t) {
    t.result_size = result.size;
    t.result_type = result.content_type;
    t.error.reset();
  });
}

ts::StatusOr<bool> FakeStore::finish_failed(int64_t seq, const ts::Attempt& attempt,
                                            const std::string& error) {
  Call call("finish_failed", seq);
  call.attempt = attempt;
  call.error = error;
  return leave_running(call, TaskState::kFailed, [&](Task& t) { t.error = error; });
}

ts::StatusOr<bool> FakeStore::requeue(int64_t seq, const ts::Attempt& attempt,
                                      std::optional<int64_t> next_attempt_at,
                                      bool give_back_attempt, const std::string& error) {
  Call call("requeue", seq);
  call.attempt = attempt;
  call.next_at = next_attempt_at;
  call.give_back_attempt = give_back_attempt;
  call.error = error;
  return leave_running(call, TaskState::kQueued, [&](Task& t) {
    if (give_back_attempt) t.attempt -= 1;
    t.next_attempt_at = next_attempt_at;
    if (!error.empty()) t.error = error;
  });
}

ts::StatusOr<std::vector<ts::ReadyRow>> FakeStore::fetch_ready(
    const std::string& type, size_t limit, const std::unordered_set<int64_t>& exclude,
    int64_t now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<const Task*> ready;
  for (const auto& [seq, row] : rows_) {
    const Task& t = row.task;
    if (t.status != TaskState::kQueued || t.type != type || exclude.count(seq)) continue;
    if (t.next_attempt_at && *t.next_attempt_at > now_ms) continue;
    ready.push_back(&t);
  }
  std::stable_sort(ready.begin(), ready.end(),
                   [](const Task* a, const Task* b) { return a->priority > b->priority; });
  std::vector<ts::ReadyRow> out;
  for (const Task* t : ready) {
    if (out.size() >= limit) break;
    out.push_back({t->seq, t->priority, t->task_id, t->backend.value_or("")});
  }
  Call call("fetch_ready", 0, now_ms);
  call.changed = !out.empty();
  record_locked(call);
  return out;
}

ts::StatusOr<std::optional<int64_t>> FakeStore::next_due(const std::string& type, int64_t now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<int64_t> due;
  for (const auto& [seq, row] : rows_) {
    const Task& t = row.task;
    if (t.status != TaskState::kQueued || t.type != type || !t.next_attempt_at) continue;
    if (*t.next_attempt_at > now_ms && (!due || *t.next_attempt_at < *due)) {
      due = t.next_attempt_at;
    }
  }
  Call call("next_due", 0, now_ms);
  call.next_at = due;
  call.changed = due.has_value();
  record_locked(call);
  return due;
}

ts::StatusOr<std::vector<ts::QueuedBlock>> FakeStore::queued_blocks(const std::string& type,
                                                                    int block_bits) {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::pair<int, int64_t>, int64_t> counts;
  for (const auto& [seq, row] : rows_) {
    if (row.task.status == TaskState::kQueued && row.task.type == type) {
      ++counts[{row.task.priority, seq >> block_bits}];
    }
  }
  std::vector<ts::QueuedBlock> out;
  for (const auto& [key, n] : counts) out.push_back({key.first, key.second, n});
  record_locked(Call("queued_blocks"));
  return out;
}

ts::StatusOr<int64_t> FakeStore::count_queued_between(const std::string& type, int priority,
                                                      int64_t from_seq, int64_t before_seq) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t n = 0;
  for (const auto& [seq, row] : rows_) {
    const Task& t = row.task;
    if (t.status == TaskState::kQueued && t.type == type && t.priority == priority &&
        seq >= from_seq && seq < before_seq) {
      ++n;
    }
  }
  record_locked(Call("count_queued_between"));
  return n;
}

ts::StatusOr<std::optional<int64_t>> FakeStore::oldest_queued_created_at(const std::string& type) {
  std::lock_guard<std::mutex> lock(mu_);
  record_locked(Call("oldest_queued_created_at"));
  for (const auto& [seq, row] : rows_) {
    if (row.task.status == TaskState::kQueued && row.task.type == type) {
      return std::optional<int64_t>(row.task.created_at);
    }
  }
  return std::optional<int64_t>();
}

ts::StatusOr<std::vector<int64_t>> FakeStore::webhooks_due(int64_t now_ms, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<int64_t, int64_t>> due;  // (due at, seq)
  for (const auto& [seq, row] : rows_) {
    if (row.task.webhook_state == ts::WebhookState::kPending && row.webhook_next_at &&
        *row.webhook_next_at <= now_ms) {
      due.emplace_back(*row.webhook_next_at, seq);
    }
  }
  std::sort(due.begin(), due.end());
  std::vector<int64_t> out;
  for (const auto& [at, seq] : due) {
    if (static_cast<int>(out.size()) >= limit) break;
    out.push_back(seq);
  }
  Call call("webhooks_due", 0, now_ms);
  call.changed = !out.empty();
  record_locked(call);
  return out;
}

ts::StatusOr<std::optional<int64_t>> FakeStore::next_webhook_due() {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<int64_t> next;
  for (const auto& [seq, row] : rows_) {
    if (row.task.webhook_state == ts::WebhookState::kPending && row.webhook_next_at &&
        (!next || *row.webhook_next_at < *next)) {
      next = row.webhook_next_at;
    }
  }
  Call call("next_webhook_due");
  call.next_at = next;
  call.changed = next.has_value();
  record_locked(call);
  return next;
}

ts::StatusOr<std::optional<Task>> FakeStore::delivery_of(int64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  Call call("delivery_of", seq);
  auto it = rows_.find(seq);
  call.changed = it != rows_.end();
  record_locked(call);
  if (it == rows_.end()) return std::optional<Task>();
  return std::optional<Task>(it->second.task);
}

ts::Status FakeStore::record_webhook(int64_t seq, const ts::WebhookDelivery& delivery,
                                     ts::WebhookState new_state, std::optional<int64_t> next_at) {
  std::lock_guard<std::mutex> lock(mu_);
  Call call("record_webhook", seq);
  call.delivery = delivery;
  call.webhook_state = new_state;
  call.next_at = next_at;
  auto it = rows_.find(seq);
  call.changed = it != rows_.end();
  record_locked(call);
  if (it == rows_.end()) return ts::Status::Ok();  // as the SQL: an UPDATE of no row
  Task& t = it->second.task;
  // As INSERT OR REPLACE keyed by (task, number).
  std::erase_if(t.deliveries,
                [&](const ts::WebhookDelivery& d) { return d.number == delivery.number; });
  t.deliveries.push_back(delivery);
  t.webhook_state = new_state;
  it->second.webhook_next_at = next_at;
  return ts::Status::Ok();
}

}  // namespace tst
