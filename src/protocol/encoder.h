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
// incr/decr result: "<number>\r\n".
void AppendNumber(std::string* out, uint64_t number);
// "VERSION <text>\r\n".
void AppendVersion(std::string* out, std::string_view text);
// "STAT <name> <value>\r\n".
void AppendStat(std::string* out, std::string_view name, std::string_view value);
void AppendStat(std::string* out, std::string_view name, uint64_t value);
void AppendStat(std::string* out, std::string_view name, int64_t value);

}  // namespace petracache::protocol
