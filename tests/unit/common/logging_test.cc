// Tests for common/logging.
#include "common/logging.h"

#include <gtest/gtest.h>

namespace petracache {
namespace {

TEST(LoggingTest, ParsesEveryLevelName) {
  LogLevel level;
  for (auto [text, want] : {std::pair{"debug", LogLevel::kDebug}, {"info", LogLevel::kInfo},
                            {"warning", LogLevel::kWarning}, {"warn", LogLevel::kWarning},
                            {"error", LogLevel::kError}}) {
    ASSERT_TRUE(ParseLogLevel(text, &level)) << text;
    EXPECT_EQ(level, want);
  }
  EXPECT_FALSE(ParseLogLevel("loud", &level));
}

TEST(LoggingTest, LevelFiltersMessages) {
  LogLevel saved = GetLogLevel();
  SetLogLevel(LogLevel::kWarning);
  EXPECT_FALSE(LogEnabled(LogLevel::kInfo));
  EXPECT_TRUE(LogEnabled(LogLevel::kError));
  SetLogLevel(saved);
}

}  // namespace
}  // namespace petracache
