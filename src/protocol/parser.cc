// The text-protocol parser. Its structure follows memcached 1.6's proto_text.c
// (try_read_command_ascii, tokenize_command, process_command_ascii and the process_*_command
// functions) so that every accepted and rejected request behaves the same.
#include "protocol/parser.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

#include "protocol/base64.h"
#include "protocol/numbers.h"

namespace petracache::protocol {
// memcached's MAX_TOKENS: at most 23 tokens plus a terminal one.
constexpr size_t kMaxTokens = 24;

struct Tokens {
  std::array<std::string_view, kMaxTokens> token;
  // memcached's ntokens: the real tokens plus the terminal (empty) token.
  size_t count = 0;
  // Unsplit text after the 23rd token (the terminal token's value in memcached).
  std::string_view rest;

  std::string_view operator[](size_t i) const { return token[i]; }
  // The token memcached's set_noreply_maybe looks at.
  bool NoReply() const { return count >= 2 && token[count - 2] == "noreply"; }
};

namespace {

// memcached's tokenize_command: splits on single spaces (not tabs), skips empty tokens, and
// stops after 23 tokens leaving the rest of the line unsplit.
void Tokenize(std::string_view line, Tokens* t) {
  size_t n = 0;
  size_t start = 0;
  size_t i = 0;
  bool full = false;
  for (; i < line.size(); ++i) {
    if (line[i] != ' ') continue;
    if (start != i) {
      t->token[n++] = line.substr(start, i - start);
      if (n == kMaxTokens - 1) {
        ++i;
        full = true;
        break;
      }
    }
    start = i + 1;
  }
  if (!full && start < line.size()) t->token[n++] = line.substr(start);
  t->rest = full ? line.substr(i) : std::string_view();
  t->token[n++] = std::string_view();
  t->count = n;
}

// Calls fn(word) for each space-separated word of text.
template <typename Fn>
bool ForEachWord(std::string_view text, Fn&& fn) {
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    size_t start = i;
    while (i < text.size() && text[i] != ' ') ++i;
    if (i > start && !fn(text.substr(start, i - start))) return false;
  }
  return true;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

struct StorageCommand {
  CommandType type;
  bool has_cas;
};

bool LookupStorage(std::string_view name, StorageCommand* out) {
  static constexpr std::pair<std::string_view, StorageCommand> kTable[] = {
      {"set", {CommandType::kSet, false}},           {"add", {CommandType::kAdd, false}},
      {"replace", {CommandType::kReplace, false}},   {"append", {CommandType::kAppend, false}},
      {"prepend", {CommandType::kPrepend, false}},   {"cas", {CommandType::kCas, true}},
      {"lease-set", {CommandType::kLeaseSet, true}},
  };
  for (const auto& [n, c] : kTable) {
    if (n == name) {
      *out = c;
      return true;
    }
  }
  return false;
}

CommandType MetaType(std::string_view name) {
  if (name.size() != 2 || name[0] != 'm') return CommandType::kInvalid;
  switch (name[1]) {
    case 'n':
      return CommandType::kMetaNoop;
    case 'g':
      return CommandType::kMetaRetrieve;
    case 's':
      return CommandType::kMetaStore;
    case 'd':
      return CommandType::kMetaDelete;
    case 'a':
      return CommandType::kMetaArithmetic;
    case 'e':
      return CommandType::kMetaDebug;
    default:
      return CommandType::kInvalid;
  }
}

// memcached's _meta_flag_preparse over the flag tokens t[start .. n-2]: fills cmd->meta and
// decodes a base64 key in cmd->key. An unknown or repeated flag (by first character) stops at
// once; other bad tokens are remembered and the scan goes on, the last one's message winning
// (a bad F keeps the message so far, "bad command line format" by default).
ProtocolError PreparseMeta(const Tokens& t, size_t start, Command* cmd) {
  const bool retrieve = cmd->type == CommandType::kMetaRetrieve;
  MetaFlags& m = cmd->meta;
  std::array<bool, 128> seen{};
  bool failed = false;
  ProtocolError message = ProtocolError::kBadCommandLine;
  auto bad = [&](ProtocolError e) {
    failed = true;
    message = e;
  };
  for (size_t i = start; i + 1 < t.count; ++i) {
    const std::string_view token = t[i];
    const uint8_t flag = static_cast<uint8_t>(token[0]);
    if (flag >= 127 || seen[flag]) return ProtocolError::kMetaDuplicateFlag;
    seen[flag] = true;
    m.tokens[m.count++] = token;
    const std::string_view arg = token.substr(1);
    switch (flag) {
      case 'b':
        if (!Base64Decode(cmd->key, &cmd->key_buffer)) {
          bad(ProtocolError::kMetaBadKeyEncoding);
          cmd->key = {};
        } else {
          cmd->key = cmd->key_buffer;
        }
        m.base64_key = true;
        break;
      case 'N':
        m.vivify = true;
        if (!SafeStrtol32(arg, &m.vivify_ttl)) bad(ProtocolError::kMetaBadToken);
        break;
      case 'T':
        if (SafeStrtol32(arg, &m.ttl)) {
          m.new_ttl = true;
        } else {
          bad(ProtocolError::kMetaBadToken);
        }
        break;
      case 'R':
        m.recache = true;
        if (!SafeStrtol32(arg, &m.recache_ttl)) bad(ProtocolError::kMetaBadToken);
        break;
      case 'O':
        if (token.size() > kMaxMetaOpaqueLength) m.opaque_too_long = true;
        break;
      case 'P':
      case 'L':
      case 'k':
      case 's':
      case 't':
      case 'c':
      case 'f':
      case 'u':  // "don't bump in the LRU": PetraCache's reads never reorder anything
        break;
      case 'h':
      case 'l':
        // Hit-before and time-since-access: PetraCache does not record reads (that would
        // make every get a write), so mg refuses them rather than answer with invented
        // values (docs/protocol.md). The other commands ignore them, as memcached does.
        if (retrieve) return ProtocolError::kMetaInvalidFlag;
        break;
      case 'v':
        m.value = true;
        break;
      case 'q':
        m.quiet = true;
        break;
      case 'F':
        if (!SafeStrtoul32(arg, &m.client_flags)) failed = true;
        break;
      case 'C':
        if (SafeStrtoull(arg, &m.cas)) {
          m.has_cas = true;
        } else {
          bad(ProtocolError::kMetaBadToken);
        }
        break;
      case 'M':
        if (token.size() != 2) {
          bad(ProtocolError::kMetaModeLength);
        } else {
          m.mode = token[1];
        }
        break;
      case 'J':
        if (!SafeStrtoull(arg, &m.initial)) bad(ProtocolError::kMetaBadInitial);
        break;
      case 'D':
        if (!SafeStrtoull(arg, &m.delta)) bad(ProtocolError::kMetaBadDelta);
        break;
      case 'I':
        m.invalidate = true;
        break;
      default:
        return ProtocolError::kMetaInvalidFlag;
    }
  }
  return failed ? message : ProtocolError::kNone;
}

}  // namespace

ParseResult Parser::Parse(std::string_view input, Command* cmd) {
  size_t skipped = 0;
  if (swallow_ > 0) {
    skipped = std::min(swallow_, input.size());
    swallow_ -= skipped;
    input.remove_prefix(skipped);
    if (swallow_ > 0) return {ParseStatus::kNeedMore, skipped, skipped};
  }
  if (input.empty()) return {ParseStatus::kNeedMore, skipped, skipped};

  const void* newline = std::memchr(input.data(), '\n', input.size());
  if (newline == nullptr) {
    if (input.size() > kMaxCommandLine) {
      // Only a large multi-get may have a line this long; anything else is nonsense.
      size_t p = 0;
      while (p < input.size() && input[p] == ' ') ++p;
      std::string_view at = input.substr(p);
      bool is_get = p <= 100 && (StartsWith(at, "get ") || StartsWith(at, "gets "));
      if (!is_get || input.size() > options_.max_get_line) {
        return {ParseStatus::kClose, skipped, skipped};
      }
    }
    return {ParseStatus::kNeedMore, skipped, skipped};
  }
  size_t line_end = static_cast<size_t>(static_cast<const char*>(newline) - input.data());
  ParseResult r = ParseLine(input, line_end, line_end + 1, cmd);
  r.consumed += skipped;
  r.skipped = skipped;
  return r;
}

ParseResult Parser::ParseLine(std::string_view input, size_t line_end, size_t next, Command* cmd) {
  cmd->Clear();
  std::string_view line = input.substr(0, line_end);
  if (line.size() > 1 && line.back() == '\r') line.remove_suffix(1);
  // memcached handles the line as a C string: a NUL ends it.
  if (size_t nul = line.find('\0'); nul != std::string_view::npos) line = line.substr(0, nul);

  const ParseResult done{ParseStatus::kCommand, next};
  auto fail = [&](ProtocolError error) {
    cmd->error = error;
    return done;
  };

  Tokens t;
  Tokenize(line, &t);
  const size_t n = t.count;
  if (n < 2 || t[0].size() < 2) return fail(ProtocolError::kError);
  const std::string_view name = t[0];

  // Retrieval: get, gets, gat, gats.
  if (name == "get" || name == "gets" || name == "gat" || name == "gats") {
    if (n < 3) return fail(ProtocolError::kError);
    const bool touch = name[1] == 'a';
    cmd->type = touch ? (name.size() == 4 ? CommandType::kGats : CommandType::kGat)
                      : (name.size() == 4 ? CommandType::kGets : CommandType::kGet);
    size_t first_key = 1;
    if (touch) {
      if (!SafeStrtol32(t[1], &cmd->exptime)) return fail(ProtocolError::kInvalidExptime);
      first_key = 2;
    }
    // memcached looks keys up in order and gives up at the first over-long one.
    auto add_key = [cmd](std::string_view key) {
      if (key.size() > kMaxKeyLength) {
        cmd->error = ProtocolError::kBadCommandLine;
        return false;
      }
      cmd->keys.push_back(key);
      return true;
    };
    for (size_t i = first_key; i + 1 < n; ++i) {
      if (!add_key(t[i])) return done;
    }
    ForEachWord(t.rest, add_key);
    return done;
  }

  StorageCommand storage;
  if (LookupStorage(name, &storage)) {
    const bool lease = storage.type == CommandType::kLeaseSet;
    const size_t min_tokens = storage.has_cas ? 7 : 6;
    if (n != min_tokens && n != min_tokens + 1) return fail(ProtocolError::kError);
    cmd->type = storage.type;
    cmd->noreply = t.NoReply();
    if (t[1].size() > kMaxKeyLength) return fail(ProtocolError::kBadCommandLine);
    cmd->key = t[1];
    // lease-set <key> <token> <flags> <exptime> <bytes>; cas <key> <flags> <exptime> <bytes> <cas>
    const size_t f = lease ? 3 : 2;
    int32_t length = 0;
    if (!SafeStrtoul32(t[f], &cmd->flags) || !SafeStrtol32(t[f + 1], &cmd->exptime) ||
        !SafeStrtol32(t[f + 2], &length)) {
      return fail(ProtocolError::kBadCommandLine);
    }
    if (storage.has_cas && !SafeStrtoull(t[lease ? 2 : 5], &cmd->cas_unique)) {
      return fail(ProtocolError::kBadCommandLine);
    }
    if (length < 0 || length > INT_MAX - 2) return fail(ProtocolError::kBadCommandLine);
    const size_t value_length = static_cast<size_t>(length);
    if (ItemTotalSize(cmd->key.size(), cmd->flags, value_length) > options_.item_size_max) {
      // memcached swallows the data block and carries on with the next command.
      swallow_ = value_length + 2;
      return fail(ProtocolError::kObjectTooLarge);
    }
    return ReadDataBlock(input, next, value_length, cmd);
  }

  if (name == "incr" || name == "decr") {
    if (n != 4 && n != 5) return fail(ProtocolError::kError);
    cmd->type = name == "incr" ? CommandType::kIncr : CommandType::kDecr;
    cmd->noreply = t.NoReply();
    if (t[1].size() > kMaxKeyLength) return fail(ProtocolError::kBadCommandLine);
    cmd->key = t[1];
    if (!SafeStrtoull(t[2], &cmd->delta)) return fail(ProtocolError::kInvalidDelta);
    return done;
  }

  if (name == "delete") {
    if (n < 3 || n > 5) return fail(ProtocolError::kError);
    cmd->type = CommandType::kDelete;
    if (n > 3) {
      // memcached accepts only a literal "0" here; mcrouter forwards a client's exptime, so we
      // accept any number (a deliberate difference, see docs/protocol.md).
      int32_t hold = 0;
      const bool hold_ok = SafeStrtol32(t[2], &hold);
      cmd->noreply = t.NoReply();
      const bool valid =
          (n == 4 && (hold_ok || cmd->noreply)) || (n == 5 && hold_ok && cmd->noreply);
      if (!valid) return fail(ProtocolError::kDeleteUsage);
    }
    if (t[1].size() > kMaxKeyLength) return fail(ProtocolError::kBadCommandLine);
    cmd->key = t[1];
    return done;
  }

  if (name == "touch") {
    if (n != 4 && n != 5) return fail(ProtocolError::kError);
    cmd->type = CommandType::kTouch;
    cmd->noreply = t.NoReply();
    if (t[1].size() > kMaxKeyLength) return fail(ProtocolError::kBadCommandLine);
    cmd->key = t[1];
    if (!SafeStrtol32(t[2], &cmd->exptime)) return fail(ProtocolError::kInvalidExptime);
    return done;
  }

  if (const CommandType meta = MetaType(name); meta != CommandType::kInvalid) {
    return ParseMeta(meta, t, input, next, cmd);
  }

  if (name == "stats") {
    cmd->type = CommandType::kStats;
    if (n > 2) cmd->arg = t[1];
    return done;
  }

  if (name == "flush_all") {
    if (n < 2 || n > 4) return fail(ProtocolError::kError);
    cmd->type = CommandType::kFlushAll;
    cmd->noreply = t.NoReply();
    if (n != (cmd->noreply ? 3u : 2u)) {
      if (!SafeStrtol32(t[1], &cmd->exptime)) return fail(ProtocolError::kInvalidExptime);
      cmd->has_exptime = true;
    }
    return done;
  }

  if (name == "version") {
    cmd->type = CommandType::kVersion;
    return done;
  }
  if (name == "quit") {
    cmd->type = CommandType::kQuit;
    return done;
  }
  if (name == "shutdown") {
    cmd->type = CommandType::kShutdown;
    // "" = shut down now; "graceful"; anything else is an invalid mode (the whole rest of the
    // line, so that extra tokens never look like a valid mode).
    if (n == 3) {
      cmd->arg = t[1];
    } else if (n > 3) {
      cmd->arg = line.substr(static_cast<size_t>(t[1].data() - line.data()));
    }
    return done;
  }
  if (name == "verbosity") {
    if (n < 3 || n > 4) return fail(ProtocolError::kError);
    cmd->type = CommandType::kVerbosity;
    cmd->noreply = t.NoReply();
    if (!SafeStrtoul32(t[1], &cmd->verbosity)) return fail(ProtocolError::kBadCommandLine);
    return done;
  }
  if (name == "lease-get" || name == "metaget") {
    cmd->type = name == "metaget" ? CommandType::kMetaGet : CommandType::kLeaseGet;
    return fail(ProtocolError::kUnsupported);
  }

  // memcached drops connections that speak HTTP to it, but only for command names it has not
  // already branched on by their first letter.
  static constexpr std::string_view kBranchLetters = "gsacidtm";
  if (kBranchLetters.find(name[0]) == std::string_view::npos && StartsWith(t[n - 2], "HTTP/")) {
    return {ParseStatus::kClose, next};
  }
  return fail(ProtocolError::kError);
}

ParseResult Parser::ParseMeta(CommandType type, const Tokens& t, std::string_view input,
                              size_t next, Command* cmd) {
  const ParseResult done{ParseStatus::kCommand, next};
  auto fail = [&](ProtocolError error) {
    cmd->error = error;
    return done;
  };
  const size_t n = t.count;
  cmd->type = type;
  if (type == CommandType::kMetaNoop) return done;
  // memcached 1.6.18's process_meta_command, process_mget_command and friends, in order.
  if (type == CommandType::kMetaDebug) {
    if (n < 3 || t[1].size() > kMaxKeyLength) return fail(ProtocolError::kBadCommandLine);
    cmd->key = t[1];
    if (n > 3 && t[2] == "b") {
      cmd->meta.base64_key = true;
      if (!Base64Decode(cmd->key, &cmd->key_buffer)) return fail(ProtocolError::kBadCommandLine);
      cmd->key = cmd->key_buffer;
    }
    return done;
  }
  if (n < 3) return fail(ProtocolError::kError);
  if (t[1].size() > kMaxKeyLength) return fail(ProtocolError::kBadCommandLine);
  cmd->key = t[1];

  if (type != CommandType::kMetaStore) {
    if (n > kMaxMetaTokens) {
      return fail(type == CommandType::kMetaRetrieve ? ProtocolError::kMetaGetFlagsTooLong
                                                     : ProtocolError::kMetaFlagsTooLong);
    }
    ProtocolError e = PreparseMeta(t, 2, cmd);
    if (e != ProtocolError::kNone) {
      // md and ma report every preparse failure with one message.
      return fail(type == CommandType::kMetaRetrieve ? e : ProtocolError::kMetaInvalidOrDupFlag);
    }
    if (type == CommandType::kMetaDelete && cmd->meta.opaque_too_long) {
      return fail(ProtocolError::kMetaOpaqueTooLong);
    }
    if (type == CommandType::kMetaArithmetic) {
      const char mode = cmd->meta.mode;
      if (mode != 0 && mode != 'I' && mode != '+' && mode != 'D' && mode != '-') {
        return fail(ProtocolError::kMetaBadArithmeticMode);
      }
    }
    return done;
  }

  // ms <key> <datalen> <flags>*: errors after the length is known swallow the data block.
  if (n == 3) return fail(ProtocolError::kBadCommandLine);
  if (n > kMaxMetaTokens) return fail(ProtocolError::kMetaFlagsTooLong);
  int32_t length = 0;
  if (!SafeStrtol32(t[2], &length) || length < 0 || length > INT_MAX - 2) {
    return fail(ProtocolError::kBadCommandLine);
  }
  const size_t value_length = static_cast<size_t>(length);
  auto fail_and_swallow = [&](ProtocolError error) {
    swallow_ = value_length + 2;
    return fail(error);
  };
  if (ProtocolError e = PreparseMeta(t, 3, cmd); e != ProtocolError::kNone) {
    return fail_and_swallow(e);
  }
  if (cmd->meta.opaque_too_long) return fail_and_swallow(ProtocolError::kMetaOpaqueTooLong);
  switch (cmd->meta.mode) {
    case 0:
    case 'E':
    case 'A':
    case 'P':
    case 'R':
    case 'S':
      break;
    default:
      return fail_and_swallow(ProtocolError::kMetaBadSetMode);
  }
  if (ItemTotalSize(cmd->key.size(), cmd->meta.client_flags, value_length) >
      options_.item_size_max) {
    return fail_and_swallow(ProtocolError::kObjectTooLarge);
  }
  return ReadDataBlock(input, next, value_length, cmd);
}

ParseResult Parser::ReadDataBlock(std::string_view input, size_t next, size_t value_length,
                                  Command* cmd) {
  const size_t end = next + value_length + 2;
  if (input.size() < end) return {ParseStatus::kNeedMore, 0};
  if (input[end - 2] != '\r' || input[end - 1] != '\n') {
    cmd->error = ProtocolError::kBadDataChunk;
    return {ParseStatus::kCommand, end};
  }
  cmd->data = input.substr(next, value_length);
  return {ParseStatus::kCommand, end};
}

}  // namespace petracache::protocol
