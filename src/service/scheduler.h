#pragma once
// Scheduler lets scheduled tasks into their pools' backlogs when their run_at comes. A task
// submitted with a run_at in the future is QUEUED but outside the backlog (no queue position,
// never dispatched); the store keeps it in the partial index tasks_scheduled, so however many
// wait, memory holds only the earliest run_at. On a thread of its own it sleeps until then,
// promotes what fell due (a bounded batch per transaction), and reads the next earliest from the
// store. Tasks due while the server was down are promoted at start.
//
// Thread-safe: note() from any thread (the commit listener); start() once; stop() (also from
// the destructor) ends and joins the thread.

#include <atomic>
#include <optional>
#include <thread>

#include "core/clock.h"
#include "core/mutex.h"
#include "store/task_store.h"

namespace ts {

class Scheduler {
 public:
  static constexpr int kBatch = 1000;  // promotions per transaction

  Scheduler(TaskLedger& store, const Clock& clock);
  ~Scheduler();

  void start();
  void stop();
  // A committed scheduled task waits until run_at_ms: wake sooner if it is the earliest.
  void note(int64_t run_at_ms);

 private:
  void loop();

  TaskLedger& store_;
  const Clock& clock_;
  Mutex mu_;
  CondVar cv_;
  std::optional<int64_t> next_ GUARDED_BY(mu_);  // the earliest run_at known to wait
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace ts
