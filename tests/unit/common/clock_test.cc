// Tests for common/clock.
#include "common/clock.h"

#include <gtest/gtest.h>

namespace petracache {
namespace {

TEST(ClockTest, SystemClockIsUnixSeconds) {
  int64_t now = SystemClock::Get()->Now();
  EXPECT_GT(now, 1'600'000'000);  // after 2020
  EXPECT_LT(now, 4'000'000'000);
}

TEST(ClockTest, FakeClockMovesOnlyWhenTold) {
  FakeClock clock(100);
  EXPECT_EQ(clock.Now(), 100);
  clock.Advance(5);
  EXPECT_EQ(clock.Now(), 105);
  clock.Set(7);
  EXPECT_EQ(clock.Now(), 7);
}

}  // namespace
}  // namespace petracache
