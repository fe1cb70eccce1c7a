// libFuzzer target: the parser on arbitrary bytes, fed whole and in fragments; checks that both
// feedings produce the same commands and that no parse result points outside the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/parser.h"

namespace {

using petracache::Command;
using petracache::protocol::Parser;
using petracache::protocol::ParseResult;
using petracache::protocol::ParserOptions;
using petracache::protocol::ParseStatus;

// Summarises what the parser saw, so two feedings can be compared.
std::vector<std::string> Feed(std::string_view input, size_t step) {
  ParserOptions options;
  options.item_size_max = 4096;  // small, so the too-large path is reachable
  options.max_get_line = 8192;
  Parser parser(options);
  Command cmd;
  std::string buffer;
  std::vector<std::string> seen;
  size_t fed = 0;
  while (fed < input.size()) {
    size_t n = std::min(step, input.size() - fed);
    buffer.append(input.substr(fed, n));
    fed += n;
    for (;;) {
      ParseResult r = parser.Parse(buffer, &cmd);
      if (r.consumed > buffer.size()) __builtin_trap();
      if (r.status == ParseStatus::kClose) {
        seen.push_back("close");
        return seen;
      }
      if (r.status == ParseStatus::kCommand) {
        for (std::string_view k : cmd.keys) {
          if (k.data() < buffer.data() || k.data() + k.size() > buffer.data() + buffer.size()) {
            __builtin_trap();
          }
        }
        // A meta command's key is in the input, or decoded (b flag) into the command's own
        // buffer.
        const std::string_view key = cmd.key;
        const bool in_input =
            key.data() >= buffer.data() && key.data() + key.size() <= buffer.data() + buffer.size();
        const bool decoded =
            key.data() >= cmd.key_buffer.data() &&
            key.data() + key.size() <= cmd.key_buffer.data() + cmd.key_buffer.size();
        if (!key.empty() && !in_input && !decoded) __builtin_trap();
        seen.push_back(std::to_string(static_cast<int>(cmd.type)) + "/" +
                       std::to_string(static_cast<int>(cmd.error)) + "/" + std::string(cmd.key) +
                       "/" + std::to_string(cmd.keys.size()) + "/" + std::string(cmd.data));
      }
      buffer.erase(0, r.consumed);
      if (r.status == ParseStatus::kNeedMore) break;
    }
  }
  return seen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t step = 1 + data[0] % 16;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<std::string> whole = Feed(input, input.size() + 1);
  std::vector<std::string> split = Feed(input, step);
  // A close depends on how much was buffered when no newline was seen (as in memcached), so
  // only the commands before a close must agree.
  size_t n = std::min(whole.size(), split.size());
  bool closed =
      (!whole.empty() && whole.back() == "close") || (!split.empty() && split.back() == "close");
  if (!closed && whole != split) __builtin_trap();
  for (size_t i = 0; i + 1 < n; ++i) {
    if (whole[i] != split[i]) __builtin_trap();
  }
  return 0;
}
