#pragma once
// LongPolls: the GET /api/v1/tasks/{id}?wait= requests held without a thread. Each waits until
// its task turns final (heard from the EventHub), its wait ends, or the server shuts down, and
// is then answered (its `answer` called, which reads the task and replies) by the one thread of
// this class.
//
// Thread-safe. The thread starts with the first poll; the destructor answers the polls still
// waiting and joins it.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "core/mutex.h"
#include "service/events.h"

namespace ts {

class LongPolls {
 public:
  // Whether the task is final now (for polls that fell behind the EventHub's ring).
  using IsFinal = std::function<bool(const std::string& task_id)>;

  LongPolls(EventHub& events, IsFinal is_final);
  ~LongPolls();

  // Holds a poll of `task_id` until `deadline`; `answer` is called once, and must not block:
  // the other polls wait behind it. `cursor` is the EventHub's last id taken before the task
  // was read (not final then), so the change that makes it final is an event after it. False
  // when shut down: then the caller answers at once.
  bool add(const std::string& task_id, uint64_t cursor,
           std::chrono::steady_clock::time_point deadline, std::function<void()> answer);

 private:
  struct Poll {
    std::string task_id;
    std::chrono::steady_clock::time_point deadline;
    std::function<void()> answer;
  };
  using PollPtr = std::shared_ptr<Poll>;
  void loop();

  EventHub& events_;
  const IsFinal is_final_;

  Mutex mu_;
  CondVar cv_;  // a poll came while none waited, or stop
  std::multimap<std::string, PollPtr> polls_ GUARDED_BY(mu_);  // by task id
  // The oldest EventHub cursor of the polls registered since the thread last looked.
  uint64_t rewind_to_ GUARDED_BY(mu_) = UINT64_MAX;
  bool done_ GUARDED_BY(mu_) = false;  // the thread has ended (shutdown)
  bool stop_ GUARDED_BY(mu_) = false;  // destructor
  // Started by the first poll; the destructor joins it without mu_ (no add() runs then).
  std::thread thread_ GUARDED_BY(mu_);
};

}  // namespace ts
