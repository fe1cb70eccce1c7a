// CachingStore: a bounded in-memory hot-item tier in front of another Store (RocksDB), so a
// hit costs a hash lookup instead of RocksDB's memtable, block cache and index searches.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "storage/store.h"

namespace petracache::storage {

struct HotCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t bytes = 0;  // accounted bytes held now
  uint64_t items = 0;  // entries held now
  uint64_t evictions = 0;
};

// Coherence: every mutation goes to the inner store first and then updates (Put) or erases
// (Delete) the cached entry, under the shard's mutex. A read that missed the tier fills it
// only if no mutation touched that shard since the read began (a per-shard write sequence),
// so a value read from the inner store before a concurrent write can never be cached after it.
// Liveness (expiry, flush_all) is judged on every hit with the inner store's flush state, the
// same rules the inner store applies.
class CachingStore final : public Store {
 public:
  // `capacity_bytes` bounds keys + values + per-entry overhead. `inner` and `clock` must
  // outlive this store.
  CachingStore(Store* inner, Clock* clock, uint64_t capacity_bytes);
  ~CachingStore() override;

  CachingStore(const CachingStore&) = delete;
  CachingStore& operator=(const CachingStore&) = delete;

  [[nodiscard]] absl::StatusOr<LookupStatus> Get(std::string_view key, const ReadOptions& options,
                                                 ItemHeader* header, std::string* value) override;
  // A hit hands the cached item to `fn` under its shard's lock: no copy, no allocation.
  [[nodiscard]] absl::StatusOr<LookupStatus> Visit(std::string_view key,
                                                   const ReadOptions& options,
                                                   ItemVisitor fn) override;
  using Store::Delete;
  using Store::Put;
  [[nodiscard]] absl::Status Put(std::string_view key, const ItemHeader& header,
                                 std::string_view value, const WriteOptions& options) override;
  [[nodiscard]] absl::Status Delete(std::string_view key, const WriteOptions& options) override;
  [[nodiscard]] absl::StatusOr<uint64_t> NextCas() override { return inner_->NextCas(); }
  uint64_t CommitMark() const override { return inner_->CommitMark(); }
  bool Committed(uint64_t mark) const override { return inner_->Committed(mark); }
  [[nodiscard]] absl::Status Commit(uint64_t mark) override { return inner_->Commit(mark); }
  bool CommitWaitsForDevice() const override { return inner_->CommitWaitsForDevice(); }
  // An immediate flush_all also empties the tier (its entries would all be dead).
  [[nodiscard]] absl::Status SetFlushState(const FlushState& state) override;
  FlushState GetFlushState() const override { return inner_->GetFlushState(); }
  // The inner store's figures plus the tier's.
  StoreStats GetStats() const override;

  HotCacheStats CacheStats() const;

 private:
  struct Shard;
  static constexpr size_t kShards = 64;

  static size_t Hash(std::string_view key);
  Shard& ShardFor(size_t hash) const;

  Store* const inner_;
  Clock* const clock_;
  const uint64_t shard_capacity_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace petracache::storage
