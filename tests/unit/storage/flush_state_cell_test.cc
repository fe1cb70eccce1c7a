// Tests for FlushStateCell: a reader never sees a half-written state.
#include "storage/flush_state_cell.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace petracache::storage {
namespace {

TEST(FlushStateCellTest, StartsZeroAndStores) {
  FlushStateCell cell;
  EXPECT_EQ(cell.Load(), FlushState{});
  cell.Store({.oldest_live = -5, .oldest_cas = 9});
  EXPECT_EQ(cell.Load(), (FlushState{.oldest_live = -5, .oldest_cas = 9}));
}

TEST(FlushStateCellTest, ReadersNeverSeeTornState) {
  FlushStateCell cell;
  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::thread reader([&] {
    while (!done.load(std::memory_order_relaxed)) {
      const FlushState s = cell.Load();
      if (static_cast<uint64_t>(s.oldest_live) != s.oldest_cas) torn.fetch_add(1);
    }
  });
  for (int64_t i = 1; i <= 200'000; ++i) {
    cell.Store({.oldest_live = i, .oldest_cas = static_cast<uint64_t>(i)});
  }
  done.store(true);
  reader.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_EQ(cell.Load().oldest_cas, 200'000u);
}

}  // namespace
}  // namespace petracache::storage
