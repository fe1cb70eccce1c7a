// Behaviour every Store must share, run against MemoryStore and RocksDbStore alike.
#include "storage/store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "storage/caching_store.h"
#include "storage/memory_store.h"
#include "storage/rocksdb_store.h"
#include "tests/unit/storage/test_util.h"

namespace petracache::storage {
namespace {

class MemoryStoreFactory {
 public:
  std::unique_ptr<Store> Make(Clock* clock) { return std::make_unique<MemoryStore>(clock); }
};

class RocksDbStoreFactory {
 public:
  std::unique_ptr<Store> Make(Clock* clock) {
    RocksDbStore::Options options;
    options.db_path = dir_.path() + "/db";
    options.clock = clock;
    options.block_cache_size = 8 << 20;
    options.write_buffer_size = 4 << 20;
    options.max_background_jobs = 2;
    auto store = RocksDbStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return nullptr;
    return *std::move(store);
  }

 private:
  TempDir dir_;
};

// The hot-item tier over RocksDB: it must behave as any store does.
class CachingStoreFactory {
 public:
  std::unique_ptr<Store> Make(Clock* clock) {
    inner_ = rocks_.Make(clock);
    if (inner_ == nullptr) return nullptr;
    return std::make_unique<CachingStore>(inner_.get(), clock, 1 << 20);
  }

 private:
  RocksDbStoreFactory rocks_;
  std::unique_ptr<Store> inner_;
};

template <typename Factory>
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = factory_.Make(&clock_);
    ASSERT_NE(store_, nullptr);
  }

  // Looks key up; returns the status and fills header/value on kFound.
  LookupStatus Lookup(std::string_view key, ItemHeader* header = nullptr,
                      std::string* value = nullptr, bool cache_only = false) {
    ItemHeader h;
    std::string v;
    auto result = store_->Get(key, ReadOptions{.cache_only = cache_only}, &h, &v);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return LookupStatus::kNotFound;
    // Visit must agree with Get, handing out the same item exactly when Get finds one.
    int visits = 0;
    auto visited = store_->Visit(key, ReadOptions{.cache_only = cache_only},
                                 [&](const ItemHeader& vh, std::string_view vv) {
                                   ++visits;
                                   EXPECT_EQ(vh.cas, h.cas);
                                   EXPECT_EQ(vh.flags, h.flags);
                                   EXPECT_EQ(vh.exptime, h.exptime);
                                   EXPECT_EQ(vv, v);
                                 });
    EXPECT_TRUE(visited.ok()) << visited.status();
    if (visited.ok()) {
      EXPECT_EQ(*visited, *result);
    }
    EXPECT_EQ(visits, *result == LookupStatus::kFound ? 1 : 0);
    if (header != nullptr) *header = h;
    if (value != nullptr) *value = v;
    return *result;
  }

  ItemHeader Header(int64_t exptime = 0) {
    auto cas = store_->NextCas();
    EXPECT_TRUE(cas.ok());
    return ItemHeader{
        .flags = 0, .exptime = exptime, .cas = cas.value_or(0), .write_time = clock_.Now()};
  }

  FakeClock clock_;
  Factory factory_;
  std::unique_ptr<Store> store_;
};

using Factories =
    ::testing::Types<MemoryStoreFactory, RocksDbStoreFactory, CachingStoreFactory>;

class FactoryNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    if (std::is_same_v<T, MemoryStoreFactory>) return "Memory";
    return std::is_same_v<T, RocksDbStoreFactory> ? "RocksDb" : "CachingOverRocksDb";
  }
};

TYPED_TEST_SUITE(StoreTest, Factories, FactoryNames);

TYPED_TEST(StoreTest, MissingKeyIsNotFound) {
  EXPECT_EQ(this->Lookup("nope"), LookupStatus::kNotFound);
}

TYPED_TEST(StoreTest, PutGetDelete) {
  PC_ASSERT_OK(this->store_->Put("key", this->Header(), "value"));
  std::string value;
  EXPECT_EQ(this->Lookup("key", nullptr, &value), LookupStatus::kFound);
  EXPECT_EQ(value, "value");
  PC_ASSERT_OK(this->store_->Delete("key"));
  EXPECT_EQ(this->Lookup("key"), LookupStatus::kNotFound);
  // Deleting what is not there is not an error.
  PC_EXPECT_OK(this->store_->Delete("key"));
}

