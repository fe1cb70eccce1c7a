// Store: the storage interface every layer above storage/ sees. Implementations: MemoryStore
// (tests) and RocksDbStore (the only file that includes RocksDB headers).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/item.h"

namespace petracache::storage {

enum class LookupStatus {
  kFound,
  kNotFound,
  kExpired,     // present but past its exptime (memcached's get_expired)
  kFlushed,     // present but invalidated by flush_all (memcached's get_flushed)
  kWouldBlock,  // cache_only was set and answering needs disk I/O
};

struct ReadOptions {
  // Never touch disk: answer from memory or report kWouldBlock.
  bool cache_only = false;
};

struct WriteOptions {
  // Never wait for the store to accept the write (see Store::Put).
  bool no_stall = false;
};

// Counters a Store exposes; read by `stats` and /metrics.
struct StoreStats {
  uint64_t approximate_items = 0;  // live + not yet compacted away
  uint64_t approximate_bytes = 0;  // bytes of keys and records
  uint64_t compaction_dropped_expired = 0;
  uint64_t compaction_dropped_flushed = 0;
  // The in-memory hot-item tier (CachingStore); zero without one.
  uint64_t hot_cache_hits = 0;
  uint64_t hot_cache_misses = 0;
  uint64_t hot_cache_bytes = 0;
  uint64_t hot_cache_items = 0;
  uint64_t hot_cache_evictions = 0;
};

// Thread-safe. Liveness (expiry, flush) is judged with the clock given to the store at
// creation; reads never write.
class Store {
 public:
  virtual ~Store() = default;

  // Looks key up. On kFound fills *header and *value (replacing their contents).
  [[nodiscard]] virtual absl::StatusOr<LookupStatus> Get(std::string_view key,
                                                         const ReadOptions& options,
                                                         ItemHeader* header,
                                                         std::string* value) = 0;
  // Looks key up like Get, but on kFound hands the item to `fn` instead of copying it out:
  // the header and value passed to `fn` are valid only during the call, and `fn` must not
  // call back into the store. Stores that hold items in memory override it to skip a copy;
  // the default reads with Get.
  using ItemVisitor = absl::FunctionRef<void(const ItemHeader& header, std::string_view value)>;
  [[nodiscard]] virtual absl::StatusOr<LookupStatus> Visit(std::string_view key,
                                                           const ReadOptions& options,
                                                           ItemVisitor fn);

  // Stores the item, replacing any previous one. Readers see it once this returns OK; it is
  // durable per the store's durability mode once a Commit() covering it returns OK (see
  // CommitMark). With options.no_stall, a write the store would have to delay (a
  // RocksDB write stall) fails at once with an Unavailable status, having written nothing;
  // without it, a store may still give up on a long stall with Unavailable (overload).
  [[nodiscard]] virtual absl::Status Put(std::string_view key, const ItemHeader& header,
                                         std::string_view value, const WriteOptions& options) = 0;
  [[nodiscard]] absl::Status Put(std::string_view key, const ItemHeader& header,
                                 std::string_view value) {
    return Put(key, header, value, WriteOptions{});
  }
  [[nodiscard]] virtual absl::Status Delete(std::string_view key, const WriteOptions& options) = 0;
  [[nodiscard]] absl::Status Delete(std::string_view key) { return Delete(key, WriteOptions{}); }

  // Group commit. Writes become visible when Put/Delete return but durable only when
  // committed, so many writes can share one WAL write (and one fsync). CommitMark() names
  // every write visible at the time of the call, Committed(mark) says whether those are all
  // durable, and Commit(mark) makes them durable, blocking; concurrent callers share the
  // work. A reply that acknowledges a write, or shows data another client wrote, may leave
  // only once Committed(its mark). Stores without a write-ahead log answer 0 / true / OK.
  virtual uint64_t CommitMark() const { return 0; }
  virtual bool Committed(uint64_t mark) const { return true; }
  [[nodiscard]] virtual absl::Status Commit(uint64_t mark) { return absl::OkStatus(); }
  // Whether Commit waits for the device (fsync): callers on event loops hand it off.
  virtual bool CommitWaitsForDevice() const { return false; }

  // A fresh CAS value: unique and strictly greater than every value handed out before, also
  // across restarts of a persistent store.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> NextCas() = 0;

  // flush_all state; SetFlushState persists it (synchronously) before returning.
  [[nodiscard]] virtual absl::Status SetFlushState(const FlushState& state) = 0;
  virtual FlushState GetFlushState() const = 0;

  virtual StoreStats GetStats() const = 0;
};

}  // namespace petracache::storage
