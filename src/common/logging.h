// Leveled logging to stderr in a journald-friendly form: "<N>level: message", where <N> is the
// syslog priority prefix journald understands. Nothing here is meant for per-request use.
#pragma once

#include <string_view>

#include "absl/strings/str_format.h"

namespace petracache {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
// Accepts debug, info, warning (warn), error.
[[nodiscard]] bool ParseLogLevel(std::string_view text, LogLevel* level);
std::string_view LogLevelName(LogLevel level);
inline bool LogEnabled(LogLevel level) { return level >= GetLogLevel(); }
void LogMessage(LogLevel level, std::string_view message);

}  // namespace petracache

#define PC_LOG(level, ...)                                                                     \
  do {                                                                                         \
    if (::petracache::LogEnabled(::petracache::LogLevel::level)) {                             \
      ::petracache::LogMessage(::petracache::LogLevel::level, ::absl::StrFormat(__VA_ARGS__)); \
    }                                                                                          \
  } while (0)
