// RocksDbStore: the persistent Store. This header stays free of RocksDB includes (pimpl); only
// rocksdb_store.cc sees RocksDB. Design and guarantees: docs/storage.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "storage/item.h"
#include "storage/store.h"

namespace petracache::storage {

// What a successful Put/Delete guarantees ([storage] durability = none | wal | sync).
enum class Durability {
  kNone,  // no WAL: a crash loses writes not yet flushed to SST; a clean close loses nothing
  kWal,   // committed = WAL written to the OS: survives kill -9, not power loss
  kSync,  // committed = WAL fsynced: survives power loss
};

// Accepts "none", "wal", "sync". Returns false (and leaves *out alone) for anything else.
[[nodiscard]] bool ParseDurability(std::string_view text, Durability* out);
std::string_view DurabilityName(Durability durability);

class RocksDbStore final : public Store {
 public:
  // Maps 1:1 onto the INI [storage] section.
  struct Options {
    std::string db_path = "./data/rocksdb";
    uint64_t block_cache_size = uint64_t{1} << 30;
    uint64_t write_buffer_size = uint64_t{64} << 20;
    int max_write_buffer_number = 3;
    uint64_t target_file_size_base = uint64_t{64} << 20;
    int max_background_jobs = 4;
    bool enable_compression = false;
    bool enable_ttl_compaction = true;
    // RocksDB's compaction threads run at nice 19 (Env::LowerThreadPoolCPUPriority, for the
    // whole process: every store shares the default Env's pools). They then take the CPU
    // the event loops and the disk pool leave; flushes keep their priority, so memtables
    // still empty at the rate writes fill them.
    bool low_priority_compaction = true;
    // Memtables are hash tables of sorted chains (rocksdb_memtable.h) rather than RocksDB's
    // skiplist: an insert or point read then costs two or three cache misses instead of one
    // per skiplist level; a flush sorts the memtable's entries once.
    bool hashed_memtable = true;
    // A set whose key's newest version is a value in the mutable memtable, at least as long as
    // the new one, overwrites it there (RocksDB's inplace_update_support) instead of adding
    // an entry: a cache's overwrites of hot keys then stop filling memtables, and flushes
    // with them. The WAL still records every write. RocksDB then inserts one writer's batch
    // at a time (no concurrent memtable writes) and gives up point-in-time iteration, which
    // PetraCache does not use.
    bool inplace_update = true;
    Durability durability = Durability::kWal;
    // A write that may wait (WriteOptions::no_stall unset) waits for RocksDB's write stall to
    // end at most this long, counted from when the stall began, then fails with Unavailable
    // (the server answers "SERVER_ERROR 307 busy", mcrouter's busy code, before its 1 s
    // timeout). 0: wait as long as RocksDB stalls.
    uint64_t write_stall_timeout_ms = 500;
    // Judges expiry and flush in Get and in the compaction filter; must outlive the store.
    // nullptr means SystemClock::Get().
    Clock* clock = nullptr;
  };

  // Opens (creating if missing, parent directories included) the database at
  // options.db_path. Fails with a message naming the path when the directory cannot be
  // created or written, when another process (or another store in this process) holds the
  // database, or when the database is corrupt.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RocksDbStore>> Open(const Options& options);

  // Close()s if not closed yet.
  ~RocksDbStore() override;

  RocksDbStore(const RocksDbStore&) = delete;
  RocksDbStore& operator=(const RocksDbStore&) = delete;

  // Store. With cache_only, Get answers from the memtables and the block cache only and
  // reports kWouldBlock when that is not enough. A record that fails to decode is a
  // DataLoss error.
  [[nodiscard]] absl::StatusOr<LookupStatus> Get(std::string_view key, const ReadOptions& options,
                                                 ItemHeader* header, std::string* value) override;
  // Hands out the record where RocksDB pins it (a block cache block) when it can.
  [[nodiscard]] absl::StatusOr<LookupStatus> Visit(std::string_view key,
                                                   const ReadOptions& options,
                                                   ItemVisitor fn) override;
  using Store::Delete;
  using Store::Put;
  [[nodiscard]] absl::Status Put(std::string_view key, const ItemHeader& header,
                                 std::string_view value, const WriteOptions& options) override;
  [[nodiscard]] absl::Status Delete(std::string_view key, const WriteOptions& options) override;
  // Group commit: the WAL is kept in RocksDB's buffer (manual_wal_flush) until Commit writes
  // it (wal) or writes and fsyncs it (sync), once for every write made so far. Marks are
  // RocksDB sequence numbers, published only after a write's WAL record is buffered.
  uint64_t CommitMark() const override;
  bool Committed(uint64_t mark) const override;
  [[nodiscard]] absl::Status Commit(uint64_t mark) override;
  bool CommitWaitsForDevice() const override;
  [[nodiscard]] absl::StatusOr<uint64_t> NextCas() override;
  [[nodiscard]] absl::Status SetFlushState(const FlushState& state) override;
  FlushState GetFlushState() const override;
  StoreStats GetStats() const override;

  // Compacts every column family over the whole key range, bottommost level included, so the
  // compaction filter sees every item. Blocking; for tests and operators.
  [[nodiscard]] absl::Status CompactAll();
  // Flushes all memtables to SST files and waits for it.
  [[nodiscard]] absl::Status Flush();
  // Writes a consistent, openable copy of the database into `dir` (which must not exist yet)
  // while the store keeps serving: SST files are hard-linked when on the same filesystem,
  // the WAL is copied. Restore by pointing db_path at the copy.
  [[nodiscard]] absl::Status Checkpoint(const std::string& dir);
  // Numeric RocksDB health values (snake_case names) for `stats` and /metrics: block cache
  // usage/capacity/hits/misses, memtable bytes, key estimate, live SST bytes, pending
  // compaction bytes, write stall micros, background errors, WAL syncs, group commits.
  std::vector<std::pair<std::string, uint64_t>> Properties() const;
  // Exact number of records in the items column family (a full scan, dead items included
  // until compaction drops them). For tests and operators; not for the request path.
  [[nodiscard]] absl::StatusOr<uint64_t> CountRecords() const;
  // Stores `record` verbatim as the record of `key`, bypassing the codec, so tests can plant
  // corrupt records. Not for production use.
  [[nodiscard]] absl::Status PutRawRecordForTesting(std::string_view key, std::string_view record);
  // Pauses (or resumes) flushes and compactions, so tests can make RocksDB stop writes.
  [[nodiscard]] absl::Status PauseBackgroundWorkForTesting(bool pause);

  // Commits buffered WAL records (wal, sync) or flushes the memtables (none), then closes the database. Idempotent.
  // No other method may be called afterwards.
  [[nodiscard]] absl::Status Close();

  Durability durability() const;
  const std::string& db_path() const;

 private:
  struct Impl;
  explicit RocksDbStore(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace petracache::storage