TYPED_TEST(StoreTest, HeaderAndBinaryValuePreserved) {
  const ItemHeader in{.flags = 0xfffffffe,
                      .exptime = this->clock_.Now() + 3600,
                      .cas = 42,
                      .write_time = this->clock_.Now() - 5};
  const std::string value("a\0b\r\nEND\r\n", 10);
  PC_ASSERT_OK(this->store_->Put("bin", in, value));
  ItemHeader out;
  std::string out_value = "stale contents";
  ASSERT_EQ(this->Lookup("bin", &out, &out_value), LookupStatus::kFound);
  EXPECT_EQ(out.flags, in.flags);
  EXPECT_EQ(out.exptime, in.exptime);
  EXPECT_EQ(out.cas, in.cas);
  EXPECT_EQ(out.write_time, in.write_time);
  EXPECT_EQ(out_value, value);
}

TYPED_TEST(StoreTest, EmptyAndLargeValues) {
  const std::string large(1 << 20, 'x');
  PC_ASSERT_OK(this->store_->Put("empty", this->Header(), ""));
  PC_ASSERT_OK(this->store_->Put("large", this->Header(), large));
  std::string value = "junk";
  ASSERT_EQ(this->Lookup("empty", nullptr, &value), LookupStatus::kFound);
  EXPECT_TRUE(value.empty());
  ASSERT_EQ(this->Lookup("large", nullptr, &value), LookupStatus::kFound);
  EXPECT_EQ(value, large);
}

TYPED_TEST(StoreTest, PutReplaces) {
  PC_ASSERT_OK(this->store_->Put("k", this->Header(), "one"));
  ItemHeader second = this->Header();
  second.flags = 9;
  PC_ASSERT_OK(this->store_->Put("k", second, "two"));
  ItemHeader header;
  std::string value;
  ASSERT_EQ(this->Lookup("k", &header, &value), LookupStatus::kFound);
  EXPECT_EQ(value, "two");
  EXPECT_EQ(header.flags, 9u);
  EXPECT_EQ(header.cas, second.cas);
}

TYPED_TEST(StoreTest, ExpiresWhenClockReachesExptime) {
  const int64_t now = this->clock_.Now();
  PC_ASSERT_OK(this->store_->Put("ttl", this->Header(now + 10), "v"));
  PC_ASSERT_OK(this->store_->Put("forever", this->Header(0), "v"));
  this->clock_.Advance(9);
  EXPECT_EQ(this->Lookup("ttl"), LookupStatus::kFound);
  this->clock_.Advance(1);
  EXPECT_EQ(this->Lookup("ttl"), LookupStatus::kExpired);
  this->clock_.Advance(1'000'000);
  EXPECT_EQ(this->Lookup("ttl"), LookupStatus::kExpired);
  EXPECT_EQ(this->Lookup("forever"), LookupStatus::kFound);
}

TYPED_TEST(StoreTest, FlushStateDefaultsToZeroAndRoundTrips) {
  EXPECT_EQ(this->store_->GetFlushState(), FlushState{});
  const FlushState state{.oldest_live = 123, .oldest_cas = 456};
  PC_ASSERT_OK(this->store_->SetFlushState(state));
  EXPECT_EQ(this->store_->GetFlushState(), state);
}

TYPED_TEST(StoreTest, FlushedByOldestCas) {
  const ItemHeader old_item = this->Header();
  PC_ASSERT_OK(this->store_->Put("old", old_item, "v"));
  const ItemHeader new_item = this->Header();
  PC_ASSERT_OK(this->store_->Put("new", new_item, "v"));
  PC_ASSERT_OK(this->store_->SetFlushState({.oldest_live = 0, .oldest_cas = new_item.cas}));
  EXPECT_EQ(this->Lookup("old"), LookupStatus::kFlushed);
  EXPECT_EQ(this->Lookup("new"), LookupStatus::kFound);
}

