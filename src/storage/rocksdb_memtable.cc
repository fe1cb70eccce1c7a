// The hashed memtable: a fixed bucket array of sorted chains, with a sorted snapshot for
// ordered iteration. Why: RocksDB's skiplist memtable costs one cache miss per level visited
// (about 25 per insert into a 64 MiB memtable, most of a set's server CPU); a bucket and a
// chain of one or two entries cost two or three.
#include "storage/rocksdb_memtable.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/hash/hash.h"
#include "rocksdb/memtablerep.h"
#include "rocksdb/slice.h"
#include "rocksdb/version.h"

namespace petracache::storage {
namespace {

using rocksdb::KeyHandle;
using rocksdb::MemTableRep;
using rocksdb::Slice;

constexpr size_t kMinBuckets = 1024;
constexpr size_t kSequenceAndType = 8;  // an internal key is the user key and these 8 bytes
constexpr size_t kPrefetchAhead = 8;     // entries, when reading a sorted snapshot in order

// Heads each entry. The entry (RocksDB's memtable format: varint32 length, internal key,
// value) follows the node in the same arena allocation. `next` is published with release
// and read with acquire, so a reader that sees a node sees its entry.
struct Node {
  std::atomic<Node*> next{nullptr};
  char* entry() { return reinterpret_cast<char*>(this + 1); }
  const char* entry() const { return reinterpret_cast<const char*>(this + 1); }
};

std::string_view UserKeyOf(const Slice& internal_key) {
  return {internal_key.data(), internal_key.size() - kSequenceAndType};
}

// The first bytes of a user key as a big-endian integer, zero-padded: comparing two of
// these orders keys as the bytewise comparator does, except that equal values may still
// be different keys.
uint64_t PrefixWord(std::string_view user_key, size_t offset) {
  unsigned char bytes[8] = {};
  if (offset < user_key.size()) {
    std::memcpy(bytes, user_key.data() + offset, std::min<size_t>(8, user_key.size() - offset));
  }
  uint64_t word = 0;
  for (unsigned char b : bytes) word = (word << 8) | b;
  return word;
}

// RocksDB's LookupKey (db/dbformat.h, not an installed header) starts with three pointers:
// the memtable key is [start, end), the internal key [kstart, end). The layout has not changed
// since LevelDB; ViewOf checks it on every use, and a mismatch stops the process rather than
// reading the wrong bytes.
static_assert(ROCKSDB_MAJOR >= 6 && ROCKSDB_MAJOR <= 9, "check LookupKey's layout");
struct LookupKeyView {
  const char* start;
  const char* kstart;
  const char* end;
  Slice internal_key() const { return Slice(kstart, static_cast<size_t>(end - kstart)); }
};

LookupKeyView ViewOf(const rocksdb::LookupKey& k) {
  LookupKeyView view;
  std::memcpy(&view, static_cast<const void*>(&k), sizeof view);
  // The memtable key is a varint32 length and then the internal key.
  const unsigned char* p = reinterpret_cast<const unsigned char*>(view.start);
  uint32_t length = 0;
  for (int shift = 0; p != nullptr && shift <= 28; shift += 7) {
    const unsigned char byte = *p++;
    length |= static_cast<uint32_t>(byte & 0x7f) << shift;
    if (byte < 0x80) break;
  }
  if (view.start == nullptr || reinterpret_cast<const char*>(p) != view.kstart ||
      view.end - view.kstart != static_cast<ptrdiff_t>(length) || length < kSequenceAndType) {
    std::fprintf(stderr,
                 "petracache: this RocksDB's LookupKey layout is not the one the hashed "
                 "memtable reads; set [storage] hashed_memtable = false\n");
    std::abort();
  }
  return view;
}

// Compares a memtable entry with a seek target, given as a memtable key when RocksDB has one
// at hand, else as an internal key.
int CompareToTarget(const MemTableRep::KeyComparator& cmp, const char* entry,
                    const Slice& internal_key, const char* memtable_key) {
  return memtable_key != nullptr ? cmp(entry, memtable_key) : cmp(entry, internal_key);
}

// A sorted snapshot of a memtable's entries.
using Sorted = std::vector<const char*>;

// Iterates a sorted snapshot.
class SortedIterator final : public MemTableRep::Iterator {
 public:
  SortedIterator(const MemTableRep::KeyComparator& cmp, std::shared_ptr<const Sorted> sorted)
      : cmp_(cmp), sorted_(std::move(sorted)), pos_(sorted_->size()) {}

