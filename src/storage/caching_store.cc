// CachingStore: 64 shards, each a second-chance (CLOCK-like) list plus a flat hash index
// under one mutex.
#include "storage/caching_store.h"

#include <functional>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace petracache::storage {
namespace {

// Rough per-entry cost beyond key and value bytes: list node, index slot, two strings.
constexpr uint64_t kEntryOverhead = 128;

// Debian's Abseil has its own string_view type, so hash std::string_view with the standard
// hasher.
struct KeyHash {
  size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
};

}  // namespace

struct CachingStore::Shard {
  struct Entry {
    std::string key;
    ItemHeader header;
    std::string value;
    bool referenced = false;  // read since it last passed the eviction hand
    uint64_t Cost() const { return key.size() + value.size() + kEntryOverhead; }
  };
  using List = std::list<Entry>;

  // Second-chance eviction: entries enter at the front; the hand works from the back, giving
  // a referenced entry another round (moved to the front, bit cleared) and evicting the
  // first unreferenced one. A hit only sets a bit, so reads never reorder the list.
  std::mutex mu;
  List lru;
  absl::flat_hash_map<std::string_view, List::iterator, KeyHash> index;  // views into lru keys
  uint64_t bytes = 0;
  uint64_t write_seq = 0;  // bumped by every mutation of a key in this shard
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;

  void Erase(std::string_view key) {
    auto it = index.find(key);
    if (it == index.end()) return;
    bytes -= it->second->Cost();
    List::iterator entry = it->second;
    index.erase(it);
    lru.erase(entry);
  }

  void Upsert(std::string_view key, const ItemHeader& header, std::string_view value,
              uint64_t capacity) {
    Erase(key);
    const uint64_t cost = key.size() + value.size() + kEntryOverhead;
    if (cost > capacity / 4) return;  // a few huge values must not flush the whole shard
    lru.push_front(Entry{std::string(key), header, std::string(value)});
    index.emplace(lru.front().key, lru.begin());
    bytes += cost;
    while (bytes > capacity && !lru.empty()) {
      Entry& victim = lru.back();
      if (victim.referenced && lru.size() > 1) {
        victim.referenced = false;
        lru.splice(lru.begin(), lru, std::prev(lru.end()));
        continue;
      }
      bytes -= victim.Cost();
      index.erase(victim.key);
      lru.pop_back();
      ++evictions;
    }
  }
};

CachingStore::CachingStore(Store* inner, Clock* clock, uint64_t capacity_bytes)
    : inner_(inner),
      clock_(clock),
      shard_capacity_(capacity_bytes / kShards),
      shards_(new Shard[kShards]) {}

CachingStore::~CachingStore() = default;

CachingStore::Shard& CachingStore::ShardFor(std::string_view key) const {
  // The high bits, so the shard does not correlate with the engine's lock stripe.
  return shards_[(std::hash<std::string_view>{}(key) >> 20) % kShards];
}

absl::StatusOr<LookupStatus> CachingStore::Get(std::string_view key, const ReadOptions& options,
                                               ItemHeader* header, std::string* value) {
  Shard& shard = ShardFor(key);
  uint64_t seq;
  {
    std::lock_guard lock(shard.mu);
    auto it = shard.index.find(key);
    if (it != shard.index.end()) {
      Shard::List::iterator entry = it->second;
      entry->referenced = true;
      ++shard.hits;
      const int64_t now = clock_->Now();
      if (IsExpired(entry->header, now)) return LookupStatus::kExpired;
      if (IsFlushed(entry->header, inner_->GetFlushState(), now)) return LookupStatus::kFlushed;
      *header = entry->header;
      value->assign(entry->value);
      return LookupStatus::kFound;
    }
    ++shard.misses;
    seq = shard.write_seq;
  }
  absl::StatusOr<LookupStatus> r = inner_->Get(key, options, header, value);
  if (r.ok() && *r == LookupStatus::kFound) {
    std::lock_guard lock(shard.mu);
    if (shard.write_seq == seq) shard.Upsert(key, *header, *value, shard_capacity_);
  }
  return r;
}

absl::Status CachingStore::Put(std::string_view key, const ItemHeader& header,
                               std::string_view value, const WriteOptions& options) {
  absl::Status s = inner_->Put(key, header, value, options);
  Shard& shard = ShardFor(key);
  std::lock_guard lock(shard.mu);
  ++shard.write_seq;
  if (s.ok()) {
    shard.Upsert(key, header, value, shard_capacity_);
  } else {
    shard.Erase(key);  // the inner store's state is unknown: read it next time
  }
  return s;
}

absl::Status CachingStore::Delete(std::string_view key, const WriteOptions& options) {
  absl::Status s = inner_->Delete(key, options);
  Shard& shard = ShardFor(key);
  std::lock_guard lock(shard.mu);
  ++shard.write_seq;
  shard.Erase(key);
  return s;
}

absl::Status CachingStore::SetFlushState(const FlushState& state) {
  absl::Status s = inner_->SetFlushState(state);
  if (!s.ok() || state.oldest_live > clock_->Now()) return s;
  for (size_t i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    ++shard.write_seq;
    shard.index.clear();
    shard.lru.clear();
    shard.bytes = 0;
  }
  return s;
}

StoreStats CachingStore::GetStats() const {
  StoreStats s = inner_->GetStats();
  HotCacheStats c = CacheStats();
  s.hot_cache_hits = c.hits;
  s.hot_cache_misses = c.misses;
  s.hot_cache_bytes = c.bytes;
  s.hot_cache_items = c.items;
  s.hot_cache_evictions = c.evictions;
  return s;
}

HotCacheStats CachingStore::CacheStats() const {
  HotCacheStats out;
  for (size_t i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    out.hits += shard.hits;
    out.misses += shard.misses;
    out.bytes += shard.bytes;
    out.items += shard.index.size();
    out.evictions += shard.evictions;
  }
  return out;
}

}  // namespace petracache::storage
