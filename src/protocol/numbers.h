// Number parsing that accepts and rejects exactly what memcached's safe_strto* functions do
// (C strto* on a NUL-terminated token, then "ends at NUL or whitespace", then memcached's
// extra checks), so edge cases like "12\t", "+5", "-0" or 2^64 answer the same.
#pragma once

#include <cstdint>
#include <string_view>

namespace petracache::protocol {

// memcached's safe_strtoul on a 64-bit build, narrowed to 32 bits as its callers do
// (so 4294967296 is accepted and becomes 0).
[[nodiscard]] bool SafeStrtoul32(std::string_view token, uint32_t* out);
// memcached's safe_strtoull: rejects overflow and negative numbers.
[[nodiscard]] bool SafeStrtoull(std::string_view token, uint64_t* out);
// memcached's safe_strtol into an int32_t: accepts any value strtol does, then truncates to
// 32 bits (so 4294967295 becomes -1).
[[nodiscard]] bool SafeStrtol32(std::string_view token, int32_t* out);

// How incr/decr read a stored value: memcached runs safe_strtoull over the item data, which
// is followed by "\r\n", so an all-digit value ends at whitespace. Empty values are
// non-numeric.
[[nodiscard]] bool ParseStoredNumber(std::string_view value, uint64_t* out);

}  // namespace petracache::protocol