  bool Valid() const override { return pos_ < sorted_->size(); }
  const char* key() const override { return (*sorted_)[pos_]; }
  void Next() override {
    // A flush reads every entry in key order, i.e. at random addresses: ask for the one a
    // few steps ahead now so its cache miss overlaps the ones in between.
    if (pos_ + kPrefetchAhead < sorted_->size()) {
      __builtin_prefetch((*sorted_)[pos_ + kPrefetchAhead]);
    }
    ++pos_;
  }
  void Prev() override { pos_ = pos_ == 0 ? sorted_->size() : pos_ - 1; }
  void Seek(const Slice& internal_key, const char* memtable_key) override {
    auto it = std::partition_point(sorted_->begin(), sorted_->end(), [&](const char* e) {
      return CompareToTarget(cmp_, e, internal_key, memtable_key) < 0;
    });
    pos_ = static_cast<size_t>(it - sorted_->begin());
  }
  void SeekForPrev(const Slice& internal_key, const char* memtable_key) override {
    auto it = std::partition_point(sorted_->begin(), sorted_->end(), [&](const char* e) {
      return CompareToTarget(cmp_, e, internal_key, memtable_key) <= 0;
    });
    const size_t after = static_cast<size_t>(it - sorted_->begin());
    pos_ = after == 0 ? sorted_->size() : after - 1;
  }
  void SeekToFirst() override { pos_ = 0; }
  void SeekToLast() override { pos_ = sorted_->empty() ? 0 : sorted_->size() - 1; }

 private:
  const MemTableRep::KeyComparator& cmp_;
  std::shared_ptr<const Sorted> sorted_;
  size_t pos_;
};

class HashedRep final : public MemTableRep {
 public:
  HashedRep(const KeyComparator& cmp, rocksdb::Allocator* allocator, size_t bucket_count)
      : MemTableRep(allocator),
        cmp_(cmp),
        mask_(bucket_count - 1),
        buckets_(new std::atomic<Node*>[bucket_count]) {
    for (size_t i = 0; i < bucket_count; ++i) buckets_[i].store(nullptr, std::memory_order_relaxed);
  }

  static size_t Hash(std::string_view user_key) {
    return absl::Hash<std::string_view>{}(user_key);
  }
  const void* Buckets() const { return buckets_.get(); }

  KeyHandle Allocate(const size_t len, char** buf) override {
    char* raw = nullptr;
    const size_t size = sizeof(Node) + alignof(Node) - 1 + len;
    MemTableRep::Allocate(size, &raw);  // the arena's plain allocation is unaligned
    const uintptr_t aligned =
        (reinterpret_cast<uintptr_t>(raw) + alignof(Node) - 1) & ~uintptr_t{alignof(Node) - 1};
    Node* node = new (reinterpret_cast<void*>(aligned)) Node;
    *buf = node->entry();
    return node;
  }

  void Insert(KeyHandle handle) override { Link(static_cast<Node*>(handle), false); }
  void InsertConcurrently(KeyHandle handle) override { Link(static_cast<Node*>(handle), true); }

  bool Contains(const char* key) const override {
    for (const Node* n = Head(rocksdb::GetLengthPrefixedSlice(key)).load(std::memory_order_acquire);
         n != nullptr; n = n->next.load(std::memory_order_acquire)) {
      const int c = cmp_(n->entry(), key);
      if (c == 0) return true;
      if (c > 0) return false;
    }
    return false;
  }

  // Point reads (MemTable::Get and MultiGet). RocksDB's default would seek a dynamic-prefix
  // iterator, and in 7.8 it never deletes that iterator.
  void Get(const rocksdb::LookupKey& k, void* callback_args,
           bool (*callback_func)(void* arg, const char* entry)) override {
    const LookupKeyView key = ViewOf(k);
    for (const Node* n = Head(key.internal_key()).load(std::memory_order_acquire); n != nullptr;
         n = n->next.load(std::memory_order_acquire)) {
      if (cmp_(n->entry(), key.start) < 0) continue;
      if (!callback_func(callback_args, n->entry())) return;
    }
  }

  void MarkReadOnly() override { read_only_.store(true, std::memory_order_release); }

  size_t ApproximateMemoryUsage() override { return (mask_ + 1) * sizeof(std::atomic<Node*>); }

  Iterator* GetIterator(rocksdb::Arena* arena) override;
  Iterator* GetDynamicPrefixIterator(rocksdb::Arena* arena) override;

