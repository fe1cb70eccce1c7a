// Command: one parsed memcached text-protocol request, with keys and data as views into the
// connection's input buffer.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace petracache {

enum class CommandType : uint8_t {
  kInvalid,  // the parser already decided the reply: see Command::error
  // Retrieval.
  kGet,
  kGets,
  kGat,
  kGats,
  // Storage (carry a data block).
  kSet,
  kAdd,
  kReplace,
  kAppend,
  kPrepend,
  kCas,
  // Other single-key commands.
  kDelete,
  kIncr,
  kDecr,
  kTouch,
  // Server commands.
  kFlushAll,
  kVersion,
  kVerbosity,
  kQuit,
  kShutdown,
  kStats,
  // mcrouter's extensions.
  kLeaseGet,
  kLeaseSet,
  kMetaGet,  // mcrouter's "metaget", not memcached's mg
  // memcached's meta commands: mn, mg, ms, md, ma, me.
  kMetaNoop,
  kMetaRetrieve,
  kMetaStore,
  kMetaDelete,
  kMetaArithmetic,
  kMetaDebug,
};

// Every error reply the text protocol can give, so the exact strings live in one place
// (protocol/encoder.cc).
enum class ProtocolError : uint8_t {
  kNone,
  kError,                // "ERROR"
  kBadCommandLine,       // "CLIENT_ERROR bad command line format"
  kBadDataChunk,         // "CLIENT_ERROR bad data chunk"
  kObjectTooLarge,       // "SERVER_ERROR object too large for cache"
  kInvalidExptime,       // "CLIENT_ERROR invalid exptime argument"
  kInvalidDelta,         // "CLIENT_ERROR invalid numeric delta argument"
  kNonNumeric,           // "CLIENT_ERROR cannot increment or decrement non-numeric value"
  kDeleteUsage,          // "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
  kShutdownDisabled,     // "ERROR: shutdown not enabled"
  kInvalidShutdownMode,  // "CLIENT_ERROR invalid shutdown mode"
  kFlushDisabled,        // "CLIENT_ERROR flush_all not allowed"
  kUnsupported,          // "SERVER_ERROR unsupported command" (mcrouter extensions we lack)
  kStorageFailure,       // "SERVER_ERROR storage failure"
  kOutOfMemory,          // "SERVER_ERROR out of memory storing object"
  kBusy,                 // "SERVER_ERROR 307 busy" (mcrouter's busy code: overload, retry)
  // Meta commands.
  kMetaInvalidFlag,        // "CLIENT_ERROR invalid flag"
  kMetaDuplicateFlag,      // "CLIENT_ERROR duplicate flag"
  kMetaInvalidOrDupFlag,   // "CLIENT_ERROR invalid or duplicate flag" (md, ma)
  kMetaBadToken,           // "CLIENT_ERROR bad token in command line format"
  kMetaGetFlagsTooLong,    // "CLIENT_ERROR options flags are too long" (mg)
  kMetaFlagsTooLong,       // "CLIENT_ERROR options flags too long" (ms, md, ma)
  kMetaOpaqueTooLong,      // "CLIENT_ERROR opaque token too long"
  kMetaBadKeyEncoding,     // "CLIENT_ERROR error decoding key"
  kMetaModeLength,         // "CLIENT_ERROR incorrect length for M token"
  kMetaBadSetMode,         // "CLIENT_ERROR invalid mode for ms M token"
  kMetaBadArithmeticMode,  // "CLIENT_ERROR invalid mode for ma M token"
  kMetaBadInitial,         // "CLIENT_ERROR invalid numeric initial value"
  kMetaBadDelta,           // "CLIENT_ERROR invalid numeric delta value"
};

// memcached's limits on meta requests: at most this many tokens in all (the command, key,
// flags and the terminal token memcached counts), and opaque tokens ("O...") this long.
inline constexpr size_t kMaxMetaTokens = 20;
inline constexpr size_t kMaxMetaOpaqueLength = 32;

