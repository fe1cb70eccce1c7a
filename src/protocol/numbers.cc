// memcached-compatible number parsing (see numbers.h).
#include "protocol/numbers.h"

#include <limits>

namespace petracache::protocol {
namespace {

bool IsCSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

// What strtoull/strtol leave behind.
struct Scan {
  bool any_digits = false;  // false: strto* returns endptr == str
  bool overflow = false;    // magnitude does not fit in 64 bits (ERANGE for strtoull)
  bool negative = false;
  uint64_t magnitude = 0;
  size_t end = 0;  // index of endptr
};

Scan ScanNumber(std::string_view s) {
  Scan r;
  size_t i = 0;
  while (i < s.size() && IsCSpace(s[i])) ++i;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    r.negative = s[i] == '-';
    ++i;
  }
  size_t digits_start = i;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (r.magnitude > (std::numeric_limits<uint64_t>::max() - d) / 10) r.overflow = true;
    r.magnitude = r.magnitude * 10 + d;
    ++i;
  }
  r.any_digits = i > digits_start;
  r.end = r.any_digits ? i : 0;
  return r;
}

// memcached's acceptance test after strto*: endptr at the terminating NUL or at whitespace.
// The end of the view stands for the NUL after a token or the "\r\n" after item data.
bool EndsCleanly(std::string_view s, size_t end) {
  return end == s.size() || IsCSpace(s[end]) || s[end] == '\0';
}

bool SafeStrtoullImpl(std::string_view s, uint64_t* out) {
  *out = 0;
  Scan r = ScanNumber(s);
  if (!r.any_digits || r.overflow) return false;
  if (!EndsCleanly(s, r.end)) return false;
  uint64_t value = r.negative ? (~r.magnitude + 1) : r.magnitude;
  // Only a value that looks negative as a signed number is checked for a minus sign.
  if (static_cast<int64_t>(value) < 0 && r.negative) return false;
  *out = value;
  return true;
}

}  // namespace

bool SafeStrtoull(std::string_view token, uint64_t* out) { return SafeStrtoullImpl(token, out); }

bool SafeStrtoul32(std::string_view token, uint32_t* out) {
  uint64_t value = 0;
  *out = 0;
  if (!SafeStrtoullImpl(token, &value)) return false;
  *out = static_cast<uint32_t>(value);
  return true;
}

bool SafeStrtol32(std::string_view token, int32_t* out) {
  *out = 0;
  Scan r = ScanNumber(token);
  if (!r.any_digits) return false;
  // strtol reports ERANGE outside [LONG_MIN, LONG_MAX].
  constexpr uint64_t kMaxPositive = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (r.overflow || r.magnitude > kMaxPositive + (r.negative ? 1 : 0)) return false;
  if (!EndsCleanly(token, r.end)) return false;
  uint64_t bits = r.negative ? (~r.magnitude + 1) : r.magnitude;
  *out = static_cast<int32_t>(static_cast<uint32_t>(bits));
  return true;
}

bool ParseStoredNumber(std::string_view value, uint64_t* out) {
  *out = 0;
  if (value.empty()) return false;
  return SafeStrtoullImpl(value, out);
}

}  // namespace petracache::protocol