  // With an arena, RocksDB ends the iterator with ~Iterator() and leaves the memory to the
  // arena. RocksDB's Arena is not a public type, so such iterators live in blocks this
  // memtable owns and frees when it is destroyed (its iterators never outlive it: each
  // holds a reference to the memtable). Only flushes and DB iterators pass an arena.
  template <typename T, typename... Args>
  Iterator* NewIterator(rocksdb::Arena* arena, Args&&... args) {
    if (arena == nullptr) return new T(std::forward<Args>(args)...);
    static_assert(sizeof(T) <= sizeof(IteratorBlock) && alignof(T) <= alignof(IteratorBlock));
    std::lock_guard lock(iterator_blocks_mu_);
    IteratorBlock* block = iterator_blocks_.emplace_back(std::make_unique<IteratorBlock>()).get();
    return new (block->bytes) T(std::forward<Args>(args)...);
  }

  const KeyComparator& comparator() const { return cmp_; }

  std::atomic<Node*>& Head(const Slice& internal_key) const {
    return buckets_[Hash(UserKeyOf(internal_key)) & mask_];
  }

  // A snapshot of the entries in order. Once the memtable is read-only (waiting for or in
  // its flush) the snapshot is built once and shared by every iterator.
  std::shared_ptr<const Sorted> SortedEntries() {
    if (!read_only_.load(std::memory_order_acquire)) return BuildSorted();
    std::call_once(sorted_once_, [&] { sorted_ = BuildSorted(); });
    return sorted_;
  }

 private:
  // Links `node` into its chain before the first entry not less than it. Without
  // concurrent inserts the store cannot fail; with them, a lost race means another node
  // went in at the same place, so the walk resumes from there.
  void Link(Node* node, bool concurrent) {
    const char* entry = node->entry();
    std::atomic<Node*>* link = &Head(rocksdb::GetLengthPrefixedSlice(entry));
    Node* next = link->load(std::memory_order_acquire);
    for (;;) {
      while (next != nullptr && cmp_(next->entry(), entry) < 0) {
        link = &next->next;
        next = link->load(std::memory_order_acquire);
      }
      node->next.store(next, std::memory_order_relaxed);
      if (!concurrent) {
        link->store(node, std::memory_order_release);
        break;
      }
      if (link->compare_exchange_weak(next, node, std::memory_order_release,
                                      std::memory_order_acquire)) {
        break;
      }
    }
    count_.fetch_add(1, std::memory_order_relaxed);
  }

  std::shared_ptr<const Sorted> BuildSorted() const {
    // Sorting compares two words of each key's first 16 bytes held in the array, and reads
    // the entries themselves only for keys those bytes do not tell apart.
    struct Keyed {
      uint64_t w0, w1;
      const char* entry;
    };
    std::vector<Keyed> keyed;
    keyed.reserve(count_.load(std::memory_order_relaxed));
    for (size_t b = 0; b <= mask_; ++b) {
      if (b + kPrefetchAhead <= mask_) {
        __builtin_prefetch(buckets_[b + kPrefetchAhead].load(std::memory_order_relaxed));
      }
      for (const Node* n = buckets_[b].load(std::memory_order_acquire); n != nullptr;
           n = n->next.load(std::memory_order_acquire)) {
        const std::string_view user = UserKeyOf(rocksdb::GetLengthPrefixedSlice(n->entry()));
        keyed.push_back({PrefixWord(user, 0), PrefixWord(user, 8), n->entry()});
      }
    }
    std::sort(keyed.begin(), keyed.end(), [&](const Keyed& a, const Keyed& b) {
      if (a.w0 != b.w0) return a.w0 < b.w0;
      if (a.w1 != b.w1) return a.w1 < b.w1;
      return cmp_(a.entry, b.entry) < 0;
    });
    auto sorted = std::make_shared<Sorted>();
    sorted->reserve(keyed.size());
    for (const Keyed& k : keyed) sorted->push_back(k.entry);
    return sorted;
  }

  const KeyComparator& cmp_;
  const size_t mask_;
  const std::unique_ptr<std::atomic<Node*>[]> buckets_;
  std::atomic<size_t> count_{0};
  std::atomic<bool> read_only_{false};
  std::once_flag sorted_once_;
  std::shared_ptr<const Sorted> sorted_;
  struct alignas(std::max_align_t) IteratorBlock {
    unsigned char bytes[128];
  };
  std::mutex iterator_blocks_mu_;
  std::vector<std::unique_ptr<IteratorBlock>> iterator_blocks_;
};

// The dynamic-prefix iterator RocksDB uses for point lookups (MemTableRep::Get): Seek and
// SeekForPrev position within the target key's chain, and Next/Prev stay in that chain, which
// holds every entry of the target's user key. SeekToFirst/SeekToLast have no target, so they
// switch to a sorted snapshot of the whole memtable.
class ChainIterator final : public MemTableRep::Iterator {
 public:
  explicit ChainIterator(HashedRep* rep) : rep_(rep) {}

