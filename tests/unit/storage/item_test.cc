// Tests for the value record codec in storage/item.h.
#include "storage/item.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace petracache::storage {
namespace {

TEST(RecordTest, RoundTrip) {
  ItemHeader in{.flags = 0xdeadbeef,
                .exptime = 1'700'000'123,
                .cas = 0x0102030405060708,
                .write_time = 1'700'000'000};
  const std::string value("hello\0world\r\n", 13);
  std::string record;
  EncodeRecord(in, value, &record);
  ASSERT_EQ(record.size(), kRecordHeaderSize + value.size());

  ItemHeader out;
  std::string_view out_value;
  ASSERT_TRUE(DecodeRecord(record, &out, &out_value));
  EXPECT_EQ(out.flags, in.flags);
  EXPECT_EQ(out.exptime, in.exptime);
  EXPECT_EQ(out.cas, in.cas);
  EXPECT_EQ(out.write_time, in.write_time);
  EXPECT_EQ(out_value, value);
}

TEST(RecordTest, ExtremeValuesAndEmptyValue) {
  ItemHeader in{.flags = std::numeric_limits<uint32_t>::max(),
                .exptime = std::numeric_limits<int64_t>::min(),
                .cas = std::numeric_limits<uint64_t>::max(),
                .write_time = -1};
  std::string record;
  EncodeRecord(in, "", &record);
  ASSERT_EQ(record.size(), kRecordHeaderSize);
  ItemHeader out;
  std::string_view value = "not empty";
  ASSERT_TRUE(DecodeRecord(record, &out, &value));
  EXPECT_EQ(out.flags, in.flags);
  EXPECT_EQ(out.exptime, in.exptime);
  EXPECT_EQ(out.cas, in.cas);
  EXPECT_EQ(out.write_time, in.write_time);
  EXPECT_TRUE(value.empty());
}

TEST(RecordTest, LayoutIsLittleEndian) {
  std::string record;
  EncodeRecord({.flags = 0x04030201,
                .exptime = 0x0c0b0a0908070605,
                .cas = 0x14131211100f0e0d,
                .write_time = 0x1c1b1a1918171615},
               "v", &record);
  ASSERT_EQ(record.size(), 30u);
  EXPECT_EQ(static_cast<uint8_t>(record[0]), kRecordFormatV1);
  for (size_t i = 1; i < kRecordHeaderSize; ++i) {
    EXPECT_EQ(static_cast<uint8_t>(record[i]), i) << "byte " << i;
  }
  EXPECT_EQ(record[29], 'v');
}

TEST(RecordTest, AppendsToExistingBuffer) {
  std::string record = "prefix";
  EncodeRecord({}, "x", &record);
  EXPECT_EQ(record.size(), 6 + kRecordHeaderSize + 1);
  EXPECT_EQ(record.substr(0, 6), "prefix");
}

TEST(RecordTest, RejectsShortRecords) {
  std::string record;
  EncodeRecord({.flags = 1}, "", &record);
  ItemHeader header;
  std::string_view value;
  for (size_t size = 0; size < kRecordHeaderSize; ++size) {
    EXPECT_FALSE(DecodeRecord(std::string_view(record).substr(0, size), &header, &value))
        << "size " << size;
  }
}

TEST(RecordTest, RejectsUnknownFormat) {
  std::string record;
  EncodeRecord({}, "value", &record);
  ItemHeader header;
  std::string_view value;
  for (int format : {0, 3, 0x7f, 0xff}) {
    record[0] = static_cast<char>(format);
    EXPECT_FALSE(DecodeRecord(record, &header, &value)) << "format " << format;
  }
}

TEST(RecordTest, StateBitsUseTheSecondFormatOnlyWhenSet) {
  // Without bits the record is the first format, byte for byte: old data and new agree.
  std::string plain;
  EncodeRecord({.flags = 5, .exptime = 9, .cas = 3, .write_time = 4}, "v", &plain);
  ASSERT_EQ(plain.size(), kRecordHeaderSize + 1);
  EXPECT_EQ(static_cast<uint8_t>(plain[0]), kRecordFormatV1);

  std::string marked;
  const ItemHeader in{
      .flags = 5, .bits = kItemStale | kItemTokenSent, .exptime = 9, .cas = 3, .write_time = 4};
  EncodeRecord(in, "value", &marked);
  ASSERT_EQ(marked.size(), kMaxRecordHeaderSize + 5);
  EXPECT_EQ(static_cast<uint8_t>(marked[0]), kRecordFormatV2);
  ItemHeader out;
  std::string_view value;
  ASSERT_TRUE(DecodeRecord(marked, &out, &value));
  EXPECT_EQ(out.bits, in.bits);
  EXPECT_EQ(out.flags, 5u);
  EXPECT_EQ(out.exptime, 9);
  EXPECT_EQ(out.cas, 3u);
  EXPECT_EQ(out.write_time, 4);
  EXPECT_EQ(value, "value");
  // A second-format record cut inside its header is rejected, not read with a short value.
  EXPECT_FALSE(DecodeRecord(std::string_view(marked).substr(0, kRecordHeaderSize), &out, &value));
  ASSERT_TRUE(DecodeRecord(plain, &out, &value));
  EXPECT_EQ(out.bits, 0);
}

TEST(LivenessTest, ExpiryAndFlushRules) {
  ItemHeader h{.exptime = 100, .cas = 7, .write_time = 50};
  EXPECT_FALSE(IsExpired(h, 99));
  EXPECT_TRUE(IsExpired(h, 100));
  EXPECT_FALSE(IsExpired({.exptime = 0}, 1'000'000'000));

  EXPECT_FALSE(IsFlushed(h, {}, 1000));
  EXPECT_TRUE(IsFlushed(h, {.oldest_cas = 8}, 0));
  EXPECT_FALSE(IsFlushed(h, {.oldest_cas = 7}, 0));
  // Delayed flush: nothing dies before oldest_live is reached.
  EXPECT_FALSE(IsFlushed(h, {.oldest_live = 60}, 59));
  EXPECT_TRUE(IsFlushed(h, {.oldest_live = 60}, 60));
  EXPECT_TRUE(IsFlushed(h, {.oldest_live = 50}, 60));
  EXPECT_FALSE(IsFlushed(h, {.oldest_live = 49}, 60));
}

}  // namespace
}  // namespace petracache::storage
