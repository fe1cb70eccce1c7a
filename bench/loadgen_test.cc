// Tests of the load generator's parts: histogram accuracy, the Zipf sampler's distribution, key
// naming, and reply checking (fed at every split point, as a socket delivers it).
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "histogram.h"
#include "key_distribution.h"
#include "reply_reader.h"

namespace petracache::bench {
namespace {

TEST(HistogramTest, BucketsAreContiguousAndOrdered) {
  uint64_t expected_low = 0;
  for (size_t i = 0; i < 40 * Histogram::kHalf; ++i) {
    EXPECT_EQ(Histogram::LowestOf(i), expected_low) << i;
    EXPECT_GE(Histogram::HighestOf(i), Histogram::LowestOf(i));
    EXPECT_EQ(Histogram::IndexOf(Histogram::LowestOf(i)), i);
    EXPECT_EQ(Histogram::IndexOf(Histogram::HighestOf(i)), i);
    expected_low = Histogram::HighestOf(i) + 1;
  }
  EXPECT_LT(Histogram::IndexOf(UINT64_MAX), Histogram::kBuckets);
}

TEST(HistogramTest, RelativeErrorIsBounded) {
  for (uint64_t v = 1; v < (uint64_t{1} << 40); v = v * 3 + 7) {
    const size_t i = Histogram::IndexOf(v);
    const double width = static_cast<double>(Histogram::HighestOf(i) - Histogram::LowestOf(i));
    EXPECT_LE(width / static_cast<double>(v), 1.0 / static_cast<double>(Histogram::kHalf)) << v;
  }
}

TEST(HistogramTest, Percentiles) {
  Histogram h;
  EXPECT_EQ(h.Percentile(50), 0u);
  for (uint64_t v = 1; v <= 100000; ++v) h.Record(v * 1000);  // 1 us .. 100 ms
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_EQ(h.max(), 100'000'000u);
  EXPECT_EQ(h.min(), 1000u);
  const auto near = [](uint64_t got, double want) {
    return std::fabs(static_cast<double>(got) - want) / want < 0.01;
  };
  EXPECT_TRUE(near(h.Percentile(50), 50e6)) << h.Percentile(50);
  EXPECT_TRUE(near(h.Percentile(99), 99e6)) << h.Percentile(99);
  EXPECT_TRUE(near(h.Percentile(99.9), 99.9e6)) << h.Percentile(99.9);
  EXPECT_EQ(h.Percentile(100), h.max());
  // Reported values never undershoot the true percentile.
  EXPECT_GE(h.Percentile(50), 50'000'000u);

  Histogram other;
  other.Record(5);
  h.Merge(other);
  EXPECT_EQ(h.count(), 100001u);
  EXPECT_EQ(h.min(), 5u);
}

TEST(ZipfTest, FrequenciesFollowThePowerLaw) {
  const uint64_t n = 1000;
  for (double exponent : {0.5, 0.99, 1.0, 1.2}) {
    ZipfSampler sampler(n, exponent);
    Rng rng(42);
    std::vector<uint64_t> counts(n, 0);
    const int samples = 2'000'000;
    for (int i = 0; i < samples; ++i) {
      const uint64_t rank = sampler.Sample(rng);
      ASSERT_LT(rank, n);
      ++counts[rank];
    }
    double norm = 0;
    for (uint64_t k = 1; k <= n; ++k) norm += std::pow(static_cast<double>(k), -exponent);
    for (uint64_t k : {1, 2, 10, 100}) {
      const double want = samples * std::pow(static_cast<double>(k), -exponent) / norm;
      EXPECT_NEAR(static_cast<double>(counts[k - 1]), want, 5 * std::sqrt(want) + 1)
          << "exponent " << exponent << " rank " << k;
    }
  }
}

TEST(KeyChooserTest, ZipfScattersRanksOverTheWholeSpace) {
  const uint64_t keys = 12345;
  KeyChooser chooser(keys, true, 0.99);
  Rng rng(7);
  std::vector<bool> seen(keys, false);
  for (int i = 0; i < 200000; ++i) {
    const uint64_t k = chooser.Next(rng);
    ASSERT_LT(k, keys);
    seen[k] = true;
  }
  // The most popular keys are not all at the start of the id space.
  uint64_t seen_high = 0;
  for (uint64_t k = keys / 2; k < keys; ++k) seen_high += seen[k] ? 1 : 0;
  EXPECT_GT(seen_high, keys / 8);

  bool zipf = false;
  double exponent = 0;
  EXPECT_TRUE(KeyChooser::ParseSpec("zipf:1.2", &zipf, &exponent));
  EXPECT_TRUE(zipf);
  EXPECT_DOUBLE_EQ(exponent, 1.2);
  EXPECT_TRUE(KeyChooser::ParseSpec("uniform", &zipf, &exponent));
  EXPECT_FALSE(zipf);
  EXPECT_FALSE(KeyChooser::ParseSpec("zipf:", &zipf, &exponent));
  EXPECT_FALSE(KeyChooser::ParseSpec("zipf:-1", &zipf, &exponent));
  EXPECT_FALSE(KeyChooser::ParseSpec("pareto", &zipf, &exponent));
}

TEST(KeyChooserTest, RankNamesTheKeysPopularity) {
  const uint64_t keys = 10000;
  KeyChooser chooser(keys, true, 0.99);
  Rng rng(11);
  // The same rank always maps to the same key, and low ranks are drawn far more often.
  std::vector<int64_t> key_of_rank(keys, -1);
  uint64_t top_ten = 0;
  const int draws = 100000;
  for (int i = 0; i < draws; ++i) {
    uint64_t rank = keys;
    const uint64_t k = chooser.Next(rng, &rank);
    ASSERT_LT(rank, keys);
    if (key_of_rank[rank] < 0) key_of_rank[rank] = static_cast<int64_t>(k);
    EXPECT_EQ(key_of_rank[rank], static_cast<int64_t>(k));
    if (rank < 10) ++top_ten;
  }
  // Zipf(0.99) over 10,000 keys: the ten most popular take about 30% of the draws (H(10) /
  // H(10000) with exponent 0.99), not 0.1%.
  EXPECT_GT(top_ten, static_cast<uint64_t>(draws) / 5);
  EXPECT_LT(top_ten, static_cast<uint64_t>(draws) / 2);

  KeyChooser uniform(keys, false, 0.0);
  uint64_t rank = keys;
  const uint64_t k = uniform.Next(rng, &rank);
  EXPECT_EQ(rank, k);
}

TEST(KeyFormatTest, RoundTrip) {
  KeyFormat format("key:");
  std::string key;
  format.Append(12345, &key);
  EXPECT_EQ(key, "key:0000012345");
  uint64_t id = 0;
  EXPECT_TRUE(format.Parse(key, &id));
  EXPECT_EQ(id, 12345u);
  EXPECT_FALSE(format.Parse("key:000001234", &id));
  EXPECT_FALSE(format.Parse("kex:0000012345", &id));
  EXPECT_FALSE(format.Parse("key:00000123x5", &id));
}

// Feeds `stream` to ReadReply the way a socket might: the first `split` bytes, then the rest.
// Returns the final status; *reply holds the hits.
ReadStatus ReadSplit(std::string_view stream, size_t split, PendingReply* reply,
                     std::vector<uint64_t>* missed, size_t* total_consumed) {
  const KeyFormat format("k:");
  std::string buffer(stream.substr(0, split));
  bool all_sent = split == stream.size();
  *total_consumed = 0;
  for (;;) {
    size_t consumed = 0;
    const ReadStatus status = ReadReply(buffer, format, reply, &consumed, missed);
    buffer.erase(0, consumed);
    *total_consumed += consumed;
    if (status != ReadStatus::kNeedMore || all_sent) return status;
    buffer.append(stream.substr(split));
    all_sent = true;
  }
}

TEST(ReplyReaderTest, MultiGetAtEverySplit) {
  const std::string stream =
      "VALUE k:0000000002 0 5\r\nhello\r\n"
      "VALUE k:0000000004 7 3 99\r\n\r\nx\r\n"
      "END\r\n";
  const uint64_t keys[] = {1, 2, 3, 4, 5};
  for (size_t split = 0; split <= stream.size(); ++split) {
    PendingReply reply;
    reply.kind = RequestKind::kGet;
    reply.keys = keys;
    reply.key_count = 5;
    std::vector<uint64_t> missed;
    size_t consumed = 0;
    ASSERT_EQ(ReadSplit(stream, split, &reply, &missed, &consumed), ReadStatus::kDone) << split;
    EXPECT_EQ(consumed, stream.size());
    EXPECT_EQ(reply.hits, 2u);
    EXPECT_EQ(missed, (std::vector<uint64_t>{1, 3, 5}));
  }
}

TEST(ReplyReaderTest, SetAndErrors) {
  const uint64_t key = 1;
  const auto run = [&](RequestKind kind, std::string_view stream, size_t* consumed) {
    PendingReply reply;
    reply.kind = kind;
    reply.keys = &key;
    reply.key_count = 1;
    return ReadSplit(stream, stream.size(), &reply, nullptr, consumed);
  };
  size_t consumed = 0;
  EXPECT_EQ(run(RequestKind::kSet, "STORED\r\nEND", &consumed), ReadStatus::kDone);
  EXPECT_EQ(consumed, 8u);
  EXPECT_EQ(run(RequestKind::kSet, "STOR", &consumed), ReadStatus::kNeedMore);
  EXPECT_EQ(run(RequestKind::kSet, "SERVER_ERROR out of memory\r\n", &consumed),
            ReadStatus::kErrorLine);
  EXPECT_EQ(run(RequestKind::kGet, "SERVER_ERROR x\r\n", &consumed), ReadStatus::kErrorLine);
  // A VALUE for a key nobody asked for, a bad length, data without \r\n, a bare \n.
  EXPECT_EQ(run(RequestKind::kGet, "VALUE k:0000000009 0 1\r\na\r\nEND\r\n", &consumed),
            ReadStatus::kDesync);
  EXPECT_EQ(run(RequestKind::kGet, "VALUE k:0000000001 0 x\r\na\r\nEND\r\n", &consumed),
            ReadStatus::kDesync);
  EXPECT_EQ(run(RequestKind::kGet, "VALUE k:0000000001 0 1\r\nab\r\nEND\r\n", &consumed),
            ReadStatus::kDesync);
  EXPECT_EQ(run(RequestKind::kGet, "END\n", &consumed), ReadStatus::kDesync);
  // An error after a VALUE cannot be a reply to this request.
  EXPECT_EQ(run(RequestKind::kGet, "VALUE k:0000000001 0 1\r\na\r\nERROR\r\n", &consumed),
            ReadStatus::kDesync);
}

}  // namespace
}  // namespace petracache::bench
