// CachingStore: 64 shards, each a second-chance (CLOCK-like) list plus an open-addressing
// index (key_index.h) under one mutex. An entry is one allocation: list links, header, key
// and value together, so a hit touches one index slot and one contiguous block.
#include "storage/caching_store.h"

#include <functional>
#include <new>
#include <utility>
#include <vector>

#include "storage/key_index.h"

namespace petracache::storage {
namespace {

// Index cost per entry beyond the entry itself: its slots at the index's lowest load
// (KeyIndex::kBytesPerObject, checked below).
constexpr uint64_t kIndexOverhead = 64;

}  // namespace

struct CachingStore::Shard {
  // Followed in the same allocation by the key bytes and then the value bytes.
  struct Entry {
    Entry* prev;
    Entry* next;
    ItemHeader header;
    uint32_t key_size;
    uint32_t value_size;
    bool referenced;  // read since it last passed the eviction hand

    const char* data() const { return reinterpret_cast<const char*>(this + 1); }
    std::string_view key() const { return {data(), key_size}; }
    std::string_view value() const { return {data() + key_size, value_size}; }
    uint64_t Cost() const { return CostOf(key_size, value_size); }

    static uint64_t CostOf(size_t key_size, size_t value_size) {
      return sizeof(Entry) + key_size + value_size + kIndexOverhead;
    }
    static Entry* Create(std::string_view key, const ItemHeader& header,
                         std::string_view value) {
      void* block = ::operator new(sizeof(Entry) + key.size() + value.size());
      Entry* e = new (block) Entry{nullptr, nullptr, header, static_cast<uint32_t>(key.size()),
                                   static_cast<uint32_t>(value.size()), false};
      char* p = reinterpret_cast<char*>(e + 1);
      key.copy(p, key.size());
      value.copy(p + key.size(), value.size());
      return e;
    }
    static void Destroy(Entry* e) {
      e->~Entry();
      ::operator delete(e);
    }
  };

  // Admission: once the shard is full, a key read from the inner store (or written) enters
  // only if it was turned away recently too: `doorkeeper` remembers the fingerprints of the
  // last keys turned away, one per slot, each overwritten by a later key that hashes to it.
  // Keys read once in a long while (a skewed workload's long tail) never displace the ones
  // read again and again; a key asked for twice within about doorkeeper.size() refusals gets
  // in. A fixed array per shard (sized in the constructor); no per-key state.
  std::vector<uint32_t> doorkeeper;

  // Second-chance eviction: entries enter at the front (after `ring`); the hand works from
  // the back, giving a referenced entry another round (moved to the front, bit cleared) and
  // evicting the first unreferenced one. A hit only sets a bit, so reads never reorder the
  // list. `ring` is the sentinel of a circular doubly linked list.
  std::mutex mu;
  Entry ring{&ring, &ring, {}, 0, 0, false};
  KeyIndex<Entry> index;
  static_assert(KeyIndex<Entry>::kBytesPerObject == kIndexOverhead);
  uint64_t bytes = 0;
  uint64_t write_seq = 0;  // bumped by every mutation of a key in this shard
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;

  Shard() = default;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  ~Shard() { Clear(); }

  static void Unlink(Entry* e) {
    e->prev->next = e->next;
    e->next->prev = e->prev;
  }
  void LinkFront(Entry* e) {
    e->prev = &ring;
    e->next = ring.next;
    ring.next->prev = e;
    ring.next = e;
  }

  void Remove(Entry* e) {
    bytes -= e->Cost();
    Unlink(e);
    Entry::Destroy(e);
  }

  void Erase(std::string_view key, size_t hash) {
    if (Entry* e = index.Erase(key, hash)) Remove(e);
  }

  void Clear() {
    index.Clear();
    Entry* e = ring.next;
    while (e != &ring) {
      Entry* next = e->next;
      Entry::Destroy(e);
      e = next;
    }
    ring.next = ring.prev = &ring;
    bytes = 0;
  }

  // Whether a key not held now may come in at `cost`, evicting others if need be.
  bool Admit(size_t hash, uint64_t cost, uint64_t capacity) {
    if (bytes + cost <= capacity) return true;  // room to spare: nothing is displaced
    // Slot from the low bits, fingerprint from the high ones; the shard took bits 20-25.
    uint32_t& slot = doorkeeper[hash & (doorkeeper.size() - 1)];
    const uint32_t fingerprint = static_cast<uint32_t>(hash >> 32) | 1;
    if (slot == fingerprint) {
      slot = 0;
      return true;
    }
    slot = fingerprint;
    return false;
  }

