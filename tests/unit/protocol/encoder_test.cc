// Tests for protocol/encoder.
#include "protocol/encoder.h"

#include <gtest/gtest.h>

namespace petracache::protocol {
namespace {

TEST(EncoderTest, ValueLinesWithAndWithoutCas) {
  std::string out;
  AppendValue(&out, "k", 5, "abc", nullptr);
  uint64_t cas = 42;
  AppendValue(&out, "k", 4294967295u, "", &cas);
  AppendReply(&out, Reply::kEnd);
  EXPECT_EQ(out, "VALUE k 5 3\r\nabc\r\nVALUE k 4294967295 0 42\r\n\r\nEND\r\n");
}

TEST(EncoderTest, ErrorsAreMemcachedsStrings) {
  std::string out;
  AppendError(&out, ProtocolError::kNone);
  EXPECT_EQ(out, "");
  AppendError(&out, ProtocolError::kDeleteUsage);
  EXPECT_EQ(out, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
  out.clear();
  AppendError(&out, ProtocolError::kObjectTooLarge);
  EXPECT_EQ(out, "SERVER_ERROR object too large for cache\r\n");
}

TEST(EncoderTest, NumbersAndStats) {
  std::string out;
  AppendNumber(&out, UINT64_MAX);
  AppendStat(&out, "pid", uint64_t{12});
  AppendStat(&out, "neg", int64_t{-3});
  AppendStat(&out, "version", "1.6.18");
  AppendVersion(&out, "1.6.18 petracache-0.1.0");
  EXPECT_EQ(out,
            "18446744073709551615\r\nSTAT pid 12\r\nSTAT neg -3\r\nSTAT version 1.6.18\r\n"
            "VERSION 1.6.18 petracache-0.1.0\r\n");
}

}  // namespace
}  // namespace petracache::protocol
