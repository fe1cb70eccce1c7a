// Engine counters: one EngineStats per thread that executes commands (single writer, relaxed
// atomics, own cache lines), summed when `stats` or /metrics reads them.
#pragma once

#include <atomic>
#include <cstdint>

namespace petracache::engine {

// Every engine counter, in the order memcached's `stats` prints the ones it shares with us.
// X(name): the counter and the stat name are the same.
#define PETRACACHE_ENGINE_COUNTERS(X) \
  X(cmd_get)                          \
  X(cmd_set)                          \
  X(cmd_flush)                        \
  X(cmd_touch)                        \
  X(get_hits)                         \
  X(get_misses)                       \
  X(get_expired)                      \
  X(get_flushed)                      \
  X(delete_misses)                    \
  X(delete_hits)                      \
  X(incr_misses)                      \
  X(incr_hits)                        \
  X(decr_misses)                      \
  X(decr_hits)                        \
  X(cas_misses)                       \
  X(cas_hits)                         \
  X(cas_badval)                       \
  X(touch_hits)                       \
  X(touch_misses)                     \
  X(total_items)                      \
  X(protocol_errors)                  \
  X(storage_errors)

// A counter written by exactly one thread: a plain load+store, no locked instruction.
class Counter {
 public:
  void Add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t Get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

struct alignas(64) EngineStats {
#define PETRACACHE_DECLARE_COUNTER(name) Counter name;
  PETRACACHE_ENGINE_COUNTERS(PETRACACHE_DECLARE_COUNTER)
#undef PETRACACHE_DECLARE_COUNTER
};

// A point-in-time sum of EngineStats.
struct EngineTotals {
#define PETRACACHE_DECLARE_TOTAL(name) uint64_t name = 0;
  PETRACACHE_ENGINE_COUNTERS(PETRACACHE_DECLARE_TOTAL)
#undef PETRACACHE_DECLARE_TOTAL

  void Add(const EngineStats& s) {
#define PETRACACHE_ADD_TOTAL(name) name += s.name.Get();
    PETRACACHE_ENGINE_COUNTERS(PETRACACHE_ADD_TOTAL)
#undef PETRACACHE_ADD_TOTAL
  }
  void Subtract(const EngineTotals& base) {
#define PETRACACHE_SUB_TOTAL(name) name -= base.name;
    PETRACACHE_ENGINE_COUNTERS(PETRACACHE_SUB_TOTAL)
#undef PETRACACHE_SUB_TOTAL
  }
};

// Server-level figures the engine cannot know, supplied by the server for `stats`.
struct ServerStats {
  uint64_t max_connections = 0;
  uint64_t curr_connections = 0;
  uint64_t total_connections = 0;
  uint64_t rejected_connections = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t limit_maxbytes = 0;
  uint64_t threads = 1;
};

}  // namespace petracache::engine
