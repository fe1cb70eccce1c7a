// Tests for storage/caching_store: hits, coherence with concurrent writes, bounds, liveness.
#include "storage/caching_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "storage/memory_store.h"

namespace petracache::storage {
namespace {

// A store whose Get can be held after it has read, to interleave a write deterministically.
class PausingStore final : public Store {
 public:
  explicit PausingStore(Clock* clock) : inner_(clock) {}
  absl::StatusOr<LookupStatus> Get(std::string_view key, const ReadOptions& options,
                                   ItemHeader* header, std::string* value) override {
    absl::StatusOr<LookupStatus> r = inner_.Get(key, options, header, value);
    ++gets;
    std::unique_lock lock(mu_);
    if (pause_next_) {
      pause_next_ = false;
      paused_ = true;
      cv_.notify_all();
      cv_.wait(lock, [this] { return !paused_; });
    }
    return r;
  }
  using Store::Delete;
  using Store::Put;
  absl::Status Put(std::string_view key, const ItemHeader& h, std::string_view v,
                   const WriteOptions& options) override {
    return inner_.Put(key, h, v, options);
  }
  absl::Status Delete(std::string_view key, const WriteOptions& options) override {
    return inner_.Delete(key, options);
  }
  absl::StatusOr<uint64_t> NextCas() override { return inner_.NextCas(); }
  absl::Status SetFlushState(const FlushState& s) override { return inner_.SetFlushState(s); }
  FlushState GetFlushState() const override { return inner_.GetFlushState(); }
  StoreStats GetStats() const override { return inner_.GetStats(); }

  void PauseNextGet() {
    std::lock_guard lock(mu_);
    pause_next_ = true;
  }
  void WaitUntilPaused() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return paused_; });
  }
  void Resume() {
    std::lock_guard lock(mu_);
    paused_ = false;
    cv_.notify_all();
  }
  std::atomic<int> gets{0};

 private:
  MemoryStore inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool pause_next_ = false;
  bool paused_ = false;
};

std::string GetValue(Store& store, std::string_view key) {
  ItemHeader h;
  std::string v;
  absl::StatusOr<LookupStatus> r = store.Get(key, ReadOptions{}, &h, &v);
  if (!r.ok() || *r != LookupStatus::kFound) return "<miss>";
  return v;
}

TEST(CachingStoreTest, ServesHitsWithoutTheInnerStore) {
  FakeClock clock;
  PausingStore inner(&clock);
  CachingStore cache(&inner, &clock, 1 << 20);
  ASSERT_TRUE(
      cache.Put("k", ItemHeader{.flags = 7, .exptime = 0, .cas = 1, .write_time = 0}, "v1").ok());
  EXPECT_EQ(GetValue(cache, "k"), "v1");
  EXPECT_EQ(inner.gets.load(), 0);
  ItemHeader h;
  std::string v;
  ASSERT_EQ(*cache.Get("k", ReadOptions{}, &h, &v), LookupStatus::kFound);
  EXPECT_EQ(h.flags, 7u);
  EXPECT_EQ(h.cas, 1u);
  ASSERT_TRUE(cache.Delete("k").ok());
  EXPECT_EQ(GetValue(cache, "k"), "<miss>");
  EXPECT_EQ(inner.gets.load(), 1);
}

TEST(CachingStoreTest, FillsOnMissThenHits) {
  FakeClock clock;
  PausingStore inner(&clock);
  ASSERT_TRUE(
      inner.Put("k", ItemHeader{.flags = 0, .exptime = 0, .cas = 1, .write_time = 0}, "disk").ok());
  CachingStore cache(&inner, &clock, 1 << 20);
  EXPECT_EQ(GetValue(cache, "k"), "disk");
  EXPECT_EQ(GetValue(cache, "k"), "disk");
  EXPECT_EQ(inner.gets.load(), 1);
  HotCacheStats s = cache.CacheStats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.items, 1u);
}

