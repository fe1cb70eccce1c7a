// Tests for protocol/numbers: the edge cases memcached's safe_strto* accept or reject.
#include "protocol/numbers.h"

#include <gtest/gtest.h>

namespace petracache::protocol {
namespace {

TEST(NumbersTest, Strtoul32AcceptsWhatMemcachedAccepts) {
  uint32_t v;
  EXPECT_TRUE(SafeStrtoul32("0", &v));
  EXPECT_EQ(v, 0u);
  EXPECT_TRUE(SafeStrtoul32("4294967295", &v));
  EXPECT_EQ(v, 4294967295u);
  EXPECT_TRUE(SafeStrtoul32("4294967296", &v));  // silently narrowed, as memcached 1.6.18
  EXPECT_EQ(v, 0u);
  EXPECT_TRUE(SafeStrtoul32("+7", &v));
  EXPECT_EQ(v, 7u);
  EXPECT_TRUE(SafeStrtoul32("12\t", &v));
  EXPECT_EQ(v, 12u);
  EXPECT_TRUE(SafeStrtoul32("-0", &v));
  EXPECT_FALSE(SafeStrtoul32("-1", &v));
  EXPECT_FALSE(SafeStrtoul32("", &v));
  EXPECT_FALSE(SafeStrtoul32("abc", &v));
  EXPECT_FALSE(SafeStrtoul32("12abc", &v));
  EXPECT_FALSE(SafeStrtoul32("18446744073709551616", &v));
}

TEST(NumbersTest, Strtoull) {
  uint64_t v;
  EXPECT_TRUE(SafeStrtoull("18446744073709551615", &v));
  EXPECT_EQ(v, UINT64_MAX);
  EXPECT_FALSE(SafeStrtoull("18446744073709551616", &v));
  EXPECT_FALSE(SafeStrtoull("-5", &v));
  EXPECT_TRUE(SafeStrtoull("-0", &v));
  EXPECT_EQ(v, 0u);
  EXPECT_FALSE(SafeStrtoull("x", &v));
}

TEST(NumbersTest, Strtol32TruncatesLikeMemcached) {
  int32_t v;
  EXPECT_TRUE(SafeStrtol32("-1", &v));
  EXPECT_EQ(v, -1);
  EXPECT_TRUE(SafeStrtol32("4294967295", &v));  // mcrouter's unsigned -1
  EXPECT_EQ(v, -1);
  EXPECT_TRUE(SafeStrtol32("2592000", &v));
  EXPECT_EQ(v, 2592000);
  EXPECT_TRUE(SafeStrtol32("-3000000000", &v));
  EXPECT_EQ(v, 1294967296);
  EXPECT_FALSE(SafeStrtol32("9223372036854775808", &v));  // strtol ERANGE
  EXPECT_TRUE(SafeStrtol32("-9223372036854775808", &v));
  EXPECT_FALSE(SafeStrtol32("abc", &v));
  EXPECT_FALSE(SafeStrtol32("1x", &v));
}

TEST(NumbersTest, StoredNumbersParseLikeIncr) {
  uint64_t v;
  EXPECT_TRUE(ParseStoredNumber("12", &v));
  EXPECT_EQ(v, 12u);
  EXPECT_TRUE(ParseStoredNumber(" 12", &v));
  EXPECT_EQ(v, 12u);
  EXPECT_TRUE(ParseStoredNumber("99 ", &v));  // decr's space padding
  EXPECT_EQ(v, 99u);
  EXPECT_TRUE(ParseStoredNumber("12 34", &v));
  EXPECT_EQ(v, 12u);
  EXPECT_FALSE(ParseStoredNumber("", &v));
  EXPECT_FALSE(ParseStoredNumber("  ", &v));
  EXPECT_FALSE(ParseStoredNumber("-12", &v));
  EXPECT_FALSE(ParseStoredNumber("12abc", &v));
  EXPECT_FALSE(ParseStoredNumber("99999999999999999999", &v));
}

}  // namespace
}  // namespace petracache::protocol
