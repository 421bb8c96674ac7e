#pragma once
// Mutex, MutexLock and CondVar: std::mutex, a lock_guard that can be dropped and taken again,
// and std::condition_variable, annotated so that clang's -Wthread-safety checks that every
// GUARDED_BY member is touched with its mutex held (see core/thread_annotations.h). Under g++
// they compile to the std types they wrap and nothing else.
//
// Thread-safety: as the std types. A Mutex is shared between threads; a MutexLock belongs to
// the scope that made it (one thread); a CondVar is shared, and each wait needs the Mutex it
// names held by the calling thread.
//
//   MutexLock lock(mu_);
//   while (!ready_) cv_.wait(mu_);  // the condition is read here, where the check sees mu_ held
//
// A predicate passed to a wait would be a lambda, which the analysis checks as a function of its
// own that holds no lock: so CondVar takes none, and callers loop as above.

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "core/thread_annotations.h"

namespace ts {

class CondVar;

class CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return mu_.try_lock(); }

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope, like std::lock_guard. unlock() and lock() drop it and take it
// again within the scope (around a slow call, or to notify without it); the analysis follows
// both, and the destructor releases only what is held.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() {
    if (held_) mu_.unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void unlock() RELEASE() {
    mu_.unlock();
    held_ = false;
  }
  void lock() ACQUIRE() {
    mu_.lock();
    held_ = true;
  }

 private:
  Mutex& mu_;
  bool held_ = true;
};

// A condition variable; each wait names the Mutex the caller holds (through a MutexLock or
// otherwise), which is what lets the analysis require it: clang cannot see through a MutexLock
// argument to the mutex it holds. The mutex is held again when a wait returns, also on timeout;
// a wait may return spuriously, so callers re-check their condition in a loop.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  void wait(Mutex& mu) REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();  // the caller still holds mu
  }
  template <class Clock, class Duration>
  std::cv_status wait_until(Mutex& mu, const std::chrono::time_point<Clock, Duration>& deadline)
      REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    std::cv_status status = cv_.wait_until(lock, deadline);
    lock.release();
    return status;
  }
  template <class Rep, class Period>
  std::cv_status wait_for(Mutex& mu, const std::chrono::duration<Rep, Period>& timeout)
      REQUIRES(mu) {
    std::unique_lock<std::mutex> lock(mu.mu_, std::adopt_lock);
    std::cv_status status = cv_.wait_for(lock, timeout);
    lock.release();
    return status;
  }

  void notify_one() noexcept { cv_.notify_one(); }
  void notify_all() noexcept { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace ts