// The race a read-through cache must not lose: a reader reads OLD from the inner store, a
// writer stores NEW (inner, then cache), and only then the reader tries to fill OLD.
TEST(CachingStoreTest, StaleFillAfterAConcurrentWriteIsDropped) {
  FakeClock clock;
  PausingStore inner(&clock);
  ASSERT_TRUE(
      inner.Put("k", ItemHeader{.flags = 0, .exptime = 0, .cas = 1, .write_time = 0}, "old").ok());
  CachingStore cache(&inner, &clock, 1 << 20);
  inner.PauseNextGet();
  std::string read_by_reader;
  std::thread reader([&] { read_by_reader = GetValue(cache, "k"); });
  inner.WaitUntilPaused();
  ASSERT_TRUE(
      cache.Put("k", ItemHeader{.flags = 0, .exptime = 0, .cas = 2, .write_time = 0}, "new").ok());
  inner.Resume();
  reader.join();
  EXPECT_EQ(read_by_reader, "old");  // it overlapped the write: either answer is linearizable
  EXPECT_EQ(GetValue(cache, "k"), "new");
  // Same for a delete.
  inner.PauseNextGet();
  ASSERT_TRUE(cache.Delete("k").ok());
  ASSERT_TRUE(
      inner.Put("j", ItemHeader{.flags = 0, .exptime = 0, .cas = 3, .write_time = 0}, "j").ok());
  std::thread reader2([&] { read_by_reader = GetValue(cache, "j"); });
  inner.WaitUntilPaused();
  ASSERT_TRUE(cache.Delete("j").ok());
  inner.Resume();
  reader2.join();
  EXPECT_EQ(GetValue(cache, "j"), "<miss>");
}

TEST(CachingStoreTest, StaysWithinCapacity) {
  FakeClock clock;
  MemoryStore inner(&clock);
  const uint64_t capacity = 64 * 64 * 1024;  // 64 KiB per shard
  CachingStore cache(&inner, &clock, capacity);
  std::string value(1000, 'v');
  for (int i = 0; i < 20000; ++i) {
    // Twice: once the tier is full, a key gets in on its second write in a short while.
    ASSERT_TRUE(cache.Put("key" + std::to_string(i), ItemHeader{}, value).ok());
    ASSERT_TRUE(cache.Put("key" + std::to_string(i), ItemHeader{}, value).ok());
  }
  HotCacheStats s = cache.CacheStats();
  EXPECT_LE(s.bytes, capacity);
  EXPECT_GT(s.evictions, 0u);
  // Evicted items are still in the inner store.
  EXPECT_EQ(GetValue(cache, "key0"), value);
}

TEST(CachingStoreTest, JudgesExpiryAndFlushOnHits) {
  FakeClock clock(1000);
  MemoryStore inner(&clock);
  CachingStore cache(&inner, &clock, 1 << 20);
  ASSERT_TRUE(
      cache.Put("e", ItemHeader{.flags = 0, .exptime = 1010, .cas = 1, .write_time = 1000}, "e")
          .ok());
  ASSERT_TRUE(
      cache.Put("f", ItemHeader{.flags = 0, .exptime = 0, .cas = 2, .write_time = 1000}, "f").ok());
  ItemHeader h;
  std::string v;
  clock.Set(1010);
  EXPECT_EQ(*cache.Get("e", ReadOptions{}, &h, &v), LookupStatus::kExpired);
  // A delayed flush: cached items written before the deadline die when it passes.
  ASSERT_TRUE(cache.SetFlushState(FlushState{1020, 0}).ok());
  EXPECT_EQ(*cache.Get("f", ReadOptions{}, &h, &v), LookupStatus::kFound);
  clock.Set(1020);
  EXPECT_EQ(*cache.Get("f", ReadOptions{}, &h, &v), LookupStatus::kFlushed);
  // An immediate flush empties the tier.
  ASSERT_TRUE(
      cache.Put("g", ItemHeader{.flags = 0, .exptime = 0, .cas = 5, .write_time = 1020}, "g").ok());
  ASSERT_TRUE(cache.SetFlushState(FlushState{1019, 6}).ok());
  EXPECT_EQ(cache.CacheStats().items, 0u);
  EXPECT_EQ(*cache.Get("g", ReadOptions{}, &h, &v), LookupStatus::kFlushed);
}

