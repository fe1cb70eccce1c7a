// Item metadata, the on-disk value record, and the liveness rules (expiry and flush_all) shared
// by every Store and by the RocksDB compaction filter.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace petracache::storage {

// Item state bits that the meta commands keep with an item (memcached's it_flags).
enum ItemBits : uint8_t {
  kItemStale = 1,      // invalidated by `md <key> I` (or `ms ... I`): readers see X and may win
  kItemTokenSent = 2,  // a client was handed the recache token (W); later readers see Z
  kItemKeyBinary = 4,  // stored by `ms ... b`: `mg ... k` returns the key base64-encoded
};

// What the store keeps beside each value. Times are Unix seconds.
struct ItemHeader {
  uint32_t flags = 0;
  uint8_t bits = 0;        // ItemBits; a plain write starts at 0
  int64_t exptime = 0;     // absolute expiry; 0 = never; expired when exptime <= now
  uint64_t cas = 0;        // unique, strictly increasing across restarts
  int64_t write_time = 0;  // when the item was last written (for delayed flush_all)
};

// memcached's flush_all state (settings.oldest_live / settings.oldest_cas): an item is flushed
// when oldest_cas != 0 and item.cas < oldest_cas, or when oldest_live != 0, oldest_live <= now
// and item.write_time <= oldest_live. Persisted by the store so it survives restarts.
struct FlushState {
  int64_t oldest_live = 0;
  uint64_t oldest_cas = 0;
  bool operator==(const FlushState&) const = default;
};

inline bool IsExpired(const ItemHeader& h, int64_t now) {
  return h.exptime != 0 && h.exptime <= now;
}

inline bool IsFlushed(const ItemHeader& h, const FlushState& f, int64_t now) {
  if (f.oldest_cas != 0 && h.cas < f.oldest_cas) return true;
  return f.oldest_live != 0 && f.oldest_live <= now && h.write_time <= f.oldest_live;
}

// The value record: a versioned header followed by the value bytes.
//   byte 0      format version (kRecordFormatV1 or kRecordFormatV2)
//   bytes 1-4   flags, little endian u32
//   bytes 5-12  exptime, little endian i64
//   bytes 13-20 cas, little endian u64
//   bytes 21-28 write_time, little endian i64
//   byte 29     V2 only: ItemBits
//   then        value
// Items without bits (every item a classic command writes) keep the V1 layout, so the common
// record is unchanged and older data reads as it always did.
inline constexpr uint8_t kRecordFormatV1 = 1;
inline constexpr uint8_t kRecordFormatV2 = 2;
inline constexpr size_t kRecordHeaderSize = 29;  // V1
inline constexpr size_t kMaxRecordHeaderSize = kRecordHeaderSize + 1;

// The size of header's encoded form: kRecordHeaderSize, or one more with bits set.
inline size_t RecordHeaderSize(const ItemHeader& header) {
  return header.bits == 0 ? kRecordHeaderSize : kMaxRecordHeaderSize;
}

// Writes the record's header (RecordHeaderSize(header) bytes) to out; returns that size.
size_t EncodeRecordHeader(const ItemHeader& header, char* out);
// Appends the encoded record to *out.
void EncodeRecord(const ItemHeader& header, std::string_view value, std::string* out);
// Decodes a record. Returns false for a record that is too short or of an unknown format.
// On success *value views into `record`.
[[nodiscard]] bool DecodeRecord(std::string_view record, ItemHeader* header,
                                std::string_view* value);

}  // namespace petracache::storage
