#include "service/long_polls.h"

#include <algorithm>
#include <vector>

#include "core/thread_name.h"

namespace ts {

LongPolls::LongPolls(EventHub& events, IsFinal is_final)
    : events_(events), is_final_(std::move(is_final)) {}

LongPolls::~LongPolls() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::multimap<std::string, PollPtr> left;
  {
    MutexLock lock(mu_);
    left.swap(polls_);
    done_ = true;
  }
  for (auto& [id, poll] : left) poll->answer();
}

bool LongPolls::add(const std::string& task_id, uint64_t cursor,
                    std::chrono::steady_clock::time_point deadline, std::function<void()> answer) {
  {
    MutexLock lock(mu_);
    if (done_) return false;  // shut down meanwhile: no thread left to answer it later
    polls_.emplace(task_id, std::make_shared<Poll>(Poll{task_id, deadline, std::move(answer)}));
    rewind_to_ = std::min(rewind_to_, cursor);
    if (!thread_.joinable()) {
      thread_ = std::thread([this] {
        name_this_thread("ts-longpoll");
        loop();
      });
    }
  }
  cv_.notify_one();
  return true;
}

void LongPolls::loop() {
  uint64_t cursor = UINT64_MAX;  // nothing watched yet
  for (;;) {
    std::vector<PollPtr> due, recheck;
    std::chrono::milliseconds sleep(100);  // the waits end within this of their deadline
    {
      MutexLock lock(mu_);
      if (polls_.empty()) cursor = UINT64_MAX;  // the next poll's cursor says where to look
      while (polls_.empty() && !stop_) cv_.wait(mu_);
      if (stop_) return;
      // Back to the oldest cursor of the polls registered since: an event that made one final
      // may be behind the events already looked at.
      cursor = std::min(cursor, rewind_to_);
      rewind_to_ = UINT64_MAX;
      auto now = std::chrono::steady_clock::now();
      for (const auto& [id, poll] : polls_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(poll->deadline - now);
        sleep = std::max(std::chrono::milliseconds(0), std::min(sleep, left));
      }
    }
    bool lost = false;
    auto events = events_.wait_after(
        &cursor, sleep, [](const TaskEvent& e) { return is_final(e.status); }, &lost);
    bool closed = events_.closed();
    {
      MutexLock lock(mu_);
      auto now = std::chrono::steady_clock::now();
      for (const TaskEvent& e : events) {
        auto [from, to] = polls_.equal_range(e.task_id);
        for (auto it = from; it != to; ++it) due.push_back(it->second);
        polls_.erase(from, to);
      }
      for (auto it = polls_.begin(); it != polls_.end();) {
        if (closed || it->second->deadline <= now) {
          due.push_back(it->second);
          it = polls_.erase(it);
        } else {
          // Fallen behind the EventHub's ring: whether it turned final is found by reading.
          if (lost) recheck.push_back(it->second);
          ++it;
        }
      }
      if (closed) done_ = true;  // from now on add() refuses: callers answer on their own
    }
    for (const PollPtr& poll : due) poll->answer();
    for (const PollPtr& poll : recheck) {
      if (!is_final_(poll->task_id)) continue;
      bool taken = false;
      {
        MutexLock lock(mu_);
        auto [from, to] = polls_.equal_range(poll->task_id);
        for (auto it = from; it != to && !taken; ++it) {
          if (it->second == poll) {
            polls_.erase(it);
            taken = true;
          }
        }
      }
      if (taken) poll->answer();
    }
    if (closed) return;
  }
}

}  // namespace ts
