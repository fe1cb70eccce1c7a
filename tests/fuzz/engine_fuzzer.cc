// libFuzzer target: arbitrary bytes through Session + Engine + MemoryStore, as one connection
// would send them. Sanitizers catch memory errors; the checks below catch a reply stream that
// is not made of well-formed reply lines.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "engine/engine.h"
#include "server/session.h"
#include "storage/memory_store.h"

namespace {

// Every line the server may send starts with one of these (VALUE and VA data blocks are
// skipped). The meta statuses are whole words: "HD" alone or followed by return flags.
bool KnownReplyLine(std::string_view line) {
  static constexpr std::string_view kPrefixes[] = {
      "STORED", "NOT_STORED", "EXISTS", "NOT_FOUND", "DELETED", "TOUCHED", "OK", "END",
      "RESET", "ERROR", "CLIENT_ERROR ", "SERVER_ERROR ", "VERSION ", "STAT ", "ME "};
  for (std::string_view p : kPrefixes) {
    if (line.substr(0, p.size()) == p) return true;
  }
  static constexpr std::string_view kMetaStatuses[] = {"HD", "EN", "NF", "NS", "EX", "MN"};
  for (std::string_view p : kMetaStatuses) {
    if (line.substr(0, 2) == p && (line.size() == 2 || line[2] == ' ')) return true;
  }
  // incr/decr results.
  if (line.empty()) return false;
  for (char c : line) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

void CheckReplies(std::string_view out) {
  while (!out.empty()) {
    size_t eol = out.find("\r\n");
    if (eol == std::string_view::npos) __builtin_trap();
    std::string_view line = out.substr(0, eol);
    out.remove_prefix(eol + 2);
    if (line.substr(0, 6) == "VALUE ") {
      // VALUE <key> <flags> <bytes>[ <cas>]: skip the data block.
      size_t p1 = line.find(' ', 6);
      size_t p2 = line.find(' ', p1 + 1);
      size_t p3 = line.find(' ', p2 + 1);
      std::string bytes(line.substr(p2 + 1, p3 == std::string_view::npos ? p3 : p3 - p2 - 1));
      size_t n = std::stoul(bytes);
      if (out.size() < n + 2 || out.substr(n, 2) != "\r\n") __builtin_trap();
      out.remove_prefix(n + 2);
      continue;
    }
    if (line.substr(0, 3) == "VA ") {
      // VA <bytes> <flags>*: skip the data block.
      size_t end = line.find(' ', 3);
      std::string bytes(line.substr(3, end == std::string_view::npos ? end : end - 3));
      if (bytes.empty() || bytes.find_first_not_of("0123456789") != std::string::npos) {
        __builtin_trap();
      }
      size_t n = std::stoul(bytes);
      if (out.size() < n + 2 || out.substr(n, 2) != "\r\n") __builtin_trap();
      out.remove_prefix(n + 2);
      continue;
    }
    if (!KnownReplyLine(line)) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  petracache::FakeClock clock;
  petracache::storage::MemoryStore store(&clock);
  petracache::engine::EngineOptions options;
  options.version = "1.6.18 petracache-fuzz";
  options.item_size_max = 4096;
  petracache::engine::Engine engine(&store, &clock, options);
  petracache::server::SessionOptions session_options;
  session_options.parser.item_size_max = 4096;
  session_options.parser.max_get_line = 8192;
  petracache::server::Session session(&engine, engine.RegisterStats(), session_options);

  std::string input(reinterpret_cast<const char*>(data), size);
  std::string out;
  for (;;) {
    petracache::server::SessionResult r = session.Process(input, &out);
    if (r.consumed > input.size()) __builtin_trap();
    input.erase(0, r.consumed);
    if (r.action != petracache::server::SessionAction::kContinue) break;
    if (r.consumed == 0) break;
    clock.Advance(1);
  }
  CheckReplies(out);
  return 0;
}
