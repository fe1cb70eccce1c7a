// Encoder: appends memcached text-protocol replies to an output buffer. Every reply string the
// server sends is spelled here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "petracache/command.h"

namespace petracache::protocol {

enum class Reply {
  kStored,
  kNotStored,
  kExists,
  kNotFound,
  kDeleted,
  kTouched,
  kOk,
  kEnd,
  kReset,
};

// "STORED\r\n" etc.
void AppendReply(std::string* out, Reply reply);
// The exact memcached error line for `error` (kNone appends nothing).
void AppendError(std::string* out, ProtocolError error);
std::string_view ErrorText(ProtocolError error);
// "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>\r\n". cas == nullptr omits it (get, gat).
void AppendValue(std::string* out, std::string_view key, uint32_t flags, std::string_view data,
                 const uint64_t* cas);
// Meta replies are built from pieces: a status ("HD", or "VA <length>" before a value), then
// return flags (" c123", " kfoo", " O<opaque>", " W"), then "\r\n" (AppendMetaEnd), then for
// VA the data block (AppendMetaData).
enum class MetaStatus { kHd, kEn, kNf, kNs, kEx, kMn };
void AppendMetaStatus(std::string* out, MetaStatus status);
void AppendMetaValueStatus(std::string* out, size_t length);
void AppendMetaFlag(std::string* out, char flag);
void AppendMetaFlag(std::string* out, char flag, uint64_t value);
void AppendMetaFlag(std::string* out, char flag, int64_t value);
// A request token echoed verbatim (the opaque "O..." token).
void AppendMetaToken(std::string* out, std::string_view token);
// " k<key>", or " k<base64 key> b" for a binary key.
void AppendMetaKey(std::string* out, std::string_view key, bool binary);
inline void AppendMetaEnd(std::string* out) { out->append("\r\n"); }
inline void AppendMetaData(std::string* out, std::string_view data) {
  out->append(data);
  out->append("\r\n");
}
// The `me` line: "ME <key> exp=<exp> la=<since_write> cas=<cas> cls=<class> size=<size>\r\n".
struct MetaDebugInfo {
  int64_t exp = -1;  // memcached prints now - exptime, or -1 without one
  uint64_t since_write = 0;
  uint64_t cas = 0;
  uint64_t slab_class = 0;
  uint64_t size = 0;
};
void AppendMetaDebug(std::string* out, std::string_view key, bool binary,
                     const MetaDebugInfo& info);
// incr/decr result: "<number>\r\n".
void AppendNumber(std::string* out, uint64_t number);
// "VERSION <text>\r\n".
void AppendVersion(std::string* out, std::string_view text);
// "STAT <name> <value>\r\n".
void AppendStat(std::string* out, std::string_view name, std::string_view value);
void AppendStat(std::string* out, std::string_view name, uint64_t value);
void AppendStat(std::string* out, std::string_view name, int64_t value);

}  // namespace petracache::protocol
