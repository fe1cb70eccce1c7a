// Base64 (RFC 4648, with padding) for the meta commands' binary keys (the b flag).
#pragma once

#include <string>
#include <string_view>

namespace petracache::protocol {

// Appends the base64 form of `data` to *out.
void Base64Encode(std::string_view data, std::string* out);

// Decodes `text` into *out (replacing its contents), accepting and rejecting exactly what
// memcached's base64_decode does (see base64.cc); input that decodes to nothing fails.
[[nodiscard]] bool Base64Decode(std::string_view text, std::string* out);

}  // namespace petracache::protocol
