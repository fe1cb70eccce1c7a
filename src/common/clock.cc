// SystemClock reads CLOCK_REALTIME.
#include "common/clock.h"

#include <ctime>

namespace petracache {

int64_t SystemClock::Now() const {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec;
}

SystemClock* SystemClock::Get() {
  static SystemClock clock;
  return &clock;
}

}  // namespace petracache
