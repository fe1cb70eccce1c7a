// Clock: wall-clock seconds, injectable so TTL and flush tests never sleep.
#pragma once

#include <atomic>
#include <cstdint>

namespace petracache {

class Clock {
 public:
  virtual ~Clock() = default;
  // Unix time in seconds.
  virtual int64_t Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t Now() const override;
  // A process-wide instance.
  static SystemClock* Get();
};

// A clock tests set by hand.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t now = 1'700'000'000) : now_(now) {}
  int64_t Now() const override { return now_.load(std::memory_order_relaxed); }
  void Set(int64_t now) { now_.store(now, std::memory_order_relaxed); }
  void Advance(int64_t seconds) { now_.fetch_add(seconds, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace petracache