  bool Valid() const override { return sorted_ ? sorted_->Valid() : node_ != nullptr; }
  const char* key() const override { return sorted_ ? sorted_->key() : node_->entry(); }
  void Next() override {
    if (sorted_) return sorted_->Next();
    node_ = node_->next.load(std::memory_order_acquire);
  }
  void Prev() override {
    if (sorted_) return sorted_->Prev();
    const Node* before = nullptr;
    for (const Node* n = head_->load(std::memory_order_acquire); n != node_;
         n = n->next.load(std::memory_order_acquire)) {
      before = n;
    }
    node_ = before;
  }
  void Seek(const Slice& internal_key, const char* memtable_key) override {
    sorted_.reset();
    head_ = &rep_->Head(internal_key);
    node_ = head_->load(std::memory_order_acquire);
    while (node_ != nullptr && Compare(node_, internal_key, memtable_key) < 0) {
      node_ = node_->next.load(std::memory_order_acquire);
    }
  }
  void SeekForPrev(const Slice& internal_key, const char* memtable_key) override {
    sorted_.reset();
    head_ = &rep_->Head(internal_key);
    node_ = nullptr;
    for (const Node* n = head_->load(std::memory_order_acquire);
         n != nullptr && Compare(n, internal_key, memtable_key) <= 0;
         n = n->next.load(std::memory_order_acquire)) {
      node_ = n;
    }
  }
  void SeekToFirst() override {
    Whole();
    sorted_->SeekToFirst();
  }
  void SeekToLast() override {
    Whole();
    sorted_->SeekToLast();
  }

 private:
  int Compare(const Node* n, const Slice& internal_key, const char* memtable_key) const {
    return CompareToTarget(rep_->comparator(), n->entry(), internal_key, memtable_key);
  }
  void Whole() {
    if (!sorted_) sorted_.emplace(rep_->comparator(), rep_->SortedEntries());
  }

  HashedRep* rep_;
  const std::atomic<Node*>* head_ = nullptr;
  const Node* node_ = nullptr;
  std::optional<SortedIterator> sorted_;
};

MemTableRep::Iterator* HashedRep::GetIterator(rocksdb::Arena* arena) {
  return NewIterator<SortedIterator>(arena, cmp_, SortedEntries());
}

MemTableRep::Iterator* HashedRep::GetDynamicPrefixIterator(rocksdb::Arena* arena) {
  return NewIterator<ChainIterator>(arena, this);
}

class HashedFactory final : public rocksdb::MemTableRepFactory {
 public:
  explicit HashedFactory(size_t bucket_count) : bucket_count_(bucket_count) {}

  MemTableRep* CreateMemTableRep(const MemTableRep::KeyComparator& cmp,
                                 rocksdb::Allocator* allocator, const rocksdb::SliceTransform*,
                                 rocksdb::Logger*) override {
    auto* rep = new HashedRep(cmp, allocator, bucket_count_);
    newest_buckets_.store(rep->Buckets(), std::memory_order_relaxed);
    return rep;
  }
  const char* Name() const override { return "PetraCacheHashedMemTable"; }
  bool IsInsertConcurrentlySupported() const override { return true; }

  void Prefetch(std::string_view user_key) const {
    const void* buckets = newest_buckets_.load(std::memory_order_relaxed);
    if (buckets == nullptr) return;
    // Address arithmetic only: the array may belong to a memtable already freed.
    const uintptr_t slot = reinterpret_cast<uintptr_t>(buckets) +
                           (HashedRep::Hash(user_key) & (bucket_count_ - 1)) *
                               sizeof(std::atomic<Node*>);
    __builtin_prefetch(reinterpret_cast<const void*>(slot));
  }

 private:
  const size_t bucket_count_;
  // The bucket array of the memtable created last: RocksDB's mutable memtable.
  std::atomic<const void*> newest_buckets_{nullptr};
};

}  // namespace

std::shared_ptr<rocksdb::MemTableRepFactory> NewHashedMemTableFactory(size_t bucket_count) {
  return std::make_shared<HashedFactory>(std::bit_ceil(std::max(bucket_count, kMinBuckets)));
}

void PrefetchBucket(const rocksdb::MemTableRepFactory& factory, std::string_view user_key) {
  static_cast<const HashedFactory&>(factory).Prefetch(user_key);
}

}  // namespace petracache::storage
