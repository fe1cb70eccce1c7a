// Reply encoding; the strings are memcached 1.6.18's, byte for byte.
#include "protocol/encoder.h"

#include <charconv>

#include "protocol/base64.h"

namespace petracache::protocol {
namespace {

void AppendDecimal(std::string* out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out->append(buf, static_cast<size_t>(end - buf));
}

}  // namespace

void AppendReply(std::string* out, Reply reply) {
  switch (reply) {
    case Reply::kStored:
      out->append("STORED\r\n");
      return;
    case Reply::kNotStored:
      out->append("NOT_STORED\r\n");
      return;
    case Reply::kExists:
      out->append("EXISTS\r\n");
      return;
    case Reply::kNotFound:
      out->append("NOT_FOUND\r\n");
      return;
    case Reply::kDeleted:
      out->append("DELETED\r\n");
      return;
    case Reply::kTouched:
      out->append("TOUCHED\r\n");
      return;
    case Reply::kOk:
      out->append("OK\r\n");
      return;
    case Reply::kEnd:
      out->append("END\r\n");
      return;
    case Reply::kReset:
      out->append("RESET\r\n");
      return;
  }
}

std::string_view ErrorText(ProtocolError error) {
  switch (error) {
    case ProtocolError::kNone:
      return "";
    case ProtocolError::kError:
      return "ERROR";
    case ProtocolError::kBadCommandLine:
      return "CLIENT_ERROR bad command line format";
    case ProtocolError::kBadDataChunk:
      return "CLIENT_ERROR bad data chunk";
    case ProtocolError::kObjectTooLarge:
      return "SERVER_ERROR object too large for cache";
    case ProtocolError::kInvalidExptime:
      return "CLIENT_ERROR invalid exptime argument";
    case ProtocolError::kInvalidDelta:
      return "CLIENT_ERROR invalid numeric delta argument";
    case ProtocolError::kNonNumeric:
      return "CLIENT_ERROR cannot increment or decrement non-numeric value";
    case ProtocolError::kDeleteUsage:
      return "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]";
    case ProtocolError::kShutdownDisabled:
      return "ERROR: shutdown not enabled";
    case ProtocolError::kInvalidShutdownMode:
      return "CLIENT_ERROR invalid shutdown mode";
    case ProtocolError::kFlushDisabled:
      return "CLIENT_ERROR flush_all not allowed";
    case ProtocolError::kUnsupported:
      return "SERVER_ERROR unsupported command";
    case ProtocolError::kStorageFailure:
      return "SERVER_ERROR storage failure";
    case ProtocolError::kOutOfMemory:
      return "SERVER_ERROR out of memory storing object";
    case ProtocolError::kBusy:
      return "SERVER_ERROR 307 busy";
    case ProtocolError::kMetaInvalidFlag:
      return "CLIENT_ERROR invalid flag";
    case ProtocolError::kMetaDuplicateFlag:
      return "CLIENT_ERROR duplicate flag";
    case ProtocolError::kMetaInvalidOrDupFlag:
      return "CLIENT_ERROR invalid or duplicate flag";
    case ProtocolError::kMetaBadToken:
      return "CLIENT_ERROR bad token in command line format";
    case ProtocolError::kMetaGetFlagsTooLong:
      return "CLIENT_ERROR options flags are too long";
    case ProtocolError::kMetaFlagsTooLong:
      return "CLIENT_ERROR options flags too long";
    case ProtocolError::kMetaOpaqueTooLong:
      return "CLIENT_ERROR opaque token too long";
    case ProtocolError::kMetaBadKeyEncoding:
      return "CLIENT_ERROR error decoding key";
    case ProtocolError::kMetaModeLength:
      return "CLIENT_ERROR incorrect length for M token";
    case ProtocolError::kMetaBadSetMode:
      return "CLIENT_ERROR invalid mode for ms M token";
    case ProtocolError::kMetaBadArithmeticMode:
      return "CLIENT_ERROR invalid mode for ma M token";
    case ProtocolError::kMetaBadInitial:
      return "CLIENT_ERROR invalid numeric initial value";
    case ProtocolError::kMetaBadDelta:
      return "CLIENT_ERROR invalid numeric delta value";
  }
  return "ERROR";
}

void AppendError(std::string* out, ProtocolError error) {
  if (error == ProtocolError::kNone) return;
  out->append(ErrorText(error));
  out->append("\r\n");
}

void AppendValue(std::string* out, std::string_view key, uint32_t flags, std::string_view data,
                 const uint64_t* cas) {
  out->append("VALUE ");
  out->append(key);
  out->push_back(' ');
  AppendDecimal(out, flags);
  out->push_back(' ');
  AppendDecimal(out, data.size());
  if (cas != nullptr) {
    out->push_back(' ');
    AppendDecimal(out, *cas);
  }
  out->append("\r\n");
  out->append(data);
  out->append("\r\n");
}

void AppendMetaStatus(std::string* out, MetaStatus status) {
  static constexpr std::string_view kCodes[] = {"HD", "EN", "NF", "NS", "EX", "MN"};
  out->append(kCodes[static_cast<size_t>(status)]);
}

void AppendMetaValueStatus(std::string* out, size_t length) {
  out->append("VA ");
  AppendDecimal(out, length);
}

void AppendMetaFlag(std::string* out, char flag) {
  out->push_back(' ');
  out->push_back(flag);
}

void AppendMetaFlag(std::string* out, char flag, uint64_t value) {
  AppendMetaFlag(out, flag);
  AppendDecimal(out, value);
}

void AppendMetaFlag(std::string* out, char flag, int64_t value) {
  AppendMetaFlag(out, flag);
  if (value < 0) {
    out->push_back('-');
    AppendDecimal(out, static_cast<uint64_t>(0) - static_cast<uint64_t>(value));
  } else {
    AppendDecimal(out, static_cast<uint64_t>(value));
  }
}

void AppendMetaToken(std::string* out, std::string_view token) {
  out->push_back(' ');
  out->append(token);
}

void AppendMetaKey(std::string* out, std::string_view key, bool binary) {
  AppendMetaFlag(out, 'k');
  if (!binary) {
    out->append(key);
    return;
  }
  Base64Encode(key, out);
  AppendMetaFlag(out, 'b');
}

void AppendMetaDebug(std::string* out, std::string_view key, bool binary,
                     const MetaDebugInfo& info) {
  out->append("ME ");
  if (binary) {
    Base64Encode(key, out);
  } else {
    out->append(key);
  }
  out->append(" exp=");
  if (info.exp < 0) {
    out->push_back('-');
    AppendDecimal(out, static_cast<uint64_t>(0) - static_cast<uint64_t>(info.exp));
  } else {
    AppendDecimal(out, static_cast<uint64_t>(info.exp));
  }
  out->append(" la=");
  AppendDecimal(out, info.since_write);
  out->append(" cas=");
  AppendDecimal(out, info.cas);
  out->append(" cls=");
  AppendDecimal(out, info.slab_class);
  out->append(" size=");
  AppendDecimal(out, info.size);
  out->append("\r\n");
}

void AppendNumber(std::string* out, uint64_t number) {
  AppendDecimal(out, number);
  out->append("\r\n");
}

void AppendVersion(std::string* out, std::string_view text) {
  out->append("VERSION ");
  out->append(text);
  out->append("\r\n");
}

void AppendStat(std::string* out, std::string_view name, std::string_view value) {
  out->append("STAT ");
  out->append(name);
  out->push_back(' ');
  out->append(value);
  out->append("\r\n");
}

void AppendStat(std::string* out, std::string_view name, uint64_t value) {
  out->append("STAT ");
  out->append(name);
  out->push_back(' ');
  AppendDecimal(out, value);
  out->append("\r\n");
}

void AppendStat(std::string* out, std::string_view name, int64_t value) {
  out->append("STAT ");
  out->append(name);
  out->push_back(' ');
  if (value < 0) {
    out->push_back('-');
    AppendDecimal(out, static_cast<uint64_t>(0) - static_cast<uint64_t>(value));
  } else {
    AppendDecimal(out, static_cast<uint64_t>(value));
  }
  out->append("\r\n");
}

}  // namespace petracache::protocol