  // Stores the item in the tier (replacing the key's entry) or, when it is not admitted,
  // makes sure the tier holds nothing for the key.
  void Upsert(std::string_view key, size_t hash, const ItemHeader& header,
              std::string_view value, uint64_t capacity) {
    const uint64_t cost = Entry::CostOf(key.size(), value.size());
    Entry* e = index.Find(key, hash);
    const bool held = e != nullptr;
    if (held && e->value_size == value.size()) {
      // Same size (the common overwrite): rewrite in place, no allocation, no index change.
      // The write counts as a use, as a read does.
      e->header = header;
      value.copy(const_cast<char*>(e->value().data()), value.size());
      e->referenced = true;
      return;
    }
    if (held) {
      index.Erase(key, hash);
      Remove(e);
    }
    if (cost > capacity / 4) return;  // a few huge values must not flush the whole shard
    if (!held && !Admit(hash, cost, capacity)) return;
    e = Entry::Create(key, header, value);
    LinkFront(e);
    index.Insert(e, hash);
    bytes += cost;
    while (bytes > capacity && ring.prev != &ring) {
      Entry* victim = ring.prev;
      if (victim->referenced && victim != ring.next) {
        victim->referenced = false;
        Unlink(victim);
        LinkFront(victim);
        continue;
      }
      index.Erase(victim->key(), Hash(victim->key()));
      Remove(victim);
      ++evictions;
    }
  }
};

CachingStore::CachingStore(Store* inner, Clock* clock, uint64_t capacity_bytes)
    : inner_(inner),
      clock_(clock),
      shard_capacity_(capacity_bytes / kShards),
      shards_(new Shard[kShards]) {
  // About one slot per 512 bytes held (a few slots per entry for small items); a power of two.
  size_t slots = 1024;
  while (slots < shard_capacity_ / 512 && slots < (size_t{1} << 20)) slots <<= 1;
  for (size_t i = 0; i < kShards; ++i) shards_[i].doorkeeper.assign(slots, 0);
}

CachingStore::~CachingStore() = default;

size_t CachingStore::Hash(std::string_view key) { return std::hash<std::string_view>{}(key); }

CachingStore::Shard& CachingStore::ShardFor(size_t hash) const {
  // The high bits, so the shard does not correlate with the engine's lock stripe.
  return shards_[(hash >> 20) % kShards];
}

absl::StatusOr<LookupStatus> CachingStore::Get(std::string_view key, const ReadOptions& options,
                                               ItemHeader* header, std::string* value) {
  return Visit(key, options, [&](const ItemHeader& h, std::string_view v) {
    *header = h;
    value->assign(v);
  });
}

absl::StatusOr<LookupStatus> CachingStore::Visit(std::string_view key, const ReadOptions& options,
                                                 ItemVisitor fn) {
  const size_t hash = Hash(key);
  Shard& shard = ShardFor(hash);
  uint64_t seq;
  {
    std::lock_guard lock(shard.mu);
    if (Shard::Entry* entry = shard.index.Find(key, hash)) {
      entry->referenced = true;
      ++shard.hits;
      const int64_t now = clock_->Now();
      // Flushed before expired, as the inner store and memcached judge them.
      if (IsFlushed(entry->header, inner_->GetFlushState(), now)) return LookupStatus::kFlushed;
      if (IsExpired(entry->header, now)) return LookupStatus::kExpired;
      fn(entry->header, entry->value());
      return LookupStatus::kFound;
    }
    ++shard.misses;
    seq = shard.write_seq;
  }
  return inner_->Visit(key, options, [&](const ItemHeader& header, std::string_view value) {
    {
      std::lock_guard lock(shard.mu);
      if (shard.write_seq == seq) shard.Upsert(key, hash, header, value, shard_capacity_);
    }
    fn(header, value);
  });
}

absl::Status CachingStore::Put(std::string_view key, const ItemHeader& header,
                               std::string_view value, const WriteOptions& options) {
  absl::Status s = inner_->Put(key, header, value, options);
  const size_t hash = Hash(key);
  Shard& shard = ShardFor(hash);
  std::lock_guard lock(shard.mu);
  ++shard.write_seq;
  if (s.ok()) {
    shard.Upsert(key, hash, header, value, shard_capacity_);
  } else {
    shard.Erase(key, hash);  // the inner store's state is unknown: read it next time
  }
  return s;
}

absl::Status CachingStore::Delete(std::string_view key, const WriteOptions& options) {
  absl::Status s = inner_->Delete(key, options);
  const size_t hash = Hash(key);
  Shard& shard = ShardFor(hash);
  std::lock_guard lock(shard.mu);
  ++shard.write_seq;
  shard.Erase(key, hash);
  return s;
}

absl::Status CachingStore::SetFlushState(const FlushState& state) {
  absl::Status s = inner_->SetFlushState(state);
  if (!s.ok() || state.oldest_live > clock_->Now()) return s;
  for (size_t i = 0; i < kShards; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    ++shard.write_seq;
    shard.Clear();
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
