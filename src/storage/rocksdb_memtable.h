// A hashed memtable representation for the RocksDB store: inserts and point reads cost a
// bucket and a short chain instead of a skiplist descent. Part of the RocksDB store (with
// rocksdb_store.cc the only code that sees RocksDB headers); this header forward-declares.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

namespace rocksdb {
class MemTableRepFactory;
}  // namespace rocksdb

namespace petracache::storage {

// Each memtable gets `bucket_count` buckets (rounded up to a power of two, at least 1024),
// allocated outside RocksDB's arena and reported by ApproximateMemoryUsage.
//
// Entries live in per-bucket chains, each chain sorted in internal-key order, so point
// lookups (Get, the dynamic-prefix iterator) visit one chain. A full iterator (flush,
// DB::NewIterator) sorts a snapshot of the entries present when it is created: entries
// inserted later are not seen, which RocksDB's reads never need (they read at a sequence
// number fixed before the iterator exists; tailing iterators are not supported). Concurrent
// inserts are supported (allow_concurrent_memtable_write). Requires the bytewise comparator.
std::shared_ptr<rocksdb::MemTableRepFactory> NewHashedMemTableFactory(size_t bucket_count);

// Asks the CPU to fetch the bucket `user_key` hashes to in the newest memtable `factory`
// made (the mutable one), so that a write about to insert the key finds it in cache. Only a
// hint: it reads no memory (a memtable freed meanwhile costs nothing). `factory` must come
// from NewHashedMemTableFactory.
void PrefetchBucket(const rocksdb::MemTableRepFactory& factory, std::string_view user_key);

}  // namespace petracache::storage