// A meta command's flags, as memcached's _meta_flag_preparse reads them. `tokens` holds every
// flag token after the key (and ms's length) in request order, as sent ("v", "T30", "O123"):
// replies echo the return flags in that order.
struct MetaFlags {
  std::array<std::string_view, kMaxMetaTokens> tokens;
  size_t count = 0;
  bool value = false;            // v
  bool quiet = false;            // q: suppress the nominal reply (HD; EN for mg)
  bool base64_key = false;       // b: the key was sent base64-encoded (Command::key is decoded)
  bool invalidate = false;       // I
  bool has_cas = false;          // C<cas>
  bool new_ttl = false;          // T<ttl>
  bool vivify = false;           // N<ttl>
  bool recache = false;          // R<ttl>
  bool opaque_too_long = false;  // an O token over kMaxMetaOpaqueLength: reported by command
  char mode = 0;                 // M<mode>
  int32_t ttl = 0;               // T, as sent (narrowed to 32 bits like every exptime)
  int32_t vivify_ttl = 0;        // N
  int32_t recache_ttl = 0;       // R
  uint32_t client_flags = 0;     // F
  uint64_t cas = 0;              // C
  uint64_t delta = 1;            // D (ma)
  uint64_t initial = 0;          // J (ma)

  void Clear() {
    count = 0;
    value = quiet = base64_key = invalidate = has_cas = new_ttl = vivify = recache = false;
    opaque_too_long = false;
    mode = 0;
    ttl = vivify_ttl = recache_ttl = 0;
    client_flags = 0;
    cas = 0;
    delta = 1;
    initial = 0;
  }
};

// What the protocol layer hands the engine. All views point into the input buffer and are
// valid until the caller consumes the bytes the parser reported. A Command object is meant to
// be reused across requests so `keys` keeps its capacity (no allocation per request).
struct Command {
  CommandType type = CommandType::kInvalid;
  // kNone for a well-formed request. Otherwise the reply is this error. `type` then still names
  // the command when it matters for side effects (a too-large kSet deletes the old value).
  ProtocolError error = ProtocolError::kNone;
  bool noreply = false;

  // Single-key commands, and the key of a rejected too-large set.
  std::string_view key;
  // Retrieval commands: every key in request order. If an over-long key appears, the parser
  // stops at it and sets error = kBadCommandLine; keys before it are still here because
  // memcached looks them up (a gat touches them) before replying with the error alone.
  std::vector<std::string_view> keys;

  uint32_t flags = 0;
  // exptime / gat exptime / flush_all delay exactly as sent, already narrowed to 32 bits the
  // way memcached's safe_strtol does (-1 and 4294967295 both arrive as -1).
  int32_t exptime = 0;
  bool has_exptime = false;  // flush_all: a delay was given
  uint64_t cas_unique = 0;   // cas
  uint64_t delta = 0;        // incr / decr
  uint32_t verbosity = 0;
  std::string_view data;  // storage commands: the value bytes, without the trailing \r\n
  std::string_view arg;   // stats: the sub-command ("" for plain stats); shutdown: mode

  // Meta commands only (type kMetaRetrieve ... kMetaDebug); key is the decoded key when the
  // b flag was given, then held in key_buffer.
  MetaFlags meta;
  std::string key_buffer;

  void Clear() {
    type = CommandType::kInvalid;
    error = ProtocolError::kNone;
    noreply = false;
    key = {};
    keys.clear();
    flags = 0;
    exptime = 0;
    has_exptime = false;
    cas_unique = 0;
    delta = 0;
    verbosity = 0;
    data = {};
    arg = {};
    meta.Clear();
  }
};

// memcached's limits.
inline constexpr size_t kMaxKeyLength = 250;
// A request line without a newline longer than this closes the connection (except get/gets).
inline constexpr size_t kMaxCommandLine = 2048;
inline constexpr size_t kDefaultItemSizeMax = 1024 * 1024;
// memcached counts its item header in the item size limit: 48 bytes of header, 8 of CAS, the
// key and its NUL, 4 bytes of flags when non-zero, and the value's trailing \r\n.
inline constexpr size_t ItemTotalSize(size_t key_length, uint32_t flags, size_t value_length) {
  return 48 + 8 + key_length + 1 + (flags != 0 ? 4 : 0) + value_length + 2;
}

}  // namespace petracache
