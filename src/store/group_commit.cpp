#include "store/group_commit.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <climits>

#include "core/blocking.h"
#include "core/thread_name.h"

namespace ts {
namespace {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
            nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
            nullptr, 0);
}

// Sleeps until the notifier has marked `op` done.
void wait_done(WriteOp& op) {
  for (;;) {
    uint32_t rung = op.bell->load(std::memory_order_acquire);
    if (op.done.load(std::memory_order_acquire) != 0) return;
    futex_wait(op.bell, rung);  // returns at once if the bell rang since `rung` was read
  }
}

}  // namespace

Status store_closed() { return Status::Unavailable("shutting_down", "the task store is closed"); }

GroupCommitter::GroupCommitter(Options options, BatchExecutor& executor)
    : options_(std::move(options)), executor_(executor) {}

GroupCommitter::~GroupCommitter() { close(); }

void GroupCommitter::start() {
  notifier_ = std::thread([this] {
    name_this_thread(options_.notifier_thread);
    notifier_loop();
  });
  writer_ = std::thread([this] {
    name_this_thread(options_.writer_thread);
    writer_loop();
  });
}

void GroupCommitter::close() {
  {
    MutexLock lock(mu_);
    if (closed_) return;
    closed_ = true;
    stopping_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  {
    // After the writer: every op it took has been handed over and is woken before this returns.
    MutexLock lock(notify_mu_);
    notifier_stop_ = true;
  }
  notify_cv_.notify_all();
  if (notifier_.joinable()) notifier_.join();
}

bool GroupCommitter::queue(WriteOp* op) {
  MutexLock lock(mu_);
  if (stopping_) return false;
  op->bell = &bells_[open_bell_ % bells_.size()];
  pending_.push_back(op);
  if (!op->lazy && urgent_++ == 0) cv_.notify_one();
  return true;
}

Status GroupCommitter::write(const std::function<void(WriteOp&)>& fill, InsertOutcome* outcome) {
  WriteOp op;
  fill(op);
  if (!queue(&op)) return store_closed();
  about_to_block();
  wait_done(op);
  if (outcome) *outcome = std::move(op.outcome);
  return op.result;
}

Status GroupCommitter::write(bool savepoint, std::function<Status()> fn) {
  return write([&](WriteOp& op) {
    op.fn = std::move(fn);
    op.savepoint = savepoint;
  });
}

void GroupCommitter::insert_async(Task task,
                                  std::function<void(const StatusOr<InsertOutcome>&)> done) {
  auto op = std::make_unique<WriteOp>();
  op->owned_task = std::make_unique<Task>(std::move(task));
  op->plain_insert = op->owned_task.get();
  op->on_done = std::move(done);
  if (!queue(op.get())) return op->on_done(store_closed());
  op.release();  // the notifier deletes it
}

void GroupCommitter::write_async(std::function<Status()> fn, bool lazy) {
  auto op = std::make_unique<WriteOp>();
  op->fn = std::move(fn);
  op->savepoint = true;
  op->lazy = lazy;
  op->on_done = [](const StatusOr<InsertOutcome>&) {};
  if (!queue(op.get())) return;
  op.release();  // the notifier deletes it
}

void GroupCommitter::writer_loop() {
  std::vector<WriteOp*> batch;
  for (;;) {
    {
      MutexLock lock(mu_);
      // Lazy ops alone wait for company, or for kLazyDelay.
      while (urgent_ == 0 && !stopping_) {
        if (pending_.empty()) {
          cv_.wait(mu_);
        } else if (cv_.wait_for(mu_, kLazyDelay) == std::cv_status::timeout) {
          break;
        }
      }
      if (pending_.empty()) return;  // stopping, nothing left
      while (!pending_.empty() && batch.size() < options_.max_batch) {
        if (!pending_.front()->lazy) --urgent_;
        batch.push_back(pending_.front());
        pending_.pop_front();
      }
      ++open_bell_;  // ops queued from now on wait for a later transaction
    }
    changes_.clear();
    Status batch_status = executor_.commit_batch(batch, &changes_);
    if (batch_status.ok()) {
      if (listener_ && !changes_.empty()) listener_(changes_);
    } else {
      for (WriteOp* op : batch) op->result = batch_status;
    }
    // Waking the callers costs more than committing for them (a cross-CPU wakeup per caller):
    // the notifier does it while this thread goes on with the next transaction.
    {
      MutexLock lock(notify_mu_);
      to_notify_.insert(to_notify_.end(), batch.begin(), batch.end());
    }
    notify_cv_.notify_one();
    batch.clear();
  }
}

void GroupCommitter::notifier_loop() {
  std::vector<WriteOp*> ops;
  std::vector<std::atomic<uint32_t>*> bells;
  std::vector<WriteOp*> unwaited;  // insert_async's
  MutexLock lock(notify_mu_);
  for (;;) {
    while (to_notify_.empty() && !notifier_stop_) notify_cv_.wait(notify_mu_);
    if (to_notify_.empty()) return;
    ops.swap(to_notify_);
    lock.unlock();
    for (WriteOp* op : ops) {
      if (op->on_done) {
        unwaited.push_back(op);
        continue;
      }
      // The caller may return, and its op go out of scope, once `done` is set: read first.
      std::atomic<uint32_t>* bell = op->bell;
      if (std::find(bells.begin(), bells.end(), bell) == bells.end()) bells.push_back(bell);
      op->done.store(1, std::memory_order_release);
    }
    for (std::atomic<uint32_t>* bell : bells) {
      bell->fetch_add(1, std::memory_order_release);
      futex_wake_all(bell);
    }
    for (WriteOp* op : unwaited) {
      if (op->result.ok()) {
        op->on_done(std::move(op->outcome));
      } else {
        op->on_done(op->result);
      }
      delete op;
    }
    ops.clear();
    bells.clear();
    unwaited.clear();
    lock.lock();
  }
}

}  // namespace ts
