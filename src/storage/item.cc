// The value record codec: a fixed little-endian header in front of the value bytes.
#include "storage/item.h"

namespace petracache::storage {
namespace {

// Explicit byte shifts so the format is little endian on every host.
char* PutFixed32(uint32_t v, char* out) {
  for (int i = 0; i < 4; ++i) *out++ = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

char* PutFixed64(uint64_t v, char* out) {
  for (int i = 0; i < 8; ++i) *out++ = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

uint32_t GetFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

}  // namespace

size_t EncodeRecordHeader(const ItemHeader& header, char* out) {
  const bool with_bits = header.bits != 0;
  *out++ = static_cast<char>(with_bits ? kRecordFormatV2 : kRecordFormatV1);
  out = PutFixed32(header.flags, out);
  out = PutFixed64(static_cast<uint64_t>(header.exptime), out);
  out = PutFixed64(header.cas, out);
  out = PutFixed64(static_cast<uint64_t>(header.write_time), out);
  if (with_bits) *out = static_cast<char>(header.bits);
  return RecordHeaderSize(header);
}

void EncodeRecord(const ItemHeader& header, std::string_view value, std::string* out) {
  char head[kMaxRecordHeaderSize];
  const size_t head_size = EncodeRecordHeader(header, head);
  out->reserve(out->size() + head_size + value.size());
  out->append(head, head_size);
  out->append(value);
}

bool DecodeRecord(std::string_view record, ItemHeader* header, std::string_view* value) {
  if (record.size() < kRecordHeaderSize) return false;
  const uint8_t format = static_cast<uint8_t>(record[0]);
  size_t head_size = kRecordHeaderSize;
  if (format == kRecordFormatV2) {
    head_size = kMaxRecordHeaderSize;
    if (record.size() < head_size) return false;
  } else if (format != kRecordFormatV1) {
    return false;
  }
  const char* p = record.data();
  header->flags = GetFixed32(p + 1);
  header->exptime = static_cast<int64_t>(GetFixed64(p + 5));
  header->cas = GetFixed64(p + 13);
  header->write_time = static_cast<int64_t>(GetFixed64(p + 21));
  header->bits = format == kRecordFormatV2 ? static_cast<uint8_t>(p[29]) : 0;
  *value = record.substr(head_size);
  return true;
}

}  // namespace petracache::storage
