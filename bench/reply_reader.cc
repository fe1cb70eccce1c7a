// Reply checking for the load generator.
#include "reply_reader.h"

#include <cstring>

namespace petracache::bench {
namespace {

constexpr std::string_view kEnd = "END";
constexpr std::string_view kStored = "STORED";
constexpr std::string_view kValue = "VALUE ";

// Parses a decimal without sign; false on empty, junk, or overflow past 2^32.
bool ParseDecimal(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 10) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > UINT32_MAX) return false;
  *out = value;
  return true;
}

// Splits off the next space-separated token.
std::string_view NextToken(std::string_view* rest) {
  const size_t space = rest->find(' ');
  std::string_view token = rest->substr(0, space);
  rest->remove_prefix(space == std::string_view::npos ? rest->size() : space + 1);
  return token;
}

void SkipTo(PendingReply* reply, uint32_t index, std::vector<uint64_t>* missed) {
  if (missed != nullptr) {
    for (uint32_t i = reply->next_key; i < index; ++i) missed->push_back(reply->keys[i]);
  }
  reply->next_key = index;
}

}  // namespace

ReadStatus ReadReply(std::string_view input, const KeyFormat& format, PendingReply* reply,
                     size_t* consumed, std::vector<uint64_t>* missed) {
  *consumed = 0;
  size_t pos = 0;
  for (;;) {
    const void* newline = std::memchr(input.data() + pos, '\n', input.size() - pos);
    if (newline == nullptr) return ReadStatus::kNeedMore;
    const size_t line_end = static_cast<size_t>(static_cast<const char*>(newline) - input.data());
    if (line_end == pos || input[line_end - 1] != '\r') return ReadStatus::kDesync;
    const std::string_view line = input.substr(pos, line_end - 1 - pos);
    const size_t after_line = line_end + 1;
    const bool at_start = reply->next_key == 0 && reply->hits == 0;

    if (reply->kind == RequestKind::kSet) {
      *consumed = after_line;
      return line == kStored ? ReadStatus::kDone : ReadStatus::kErrorLine;
    }
    if (line == kEnd) {
      SkipTo(reply, reply->key_count, missed);
      *consumed = after_line;
      return ReadStatus::kDone;
    }
    if (line.substr(0, kValue.size()) != kValue) {
      if (!at_start) return ReadStatus::kDesync;
      *consumed = after_line;
      return ReadStatus::kErrorLine;
    }
    std::string_view rest = line.substr(kValue.size());
    const std::string_view key = NextToken(&rest);
    const std::string_view flags = NextToken(&rest);
    const std::string_view bytes_text = NextToken(&rest);
    uint64_t id = 0;
    uint64_t flag_value = 0;
    uint64_t bytes = 0;
    if (!format.Parse(key, &id) || !ParseDecimal(flags, &flag_value) ||
        !ParseDecimal(bytes_text, &bytes)) {
      return ReadStatus::kDesync;
    }
    // What is left may be a CAS value (gets); we never ask for one, but it does no harm.
    uint32_t index = reply->next_key;
    while (index < reply->key_count && reply->keys[index] != id) ++index;
    if (index == reply->key_count) return ReadStatus::kDesync;
    if (input.size() < after_line + bytes + 2) return ReadStatus::kNeedMore;
    if (input[after_line + bytes] != '\r' || input[after_line + bytes + 1] != '\n') {
      return ReadStatus::kDesync;
    }
    SkipTo(reply, index, missed);
    reply->next_key = index + 1;
    ++reply->hits;
    pos = after_line + bytes + 2;
    *consumed = pos;
  }
}

}  // namespace petracache::bench