TYPED_TEST(StoreTest, ImmediateFlushByOldestLive) {
  PC_ASSERT_OK(this->store_->Put("a", this->Header(), "v"));
  PC_ASSERT_OK(this->store_->SetFlushState({.oldest_live = this->clock_.Now(), .oldest_cas = 0}));
  EXPECT_EQ(this->Lookup("a"), LookupStatus::kFlushed);
  this->clock_.Advance(1);
  PC_ASSERT_OK(this->store_->Put("b", this->Header(), "v"));
  EXPECT_EQ(this->Lookup("b"), LookupStatus::kFound);
}

TYPED_TEST(StoreTest, DelayedFlushKillsOnlyOlderItemsOnceDue) {
  const int64_t start = this->clock_.Now();
  PC_ASSERT_OK(this->store_->Put("before", this->Header(), "v"));
  const int64_t oldest_live = start + 100;
  PC_ASSERT_OK(this->store_->SetFlushState({.oldest_live = oldest_live, .oldest_cas = 0}));

  this->clock_.Set(oldest_live);
  // Written at oldest_live itself: also dies (write_time <= oldest_live).
  PC_ASSERT_OK(this->store_->Put("at", this->Header(), "v"));
  this->clock_.Set(oldest_live - 1);
  EXPECT_EQ(this->Lookup("before"), LookupStatus::kFound);
  EXPECT_EQ(this->Lookup("at"), LookupStatus::kFound);

  this->clock_.Set(oldest_live);
  EXPECT_EQ(this->Lookup("before"), LookupStatus::kFlushed);
  EXPECT_EQ(this->Lookup("at"), LookupStatus::kFlushed);

  this->clock_.Set(oldest_live + 1);
  PC_ASSERT_OK(this->store_->Put("after", this->Header(), "v"));
  this->clock_.Advance(1000);
  EXPECT_EQ(this->Lookup("after"), LookupStatus::kFound);
  EXPECT_EQ(this->Lookup("before"), LookupStatus::kFlushed);
}

TYPED_TEST(StoreTest, FlushedTakesPrecedenceOverExpired) {
  PC_ASSERT_OK(this->store_->Put("k", this->Header(this->clock_.Now() + 1), "v"));
  PC_ASSERT_OK(this->store_->SetFlushState({.oldest_live = this->clock_.Now(), .oldest_cas = 0}));
  this->clock_.Advance(5);
  EXPECT_EQ(this->Lookup("k"), LookupStatus::kFlushed);
}

TYPED_TEST(StoreTest, CacheOnlyReadOfFreshWriteIsFound) {
  PC_ASSERT_OK(this->store_->Put("hot", this->Header(), "v"));
  std::string value;
  EXPECT_EQ(this->Lookup("hot", nullptr, &value, /*cache_only=*/true), LookupStatus::kFound);
  EXPECT_EQ(value, "v");
}

TYPED_TEST(StoreTest, NextCasStartsAtOneAndIncreases) {
  auto first = this->store_->NextCas();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, 1u);
  uint64_t previous = *first;
  for (int i = 0; i < 1000; ++i) {
    auto cas = this->store_->NextCas();
    ASSERT_TRUE(cas.ok());
    ASSERT_GT(*cas, previous);
    previous = *cas;
  }
}

TYPED_TEST(StoreTest, ConcurrentNextCasIsUnique) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20'000;
  std::vector<std::vector<uint64_t>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      seen[t].reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) {
        auto cas = this->store_->NextCas();
        if (!cas.ok()) return;
        // Each thread sees its own values strictly increasing.
        if (!seen[t].empty() && *cas <= seen[t].back()) return;
        seen[t].push_back(*cas);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::vector<uint64_t> all;
  for (const auto& v : seen) {
    ASSERT_EQ(v.size(), static_cast<size_t>(kPerThread));
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
}

TYPED_TEST(StoreTest, StatsCountItems) {
  for (int i = 0; i < 100; ++i) {
    PC_ASSERT_OK(this->store_->Put("key" + std::to_string(i), this->Header(), "value"));
  }
  const StoreStats stats = this->store_->GetStats();
  EXPECT_GT(stats.approximate_items, 0u);
  EXPECT_GT(stats.approximate_bytes, 0u);
  EXPECT_EQ(stats.compaction_dropped_expired, 0u);
  EXPECT_EQ(stats.compaction_dropped_flushed, 0u);
}

}  // namespace
}  // namespace petracache::storage
