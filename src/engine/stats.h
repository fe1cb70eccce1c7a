// Engine counters: one EngineStats per thread that executes commands (single writer, relaxed
// atomics, own cache lines), summed when `stats` or /metrics reads them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "petracache/command.h"

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

// Command families with their own latency histogram (the `command` label in /metrics).
enum class CommandKind : uint8_t {
  kGet,
  kSet,
  kDelete,
  kIncr,
  kDecr,
  kTouch,
  kCas,
  kFlush,
  kOther,
};
inline constexpr size_t kCommandKinds = 9;
CommandKind KindOf(CommandType type);
std::string_view CommandKindName(CommandKind kind);

// Upper bounds (seconds) of the latency histogram buckets; one more bucket holds the rest.
inline constexpr double kLatencyBounds[] = {1e-6,   2.5e-6, 5e-6, 1e-5,   2.5e-5, 5e-5, 1e-4,
                                            2.5e-4, 5e-4,   1e-3, 2.5e-3, 5e-3,   1e-2, 2.5e-2,
                                            5e-2,   0.1,    0.25, 0.5,    1.0};
inline constexpr size_t kLatencyBuckets = sizeof(kLatencyBounds) / sizeof(kLatencyBounds[0]) + 1;

// Time spent executing one command, single writer like Counter.
struct LatencyHistogram {
  Counter buckets[kLatencyBuckets];  // not cumulative
  Counter sum_nanos;
  void Record(uint64_t nanos);
};

struct alignas(64) EngineStats {
#define PETRACACHE_DECLARE_COUNTER(name) Counter name;
  PETRACACHE_ENGINE_COUNTERS(PETRACACHE_DECLARE_COUNTER)
#undef PETRACACHE_DECLARE_COUNTER
  LatencyHistogram latency[kCommandKinds];
};

// A point-in-time sum of EngineStats.
struct EngineTotals {
#define PETRACACHE_DECLARE_TOTAL(name) uint64_t name = 0;
  PETRACACHE_ENGINE_COUNTERS(PETRACACHE_DECLARE_TOTAL)
#undef PETRACACHE_DECLARE_TOTAL

  uint64_t latency_buckets[kCommandKinds][kLatencyBuckets] = {};
  uint64_t latency_sum_nanos[kCommandKinds] = {};

  void Add(const EngineStats& s);
  void Subtract(const EngineTotals& base);
  // Commands executed of one kind (the histogram's count).
  uint64_t Commands(CommandKind kind) const;
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
