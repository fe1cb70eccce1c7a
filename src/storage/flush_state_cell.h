// FlushStateCell: the live flush_all state, read on every Get and by every compaction, written
// only by flush_all. A sequence lock keeps reads free of stores so readers on different cores
// never contend for a cache line, and a reader never sees half of an update.
#pragma once

#include <atomic>
#include <cstdint>

#include "storage/item.h"

namespace petracache::storage {

class FlushStateCell {
 public:
  FlushStateCell() = default;
  FlushStateCell(const FlushStateCell&) = delete;
  FlushStateCell& operator=(const FlushStateCell&) = delete;

  // Lock-free; retries only while a Store() is in progress.
  FlushState Load() const {
    for (;;) {
      const uint64_t before = seq_.load(std::memory_order_acquire);
      FlushState state;
      // Acquire loads keep the second sequence read after them (no fences: TSan-friendly,
      // and free on x86).
      state.oldest_live = oldest_live_.load(std::memory_order_acquire);
      state.oldest_cas = oldest_cas_.load(std::memory_order_acquire);
      const uint64_t after = seq_.load(std::memory_order_relaxed);
      if (before == after && (before & 1) == 0) return state;
    }
  }

  // Writers must be serialized by the caller.
  void Store(const FlushState& state) {
    const uint64_t seq = seq_.load(std::memory_order_relaxed);
    seq_.store(seq + 1, std::memory_order_relaxed);
    // Release stores: a reader that sees a new field value also sees the odd sequence.
    oldest_live_.store(state.oldest_live, std::memory_order_release);
    oldest_cas_.store(state.oldest_cas, std::memory_order_release);
    seq_.store(seq + 2, std::memory_order_release);
  }

 private:
  std::atomic<uint64_t> seq_{0};  // odd while a Store() is in progress
  std::atomic<int64_t> oldest_live_{0};
  std::atomic<uint64_t> oldest_cas_{0};
};

}  // namespace petracache::storage
