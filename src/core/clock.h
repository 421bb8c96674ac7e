#pragma once
// Clock is the seam through which every module reads time, so retry, health and timeout logic
// can be tested with a ManualClock instead of sleeping. Implementations are thread-safe.

#include <atomic>
#include <cstdint>

namespace ts {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock milliseconds since the Unix epoch (stored in the database, shown to users).
  virtual int64_t now_ms() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t now_ms() const override;
  // The process-wide instance.
  static const Clock& instance();
};

// A clock that only moves when told to. For tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t now_ms() const override { return now_.load(); }
  void advance_ms(int64_t ms) { now_.fetch_add(ms); }
  void set_ms(int64_t ms) { now_.store(ms); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace ts