// memcached counts an item both flushed and expired as flushed (get_flushed); a hit in the
// tier must judge it the way the inner store does.
TEST(CachingStoreTest, CountsAnItemFlushedAndExpiredAsFlushed) {
  FakeClock clock(1000);
  MemoryStore inner(&clock);
  CachingStore cache(&inner, &clock, 1 << 20);
  ASSERT_TRUE(
      cache.Put("k", ItemHeader{.flags = 0, .exptime = 1010, .cas = 1, .write_time = 1000}, "v")
          .ok());
  ASSERT_TRUE(cache.SetFlushState(FlushState{1005, 0}).ok());  // delayed: the tier keeps "k"
  ASSERT_EQ(cache.CacheStats().items, 1u);
  clock.Set(1010);
  ItemHeader h;
  std::string v;
  EXPECT_EQ(*cache.Get("k", ReadOptions{}, &h, &v), LookupStatus::kFlushed);
  EXPECT_EQ(*inner.Get("k", ReadOptions{}, &h, &v), LookupStatus::kFlushed);
}

// Overwrites replace header and value whether or not the size changes (same size: rewritten
// in place), and the accounting follows.
TEST(CachingStoreTest, OverwritesReplaceHeaderAndValue) {
  FakeClock clock;
  PausingStore inner(&clock);
  CachingStore cache(&inner, &clock, 1 << 20);
  ASSERT_TRUE(
      cache.Put("k", ItemHeader{.flags = 1, .exptime = 0, .cas = 1, .write_time = 0}, "aaaa").ok());
  const uint64_t bytes = cache.CacheStats().bytes;
  ASSERT_TRUE(
      cache.Put("k", ItemHeader{.flags = 2, .exptime = 0, .cas = 2, .write_time = 0}, "bbbb").ok());
  ItemHeader h;
  std::string v;
  ASSERT_EQ(*cache.Get("k", ReadOptions{}, &h, &v), LookupStatus::kFound);
  EXPECT_EQ(h.flags, 2u);
  EXPECT_EQ(h.cas, 2u);
  EXPECT_EQ(v, "bbbb");
  EXPECT_EQ(cache.CacheStats().bytes, bytes);
  ASSERT_TRUE(
      cache.Put("k", ItemHeader{.flags = 3, .exptime = 0, .cas = 3, .write_time = 0}, "cc").ok());
  ASSERT_EQ(*cache.Get("k", ReadOptions{}, &h, &v), LookupStatus::kFound);
  EXPECT_EQ(h.cas, 3u);
  EXPECT_EQ(v, "cc");
  EXPECT_EQ(cache.CacheStats().bytes, bytes - 2);
  EXPECT_EQ(cache.CacheStats().items, 1u);
  EXPECT_EQ(inner.gets.load(), 0);
}

