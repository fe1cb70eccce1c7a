// Base64 with the standard alphabet and '=' padding.
#include "protocol/base64.h"

#include <array>
#include <cstdint>

namespace petracache::protocol {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Character -> 6-bit value, or -1.
constexpr std::array<int8_t, 256> MakeDecodeTable() {
  std::array<int8_t, 256> table{};
  for (auto& v : table) v = -1;
  for (size_t i = 0; i < kAlphabet.size(); ++i) {
    table[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
  }
  return table;
}
constexpr std::array<int8_t, 256> kDecode = MakeDecodeTable();

}  // namespace

void Base64Encode(std::string_view data, std::string* out) {
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const uint32_t v = (static_cast<uint32_t>(static_cast<uint8_t>(data[i])) << 16) |
                       (static_cast<uint32_t>(static_cast<uint8_t>(data[i + 1])) << 8) |
                       static_cast<uint32_t>(static_cast<uint8_t>(data[i + 2]));
    out->push_back(kAlphabet[(v >> 18) & 63]);
    out->push_back(kAlphabet[(v >> 12) & 63]);
    out->push_back(kAlphabet[(v >> 6) & 63]);
    out->push_back(kAlphabet[v & 63]);
  }
  const size_t rest = data.size() - i;
  if (rest == 0) return;
  uint32_t v = static_cast<uint32_t>(static_cast<uint8_t>(data[i])) << 16;
  if (rest == 2) v |= static_cast<uint32_t>(static_cast<uint8_t>(data[i + 1])) << 8;
  out->push_back(kAlphabet[(v >> 18) & 63]);
  out->push_back(kAlphabet[(v >> 12) & 63]);
  out->push_back(rest == 2 ? kAlphabet[(v >> 6) & 63] : '=');
  out->push_back('=');
}

bool Base64Decode(std::string_view text, std::string* out) {
  // memcached's decoder: characters outside the alphabet are skipped, the rest must come in
  // whole groups of four, '=' counts as padding wherever it stands, and decoding ends with
  // the first group that holds padding (one or two '=' drop as many output bytes; more fail).
  out->clear();
  size_t usable = 0;
  for (char c : text) {
    if (c == '=' || kDecode[static_cast<uint8_t>(c)] >= 0) ++usable;
  }
  if (usable == 0 || usable % 4 != 0) return false;
  uint32_t group = 0;
  size_t in_group = 0;
  size_t padding = 0;
  for (char c : text) {
    uint32_t bits = 0;
    if (c == '=') {
      ++padding;
    } else if (const int8_t d = kDecode[static_cast<uint8_t>(c)]; d >= 0) {
      bits = static_cast<uint32_t>(d);
    } else {
      continue;
    }
    group = (group << 6) | bits;
    if (++in_group < 4) continue;
    out->push_back(static_cast<char>((group >> 16) & 0xff));
    out->push_back(static_cast<char>((group >> 8) & 0xff));
    out->push_back(static_cast<char>(group & 0xff));
    group = 0;
    in_group = 0;
    if (padding > 0) {
      if (padding > 2) {
        out->clear();
        return false;
      }
      out->resize(out->size() - padding);
      break;
    }
  }
  return !out->empty();
}

}  // namespace petracache::protocol
