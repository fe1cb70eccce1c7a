// Histogram: a log-linear latency histogram in the style of HdrHistogram. Values (nanoseconds)
// below 2^kSubBucketBits are counted exactly; above that every power-of-two range is split into
// 2^(kSubBucketBits-1) equal buckets, so a reported value is within 1/2^(kSubBucketBits-1) of
// the true one (0.8% with 8 bits) at any magnitude, with a fixed footprint and O(1) Record().
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace petracache::bench {

class Histogram {
 public:
  static constexpr int kSubBucketBits = 8;
  static constexpr uint64_t kSubBuckets = uint64_t{1} << kSubBucketBits;
  static constexpr uint64_t kHalf = kSubBuckets / 2;
  // Every uint64_t has a bucket: the largest shift is 64 - kSubBucketBits.
  static constexpr size_t kBuckets = (64 - kSubBucketBits + 1) * kHalf + kSubBuckets;

  Histogram() : counts_(kBuckets, 0) {}

  // The bucket of `value`. Buckets are ordered by value and contiguous.
  static size_t IndexOf(uint64_t value) {
    if (value < kSubBuckets) return static_cast<size_t>(value);
    const int msb = 63 - std::countl_zero(value);
    const int shift = msb - kSubBucketBits + 1;  // >= 1
    // value >> shift keeps the kSubBucketBits top bits: in [kHalf, kSubBuckets).
    return static_cast<size_t>(static_cast<uint64_t>(shift) * kHalf + (value >> shift));
  }

  // The smallest and largest value that land in bucket `index`.
  static uint64_t LowestOf(size_t index) {
    if (index < kSubBuckets) return index;
    const uint64_t shift = (index - kSubBuckets) / kHalf + 1;
    const uint64_t top = index - shift * kHalf;  // in [kHalf, kSubBuckets)
    return top << shift;
  }
  static uint64_t HighestOf(size_t index) {
    if (index < kSubBuckets) return index;
    const uint64_t shift = (index - kSubBuckets) / kHalf + 1;
    const uint64_t lowest = LowestOf(index);
    const uint64_t width = uint64_t{1} << shift;
    // The top bucket's range ends at the largest uint64_t.
    return lowest > std::numeric_limits<uint64_t>::max() - (width - 1) ? lowest
                                                                       : lowest + (width - 1);
  }

  void Record(uint64_t value) {
    ++counts_[IndexOf(value)];
    ++count_;
    sum_ += value;
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
  }

  void Merge(const Histogram& other) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }

  void Reset() {
    std::fill(counts_.begin(), counts_.end(), 0);
    count_ = 0;
    sum_ = 0;
    min_ = std::numeric_limits<uint64_t>::max();
    max_ = 0;
  }

  // The value at or below which `percentile` (0..100) of the recorded values lie, reported
  // as the highest value of its bucket (never under-reports; capped at the exact max). 0 when
  // empty.
  uint64_t Percentile(double percentile) const {
    if (count_ == 0) return 0;
    const double clamped = std::clamp(percentile, 0.0, 100.0);
    // The rank of the wanted value, 1-based: at least the first value.
    uint64_t rank = static_cast<uint64_t>(clamped / 100.0 * static_cast<double>(count_) + 0.5);
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(HighestOf(i), max_);
    }
    return max_;
  }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const {
    return count_ == 0 ? 0.0 : static_cast<double>(sum_) / static_cast<double>(count_);
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

}  // namespace petracache::bench