// A hit is handed to the visitor in place: the inner store is not asked, nothing is copied
// out first, and a miss in both tiers visits nothing.
TEST(CachingStoreTest, VisitHandsOutHitsInPlace) {
  FakeClock clock;
  PausingStore inner(&clock);
  CachingStore cache(&inner, &clock, 1 << 20);
  ASSERT_TRUE(
      cache.Put("k", ItemHeader{.flags = 9, .exptime = 0, .cas = 3, .write_time = 0}, "value")
          .ok());
  int visits = 0;
  auto r = cache.Visit("k", ReadOptions{}, [&](const ItemHeader& h, std::string_view v) {
    ++visits;
    EXPECT_EQ(h.flags, 9u);
    EXPECT_EQ(h.cas, 3u);
    EXPECT_EQ(v, "value");
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, LookupStatus::kFound);
  EXPECT_EQ(visits, 1);
  EXPECT_EQ(inner.gets.load(), 0);
  r = cache.Visit("absent", ReadOptions{}, [&](const ItemHeader&, std::string_view) { ++visits; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, LookupStatus::kNotFound);
  EXPECT_EQ(visits, 1);
  EXPECT_EQ(inner.gets.load(), 1);
}

// Under a skewed (Zipf 0.99) read load over far more keys than the tier holds, the tier
// should keep the popular keys: its hit rate stays close to that of an ideal tier holding
// exactly the most popular keys that fit. Measured here: 0.937 of the ideal with the
// doorkeeper, 0.891 without it (every miss filled: the long tail keeps displacing them).
TEST(CachingStoreTest, KeepsThePopularKeysUnderASkewedLoad) {
  constexpr int kKeys = 200'000;
  constexpr int kReads = 1'000'000;
  FakeClock clock;
  MemoryStore inner(&clock);
  const std::string value(200, 'v');
  for (int i = 0; i < kKeys; ++i) ASSERT_TRUE(inner.Put("z" + std::to_string(i), {}, value).ok());
  CachingStore cache(&inner, &clock, 2'500'000);

  // Zipf(0.99) over ranks; rank r is key z<r> (the hash spreads them over shards).
  std::vector<double> cdf(kKeys);
  double sum = 0;
  for (int r = 0; r < kKeys; ++r) cdf[r] = (sum += 1.0 / std::pow(r + 1, 0.99));
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> uniform(0, sum);
  auto read_some = [&](int n) {
    ItemHeader h;
    std::string v;
    for (int i = 0; i < n; ++i) {
      const int rank =
          static_cast<int>(std::upper_bound(cdf.begin(), cdf.end(), uniform(rng)) - cdf.begin());
      ASSERT_EQ(*cache.Get("z" + std::to_string(std::min(rank, kKeys - 1)), {}, &h, &v),
                LookupStatus::kFound);
    }
  };
  read_some(kReads);  // warm up
  const HotCacheStats before = cache.CacheStats();
  read_some(kReads);
  const HotCacheStats after = cache.CacheStats();
  const double hit_rate =
      static_cast<double>(after.hits - before.hits) /
      static_cast<double>(after.hits + after.misses - before.hits - before.misses);
  const double ideal = cdf[after.items - 1] / sum;  // the top `items` keys' share of reads
  EXPECT_GT(after.items, 5'000u);
  EXPECT_GE(hit_rate, 0.92 * ideal)
      << "hit rate " << hit_rate << ", ideal " << ideal << " with " << after.items << " items";
}

// Writers publish increasing versions of their keys; readers must never see a version go
// backwards, which a stale fill would cause.
TEST(CachingStoreTest, ReadersNeverSeeAValueGoBackwards) {
  FakeClock clock;
  MemoryStore inner(&clock);
  CachingStore cache(&inner, &clock, 8 * 64 * 1024);  // small: constant eviction and refill
  constexpr int kKeys = 64;
  std::atomic<bool> stop{false};
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      for (int version = 1; version <= 3000; ++version) {
        for (int k = w; k < kKeys; k += 2) {
          std::string value = std::to_string(version) + std::string(500, 'x');
          ASSERT_TRUE(cache.Put("k" + std::to_string(k), ItemHeader{}, value).ok());
        }
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&] {
      std::vector<long> seen(kKeys, 0);
      while (!stop.load()) {
        for (int k = 0; k < kKeys; ++k) {
          std::string v = GetValue(cache, "k" + std::to_string(k));
          if (v == "<miss>") continue;
          long version = std::stol(v);
          if (version < seen[k]) violations++;
          seen[k] = version;
        }
      }
    });
  }
  threads[0].join();
  threads[1].join();
  stop = true;
  threads[2].join();
  threads[3].join();
  EXPECT_EQ(violations.load(), 0);
}

}  // namespace
}  // namespace petracache::storage
