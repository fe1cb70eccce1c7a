// RocksDbStore: items in the "default" column family, the CAS ceiling and flush_all state in
// "meta", expired/flushed items reclaimed by a compaction filter. The only file that includes
// RocksDB headers. Design notes: docs/storage.md.
#include "storage/rocksdb_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "rocksdb/cache.h"
#include "rocksdb/compaction_filter.h"
#include "rocksdb/convenience.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/iterator.h"
#include "rocksdb/listener.h"
#include "rocksdb/metadata.h"
#include "rocksdb/options.h"
#include "rocksdb/statistics.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/flush_state_cell.h"
#include "storage/rocksdb_memtable.h"

namespace petracache::storage {
namespace {

constexpr char kMetaColumnFamily[] = "meta";
constexpr char kCasCeilingKey[] = "cas_ceiling";
constexpr char kFlushStateKey[] = "flush_state";
constexpr uint8_t kMetaFormatV1 = 1;

// CAS values handed out per persisted ceiling: one synchronous meta write per 2^20 CAS values,
// and at most 2^20 values skipped per restart.
constexpr uint64_t kCasBlock = uint64_t{1} << 20;

// Files not compacted for this long are rewritten so the compaction filter reclaims expired
// items even in cold key ranges.
constexpr uint64_t kPeriodicCompactionSeconds = 24 * 60 * 60;

// Fraction of write_buffer_size spent on the memtable whole-key bloom filter.
constexpr double kMemtableBloomRatio = 0.02;
// A thread's reused WriteBatch is replaced rather than cleared once it has held more than this.
constexpr size_t kMaxReusedBatchBytes = 64 << 10;
constexpr int kBloomBitsPerKey = 10;

void PutFixed64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// Meta records: format byte + fixed-width little-endian fields.
std::string EncodeCasCeiling(uint64_t ceiling) {
  std::string out(1, static_cast<char>(kMetaFormatV1));
  PutFixed64(ceiling, &out);
  return out;
}

bool DecodeCasCeiling(std::string_view in, uint64_t* ceiling) {
  if (in.size() != 9 || static_cast<uint8_t>(in[0]) != kMetaFormatV1) return false;
  *ceiling = GetFixed64(in.data() + 1);
  return true;
}

std::string EncodeFlushState(const FlushState& state) {
  std::string out(1, static_cast<char>(kMetaFormatV1));
  PutFixed64(static_cast<uint64_t>(state.oldest_live), &out);
  PutFixed64(state.oldest_cas, &out);
  return out;
}

bool DecodeFlushState(std::string_view in, FlushState* state) {
  if (in.size() != 17 || static_cast<uint8_t>(in[0]) != kMetaFormatV1) return false;
  state->oldest_live = static_cast<int64_t>(GetFixed64(in.data() + 1));
  state->oldest_cas = GetFixed64(in.data() + 9);
  return true;
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

// Converts a RocksDB status; `context` says what was being done (and names the path).
absl::Status FromRocks(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrCat(context, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  if (s.IsNotSupported()) return absl::UnimplementedError(message);
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(message);
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain() || s.IsIncomplete()) {
    return absl::UnavailableError(message);
  }
  if (s.IsIOError() && absl::StrContains(s.ToString(), "Permission denied")) {
    return absl::PermissionDeniedError(message);
  }
  return absl::InternalError(message);
}

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// True when the column family's memtables are empty and no flush is running.
bool MemtablesFlushed(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
  uint64_t active = 1, immutable = 1, running = 1;
  return db->GetIntProperty(cf, "rocksdb.num-entries-active-mem-table", &active) &&
         db->GetIntProperty(cf, "rocksdb.num-immutable-mem-table", &immutable) &&
         db->GetIntProperty("rocksdb.num-running-flushes", &running) && active == 0 &&
         immutable == 0 && running == 0;
}

// The open error an operator can act on: who holds the lock, that the data is corrupt, or
// what RocksDB said about the path.
absl::Status OpenError(const rocksdb::Status& s, const std::string& path) {
  const std::string text = s.ToString();
  if (s.IsIOError() && absl::StrContains(text, "/LOCK") &&
      absl::StrContains(text, "Permission denied")) {
    return absl::PermissionDeniedError(absl::StrCat(
        "database at '", path,
        "' is not writable by this user (files there may belong to another user, e.g. after a "
        "run as root: chown them to the service user) (",
        text, ")"));
  }
  if (s.IsIOError() && absl::StrContains(text, "/LOCK")) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database at '", path,
        "' is in use: another process (e.g. another petracache) or another store in this "
        "process holds its LOCK file (",
        text, ")"));
  }
  if (s.IsCorruption()) {
    return absl::DataLossError(absl::StrCat("database at '", path, "' is corrupt (", text,
                                            "); restore it or remove the directory"));
  }
  absl::Status status = FromRocks(s, absl::StrCat("cannot open database at '", path, "'"));
  // An I/O failure while opening is about the environment (not a directory, read-only, ...).
  if (status.code() == absl::StatusCode::kInternal) {
    return absl::FailedPreconditionError(status.message());
  }
  return status;
}

// State shared by the store and every compaction filter. Held by shared_ptr so a filter
// running while the store shuts down never touches freed memory.
struct Liveness {
  explicit Liveness(Clock* c) : clock(c) {}
  Clock* const clock;
  FlushStateCell flush_state;
  std::atomic<uint64_t> dropped_expired{0};
  std::atomic<uint64_t> dropped_flushed{0};
};

// Drops items that are flushed or expired. A kRemove becomes a deletion tombstone (RocksDB's
// CompactionIterator rewrites the entry as kTypeDeletion) that is only discarded once no
// older version can exist below the output level, so a removed item can never uncover an
// older version of the same key.
class ItemCompactionFilter final : public rocksdb::CompactionFilter {
 public:
  explicit ItemCompactionFilter(std::shared_ptr<Liveness> liveness)
      : liveness_(std::move(liveness)) {}

  Decision FilterV2(int /*level*/, const rocksdb::Slice& /*key*/, ValueType value_type,
                    const rocksdb::Slice& existing_value, std::string* /*new_value*/,
                    std::string* /*skip_until*/) const override {
    if (value_type != ValueType::kValue) return Decision::kKeep;
    ItemHeader header;
    std::string_view value;
    // Never drop what we cannot read: Get reports it as corruption instead.
    if (!DecodeRecord(std::string_view(existing_value.data(), existing_value.size()), &header,
                      &value)) {
      return Decision::kKeep;
    }
    const int64_t now = liveness_->clock->Now();
    if (IsFlushed(header, liveness_->flush_state.Load(), now)) {
      liveness_->dropped_flushed.fetch_add(1, std::memory_order_relaxed);
      return Decision::kRemove;
    }
    if (IsExpired(header, now)) {
      liveness_->dropped_expired.fetch_add(1, std::memory_order_relaxed);
      return Decision::kRemove;
    }
    return Decision::kKeep;
  }

  const char* Name() const override { return "petracache.ItemCompactionFilter"; }

 private:
  std::shared_ptr<Liveness> liveness_;
};

class ItemCompactionFilterFactory final : public rocksdb::CompactionFilterFactory {
 public:
  explicit ItemCompactionFilterFactory(std::shared_ptr<Liveness> liveness)
      : liveness_(std::move(liveness)) {}

  std::unique_ptr<rocksdb::CompactionFilter> CreateCompactionFilter(
      const rocksdb::CompactionFilter::Context& /*context*/) override {
    return std::make_unique<ItemCompactionFilter>(liveness_);
  }

  const char* Name() const override { return "petracache.ItemCompactionFilterFactory"; }

 private:
  std::shared_ptr<Liveness> liveness_;
};

absl::Status ValidateOptions(const RocksDbStore::Options& o) {
  if (o.db_path.empty()) return absl::InvalidArgumentError("storage db_path is empty");
  if (o.block_cache_size == 0) {
    return absl::InvalidArgumentError("storage block_cache_size must be > 0");
  }
  if (o.write_buffer_size == 0) {
    return absl::InvalidArgumentError("storage write_buffer_size must be > 0");
  }
  if (o.max_write_buffer_number < 1) {
    return absl::InvalidArgumentError("storage max_write_buffer_number must be >= 1");
  }
  if (o.target_file_size_base == 0) {
    return absl::InvalidArgumentError("storage target_file_size_base must be > 0");
  }
  if (o.max_background_jobs < 1) {
    return absl::InvalidArgumentError("storage max_background_jobs must be >= 1");
  }
  return absl::OkStatus();
}

absl::Status CreateParentDirectories(const std::string& db_path) {
  const std::filesystem::path parent = std::filesystem::path(db_path).parent_path();
  if (parent.empty()) return absl::OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (!ec) return absl::OkStatus();
  std::string message = absl::StrCat("cannot create directory '", parent.string(),
                                     "' for storage db_path '", db_path, "': ", ec.message());
  if (ec == std::errc::permission_denied) return absl::PermissionDeniedError(message);
  return absl::FailedPreconditionError(message);
}

rocksdb::CompressionType ChooseCompression(bool enable) {
  if (!enable) return rocksdb::kNoCompression;
  const std::vector<rocksdb::CompressionType> supported = rocksdb::GetSupportedCompressions();
  auto has = [&](rocksdb::CompressionType t) {
    return std::find(supported.begin(), supported.end(), t) != supported.end();
  };
  if (has(rocksdb::kLZ4Compression)) return rocksdb::kLZ4Compression;
  if (has(rocksdb::kSnappyCompression)) return rocksdb::kSnappyCompression;
  PC_LOG(kWarning, "storage: enable_compression set but neither LZ4 nor Snappy is available");
  return rocksdb::kNoCompression;
}

rocksdb::BlockBasedTableOptions TableOptions(const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  // A whole-key bloom filter answers most misses without reading a data block.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(kBloomBitsPerKey));
  table.whole_key_filtering = true;
  // Index and filter blocks live in (and are bounded by) the block cache; L0's stay pinned
  // because every lookup consults every L0 file.
  table.cache_index_and_filter_blocks = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  // A hash index inside each data block turns the in-block binary search into one probe.
  table.data_block_index_type = rocksdb::BlockBasedTableOptions::kDataBlockBinaryAndHash;
  table.data_block_hash_table_util_ratio = 0.75;
  return table;
}

// ---- The live-file record: catches a MANIFEST that went back in time ----
//
// RocksDB reads a MANIFEST cut short at a record boundary (external damage) as a valid older
// state, then deletes the table files its lost edits had added as obsolete: the cache would
// start with part of its data gone and say nothing. So after every flush and compaction (and
// at open and close) the numbers of the live table files are written to kLiveFilesName
// (atomically: temp file, fsync, rename). At the next open a read-only open first asks
// RocksDB what it would recover; if files the record lists as live are still on disk but
// would be dropped, and nothing newer replaces them, the MANIFEST lost edits: refuse to start
// before RocksDB deletes anything.
constexpr char kLiveFilesName[] = "PETRACACHE-LIVE-SST";
constexpr char kLiveFilesHeader[] = "petracache live table files v1";

std::set<uint64_t> LiveTableFiles(rocksdb::DB* db) {
  std::vector<rocksdb::LiveFileMetaData> files;
  db->GetLiveFilesMetaData(&files);
  std::set<uint64_t> numbers;
  for (const rocksdb::LiveFileMetaData& f : files) numbers.insert(f.file_number);
  return numbers;
}

// Table file numbers present in `dir` (NNNNNN.sst).
std::set<uint64_t> TableFilesOnDisk(const std::string& dir) {
  std::set<uint64_t> numbers;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.ends_with(".sst")) {
      char* end = nullptr;
      const uint64_t n = std::strtoull(name.c_str(), &end, 10);
      if (end == name.c_str() + name.size() - 4) numbers.insert(n);
    }
  }
  return numbers;
}

bool FsyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

class LiveFileRecorder final : public rocksdb::EventListener {
 public:
  explicit LiveFileRecorder(std::string dir) : dir_(std::move(dir)) {}

  void OnFlushCompleted(rocksdb::DB* db, const rocksdb::FlushJobInfo&) override { Record(db); }
  void OnCompactionCompleted(rocksdb::DB* db, const rocksdb::CompactionJobInfo&) override {
    Record(db);
  }

  void Record(rocksdb::DB* db) {
    std::lock_guard lock(mu_);
    const std::string path = dir_ + "/" + kLiveFilesName;
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << kLiveFilesHeader << "\n";
      for (uint64_t n : LiveTableFiles(db)) out << n << "\n";
      if (!out.flush()) {
        PC_LOG(kWarning, "storage: cannot write %s", tmp);
        return;
      }
    }
    if (!FsyncPath(tmp, O_WRONLY) || std::rename(tmp.c_str(), path.c_str()) != 0 ||
        !FsyncPath(dir_, O_RDONLY | O_DIRECTORY)) {
      PC_LOG(kWarning, "storage: cannot update %s", path);
    }
  }

  // The recorded set, or nullopt without a (well-formed) record.
  static std::optional<std::set<uint64_t>> Read(const std::string& dir) {
    std::ifstream in(dir + "/" + kLiveFilesName);
    std::string line;
    if (!in || !std::getline(in, line) || line != kLiveFilesHeader) return std::nullopt;
    std::set<uint64_t> numbers;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      char* end = nullptr;
      const uint64_t n = std::strtoull(line.c_str(), &end, 10);
      if (end != line.c_str() + line.size()) return std::nullopt;
      numbers.insert(n);
    }
    return numbers;
  }

 private:
  const std::string dir_;
  std::mutex mu_;
};

// Fails when the database would open in an older state than the live-file record (see
// above). Any other problem is left to the real open to report.
absl::Status CheckNotBehindRecord(const std::string& dir, const rocksdb::DBOptions& db_options,
                                  const std::vector<rocksdb::ColumnFamilyDescriptor>& cfs) {
  std::optional<std::set<uint64_t>> recorded = LiveFileRecorder::Read(dir);
  if (!recorded) return absl::OkStatus();
  const std::set<uint64_t> on_disk = TableFilesOnDisk(dir);
  rocksdb::DBOptions ro = db_options;
  ro.create_if_missing = false;
  ro.create_missing_column_families = false;
  ro.max_open_files = 64;  // a look at the MANIFEST, not a warm-up
  ro.listeners.clear();
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::OpenForReadOnly(ro, dir, cfs, &handles, &raw).ok()) return absl::OkStatus();
  std::unique_ptr<rocksdb::DB> db(raw);
  const std::set<uint64_t> live = LiveTableFiles(db.get());
  for (rocksdb::ColumnFamilyHandle* h : handles) (void)db->DestroyColumnFamilyHandle(h);
  (void)db->Close();
  std::vector<uint64_t> dropped;
  for (uint64_t n : *recorded) {
    if (!live.contains(n) && on_disk.contains(n)) dropped.push_back(n);
  }
  bool newer = false;
  for (uint64_t n : live) newer |= !recorded->contains(n);
  if (dropped.empty() || newer) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "database at '", dir, "' would open without ", dropped.size(),
      " table file(s) it last recorded as live (e.g. ", dropped.front(),
      ".sst, still on disk): its MANIFEST has lost its latest edits (damaged or truncated). "
      "Refusing to start with part of the data missing; restore a backup, or delete ",
      kLiveFilesName, " in that directory to start with what the MANIFEST still describes"));
}

// RocksDB statistics reduced to the tickers Properties() reports. RocksDB's own
// (CreateDBStatistics) counts all of its ~200 tickers in per-core arrays, each count a CPU
// lookup and an atomic add, and a set alone records about ten. Here any other ticker is
// dropped after one table lookup, and the kept ones are counted in a few cache-line stripes,
// one per thread (by turns), summed when read.
class ReportedTickers final : public rocksdb::Statistics {
 public:
  ReportedTickers() {
    slot_.fill(-1);
    for (size_t i = 0; i < std::size(kKept); ++i) slot_[kKept[i]] = static_cast<int8_t>(i);
    // No timers or histograms: RocksDB then skips the clock reads around Get and Write.
    set_stats_level(rocksdb::StatsLevel::kExceptHistogramOrTimers);
  }

  const char* Name() const override { return "PetraCacheReportedTickers"; }

  void recordTick(uint32_t ticker, uint64_t count = 0) override {
    const int slot = SlotOf(ticker);
    if (slot < 0) return;
    stripes_[ThreadStripe()].counts[slot].fetch_add(count, std::memory_order_relaxed);
  }
  uint64_t getTickerCount(uint32_t ticker) const override {
    const int slot = SlotOf(ticker);
    uint64_t sum = 0;
    if (slot < 0) return sum;
    for (const Stripe& stripe : stripes_) {
      sum += stripe.counts[slot].load(std::memory_order_relaxed);
    }
    return sum;
  }
  void setTickerCount(uint32_t ticker, uint64_t count) override {
    const int slot = SlotOf(ticker);
    if (slot < 0) return;
    for (size_t i = 0; i < kStripes; ++i) {
      stripes_[i].counts[slot].store(i == 0 ? count : 0, std::memory_order_relaxed);
    }
  }
  uint64_t getAndResetTickerCount(uint32_t ticker) override {
    const int slot = SlotOf(ticker);
    uint64_t sum = 0;
    if (slot < 0) return sum;
    for (Stripe& stripe : stripes_) {
      sum += stripe.counts[slot].exchange(0, std::memory_order_relaxed);
    }
    return sum;
  }
  void histogramData(uint32_t /*type*/, rocksdb::HistogramData* data) const override {
    *data = rocksdb::HistogramData();
  }
  void recordInHistogram(uint32_t /*type*/, uint64_t /*value*/) override {}
  bool HistEnabledForType(uint32_t /*type*/) const override { return false; }
  rocksdb::Status Reset() override {
    for (Stripe& stripe : stripes_) {
      for (auto& count : stripe.counts) count.store(0, std::memory_order_relaxed);
    }
    return rocksdb::Status::OK();
  }
  // For RocksDB's periodic LOG dump and stats history.
  bool getTickerMap(std::map<std::string, uint64_t>* out) const override {
    for (const auto& [ticker, name] : rocksdb::TickersNameMap) {
      if (SlotOf(ticker) >= 0) (*out)[name] = getTickerCount(ticker);
    }
    return true;
  }
  std::string ToString() const override {
    std::map<std::string, uint64_t> tickers;
    getTickerMap(&tickers);
    std::string out;
    for (const auto& [name, count] : tickers) absl::StrAppend(&out, name, " COUNT : ", count, "\n");
    return out;
  }

 private:
  static constexpr uint32_t kKept[] = {rocksdb::BLOCK_CACHE_HIT,     rocksdb::BLOCK_CACHE_MISS,
                                       rocksdb::BLOOM_FILTER_USEFUL, rocksdb::STALL_MICROS,
                                       rocksdb::WAL_FILE_SYNCED,     rocksdb::NUMBER_KEYS_UPDATED};
  static constexpr size_t kStripes = 8;
  struct alignas(64) Stripe {
    std::array<std::atomic<uint64_t>, std::size(kKept)> counts{};
  };

  int SlotOf(uint32_t ticker) const { return ticker < slot_.size() ? slot_[ticker] : -1; }
  static size_t ThreadStripe() {
    static std::atomic<size_t> next{0};
    thread_local const size_t stripe = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
    return stripe;
  }

  std::array<int8_t, rocksdb::TICKER_ENUM_MAX> slot_;
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace

bool ParseDurability(std::string_view text, Durability* out) {
  if (text == "none") {
    *out = Durability::kNone;
  } else if (text == "wal") {
    *out = Durability::kWal;
  } else if (text == "sync") {
    *out = Durability::kSync;
  } else {
    return false;
  }
  return true;
}

std::string_view DurabilityName(Durability durability) {
  switch (durability) {
    case Durability::kNone:
      return "none";
    case Durability::kWal:
      return "wal";
    case Durability::kSync:
      return "sync";
  }
  return "wal";
}

struct RocksDbStore::Impl {
  Options options;
  std::shared_ptr<Liveness> liveness;
  std::shared_ptr<rocksdb::Cache> block_cache;
  std::shared_ptr<rocksdb::Statistics> statistics;
  std::shared_ptr<rocksdb::MemTableRepFactory> hashed_memtables;  // null with the skiplist
  std::shared_ptr<LiveFileRecorder> live_files;
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::ColumnFamilyHandle* items_cf = nullptr;
  rocksdb::ColumnFamilyHandle* meta_cf = nullptr;
  rocksdb::WriteOptions item_write_options;
  rocksdb::WriteOptions meta_write_options;  // always WAL + fsync
  bool closed = false;

  // Group commit (wal, sync). std::mutex: ThreadSanitizer sees it, absl's is uninstrumented.
  std::mutex commit_mu;                 // one caller at a time writes (and syncs) the WAL
  std::atomic<uint64_t> committed{0};   // every write up to this sequence number is durable
  std::atomic<uint64_t> group_commits{0};

  // Monotonic ms when writers first found RocksDB stalling (0: not stalling).
  std::atomic<int64_t> stall_since_ms{0};
  std::atomic<uint64_t> stall_rejections{0};

  // Runs an item write. With no_stall it fails at once (Incomplete) instead of waiting for a
  // write stall; otherwise it waits for the stall to end, but no longer than the stall
  // timeout counted from when the stall began, so that once a stall has outlasted it every
  // queued write is refused at once instead of each waiting in turn.
  template <typename Op>
  rocksdb::Status WriteItem(const WriteOptions& options, Op op) {
    rocksdb::WriteOptions w = item_write_options;
    w.no_slowdown = true;
    rocksdb::Status s = op(w);
    if (!s.IsIncomplete() || options.no_stall) return s;
    const int64_t timeout = static_cast<int64_t>(this->options.write_stall_timeout_ms);
    while (s.IsIncomplete()) {
      const int64_t now = SteadyMs();
      int64_t since = stall_since_ms.load(std::memory_order_relaxed);
      if (since == 0 && stall_since_ms.compare_exchange_strong(since, now)) since = now;
      if (timeout > 0 && now - since >= timeout) {
        stall_rejections.fetch_add(1, std::memory_order_relaxed);
        return rocksdb::Status::Busy(absl::StrCat("writes stalled for ", now - since, " ms"));
      }
      uint64_t stopped = 0;
      if (db->GetIntProperty("rocksdb.is-write-stopped", &stopped) && stopped == 0) {
        // Slowed, not stopped: RocksDB paces this write (by its size) and lets it through.
        w.no_slowdown = false;
        s = op(w);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      s = op(w);
    }
    if (s.ok()) stall_since_ms.store(0, std::memory_order_relaxed);
    return s;
  }

  // Every CAS below cas_ceiling is covered by the ceiling persisted in meta.
  std::atomic<uint64_t> next_cas{1};
  std::atomic<uint64_t> cas_ceiling{0};
  absl::Mutex cas_mu;    // serializes ceiling extensions
  absl::Mutex flush_mu;  // serializes SetFlushState

  absl::Status PersistCasCeiling(uint64_t ceiling) {
    return FromRocks(
        db->Put(meta_write_options, meta_cf, kCasCeilingKey, EncodeCasCeiling(ceiling)),
        absl::StrCat("persisting CAS ceiling in '", options.db_path, "'"));
  }

  absl::StatusOr<uint64_t> ExtendCasCeiling(uint64_t cas) {
    absl::MutexLock lock(&cas_mu);
    if (cas < cas_ceiling.load(std::memory_order_acquire)) return cas;  // someone else did it
    const uint64_t new_ceiling = cas + kCasBlock;
    // On failure `cas` is never handed out, so uniqueness holds; the next caller retries.
    absl::Status status = PersistCasCeiling(new_ceiling);
    if (!status.ok()) return status;
    cas_ceiling.store(new_ceiling, std::memory_order_release);
    return cas;
  }

  // Reads a meta value; *found is false when the key is absent.
  absl::Status ReadMeta(const char* key, std::string* value, bool* found) {
    rocksdb::Status s = db->Get(rocksdb::ReadOptions(), meta_cf, key, value);
    *found = s.ok();
    if (s.IsNotFound()) return absl::OkStatus();
    return FromRocks(s, absl::StrCat("reading ", key, " from '", options.db_path, "'"));
  }

  absl::Status LoadMeta() {
    std::string raw;
    bool found = false;
    absl::Status status = ReadMeta(kFlushStateKey, &raw, &found);
    if (!status.ok()) return status;
    FlushState flush_state;
    if (found && !DecodeFlushState(raw, &flush_state)) {
      return absl::DataLossError(
          absl::StrCat("database at '", options.db_path, "' is corrupt: bad flush state record"));
    }
    liveness->flush_state.Store(flush_state);

    status = ReadMeta(kCasCeilingKey, &raw, &found);
    if (!status.ok()) return status;
    uint64_t next = 1;
    if (found && !DecodeCasCeiling(raw, &next)) {
      return absl::DataLossError(
          absl::StrCat("database at '", options.db_path, "' is corrupt: bad CAS ceiling record"));
    }
    next = std::max<uint64_t>(next, 1);
    // Every CAS of the previous run is below the persisted ceiling, so starting there keeps
    // CAS strictly increasing across restarts.
    const uint64_t ceiling = next + kCasBlock;
    status = PersistCasCeiling(ceiling);
    if (!status.ok()) return status;
    next_cas.store(next, std::memory_order_relaxed);
    cas_ceiling.store(ceiling, std::memory_order_release);
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<RocksDbStore>> RocksDbStore::Open(const Options& options) {
  absl::Status status = ValidateOptions(options);
  if (!status.ok()) return status;
  status = CreateParentDirectories(options.db_path);
  if (!status.ok()) return status;

  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (impl->options.clock == nullptr) impl->options.clock = SystemClock::Get();
  impl->liveness = std::make_shared<Liveness>(impl->options.clock);
  impl->block_cache = rocksdb::NewLRUCache(options.block_cache_size);
  impl->statistics = std::make_shared<ReportedTickers>();

  if (options.low_priority_compaction) {
    rocksdb::Status lowered = rocksdb::Env::Default()->LowerThreadPoolCPUPriority(
        rocksdb::Env::Priority::LOW, rocksdb::CpuPriority::kLow);
    if (!lowered.ok()) PC_LOG(kWarning, "storage: compaction priority: %s", lowered.ToString());
  }
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // Keep every table reader open: with RocksDB 7.8.3 a kBlockCacheTier read that misses the
  // table cache can report NotFound instead of Incomplete. Also required by periodic
  // compaction.
  db_options.max_open_files = -1;
  db_options.max_background_jobs = options.max_background_jobs;
  db_options.statistics = impl->statistics;
  db_options.bytes_per_sync = 1 << 20;
  // The WAL is written back as it grows, too. Otherwise a memtable switch (with overwrites in
  // place, when the WAL reaches max_total_wal_size: up to 192 MiB of dirty pages) ends with
  // one fsync of all of it, and the event loop's next WAL write waited behind that fsync:
  // 80–90 ms stalls on the write-heavy load, 7.7 ms with this.
  db_options.wal_bytes_per_sync = 1 << 20;
  // Debian's librocksdb is built without NDEBUG, where RocksDB's default log level is DEBUG:
  // one LOG line per WAL flush, i.e. per event-loop iteration that wrote (~700 KB/s under
  // load, with formatting on the loop). INFO keeps flushes, compactions and errors.
  db_options.info_log_level = rocksdb::InfoLogLevel::INFO_LEVEL;
  db_options.max_log_file_size = 64 << 20;  // then a new LOG; keep_log_file_num bounds the rest
  db_options.keep_log_file_num = 5;
  db_options.manual_wal_flush = options.durability != Durability::kNone;

  rocksdb::ColumnFamilyOptions items_options;
  items_options.table_factory.reset(
      rocksdb::NewBlockBasedTableFactory(TableOptions(impl->block_cache)));
  items_options.write_buffer_size = options.write_buffer_size;
  items_options.max_write_buffer_number = options.max_write_buffer_number;
  items_options.target_file_size_base = options.target_file_size_base;
  if (options.hashed_memtable) {
    // About one bucket per 256 bytes of memtable: chains of one or two entries for values
    // of ~100 bytes, and buckets cost 1/32 of the memtable's size. No memtable bloom: a
    // lookup of an absent key reads a bucket and a short chain, which is what probing the
    // bloom would cost, and every insert would pay for the bloom too.
    impl->hashed_memtables = NewHashedMemTableFactory(options.write_buffer_size / 256);
    items_options.memtable_factory = impl->hashed_memtables;
  } else {
    items_options.memtable_prefix_bloom_size_ratio = kMemtableBloomRatio;
    items_options.memtable_whole_key_filtering = true;
  }
  if (options.inplace_update) {
    items_options.inplace_update_support = true;
    // Readers and the writer take one of these striped locks per key. RocksDB's default is
    // 10,000 (560 KB of locks, nearly each use a cache miss); one memtable writer at a time
    // and a reader per event loop need far fewer.
    items_options.inplace_update_num_locks = 128;
    db_options.allow_concurrent_memtable_write = false;  // required by RocksDB with it
  }
  // The WAL files kept for unflushed memtables. RocksDB's default allows four times all
  // memtables; overwrites in place fill no memtable, so bound it at what the memtables could
  // hold: past it RocksDB flushes the memtables the oldest WAL file backs (restart replays
  // at most this much).
  db_options.max_total_wal_size =
      options.write_buffer_size * static_cast<uint64_t>(options.max_write_buffer_number);
  items_options.compression = ChooseCompression(options.enable_compression);
  // Keep filters on the last level too: a cache sees many misses, and they reach the bottom.
  items_options.optimize_filters_for_hits = false;
  items_options.level_compaction_dynamic_level_bytes = true;
  items_options.compaction_filter_factory =
      std::make_shared<ItemCompactionFilterFactory>(impl->liveness);
  items_options.periodic_compaction_seconds =
      options.enable_ttl_compaction ? kPeriodicCompactionSeconds : 0;

  rocksdb::ColumnFamilyOptions meta_options;
  meta_options.table_factory.reset(
      rocksdb::NewBlockBasedTableFactory(TableOptions(impl->block_cache)));
  meta_options.write_buffer_size = 1 << 20;
  meta_options.compression = rocksdb::kNoCompression;

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {rocksdb::kDefaultColumnFamilyName, items_options},
      {kMetaColumnFamily, meta_options},
  };
  status = CheckNotBehindRecord(options.db_path, db_options, descriptors);
  if (!status.ok()) return status;
  impl->live_files = std::make_shared<LiveFileRecorder>(options.db_path);
  db_options.listeners.push_back(impl->live_files);

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(rocksdb::Options(db_options, items_options),
                                        options.db_path, descriptors, &handles, &db);
  if (!s.ok()) return OpenError(s, options.db_path);
  impl->db.reset(db);
  impl->items_cf = handles[0];
  impl->meta_cf = handles[1];

  // Item writes never sync by themselves: Commit() writes and syncs the WAL for every write
  // made so far at once (the WAL stays in RocksDB's buffer until then: manual_wal_flush).
  impl->item_write_options.disableWAL = options.durability == Durability::kNone;
  impl->meta_write_options.sync = true;

  auto store = std::unique_ptr<RocksDbStore>(new RocksDbStore(std::move(impl)));
  status = store->impl_->LoadMeta();
  if (!status.ok()) return status;  // the destructor closes the database
  // Everything recovered is on disk already.
  store->impl_->committed.store(db->GetLatestSequenceNumber(), std::memory_order_release);
  store->impl_->live_files->Record(db);
  PC_LOG(kInfo, "storage: opened '%s' (durability=%s, block_cache=%d bytes)", options.db_path,
         DurabilityName(options.durability), options.block_cache_size);
  return store;
}

RocksDbStore::RocksDbStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RocksDbStore::~RocksDbStore() {
  absl::Status status = Close();
  if (!status.ok()) PC_LOG(kError, "storage: %s", status.ToString());
}

absl::Status RocksDbStore::Close() {
  Impl& impl = *impl_;
  if (impl.closed) return absl::OkStatus();
  impl.closed = true;
  absl::Status result;
  if (impl.options.durability != Durability::kNone) {
    // Buffered WAL records hold writes no reply acknowledged yet; keep them anyway.
    result = FromRocks(impl.db->FlushWAL(/*sync=*/true),
                       absl::StrCat("writing the WAL of '", impl.options.db_path, "' on close"));
  } else {
    // Writes without WAL exist only in the memtables: persist them before closing. Right after
    // RocksDB recovered from a background error (a disk that was full), Flush() can report
    // success before its flush job has even started, and closing would then cancel the job:
    // so wait until the memtables are really empty, resuming and retrying if needed.
    rocksdb::Status flushed;
    bool empty = false;
    for (int attempt = 0; attempt < 300 && !empty; ++attempt) {
      flushed = impl.db->Flush(rocksdb::FlushOptions(), impl.items_cf);
      if (!flushed.ok()) {
        if (attempt % 10 == 0) {
          PC_LOG(kWarning, "storage: flushing '%s' on close failed (%s); retrying",
                 impl.options.db_path, flushed.ToString());
        }
        (void)impl.db->Resume();
      }
      empty = flushed.ok() && MemtablesFlushed(impl.db.get(), impl.items_cf);
      if (!empty) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (flushed.ok() && !empty) {
      flushed = rocksdb::Status::TimedOut("memtables still hold data after 30 s of flushing");
    }
    result = FromRocks(flushed, absl::StrCat("flushing '", impl.options.db_path,
                                             "' on close (writes since the last flush are lost)"));
  }
  impl.live_files->Record(impl.db.get());
  for (rocksdb::ColumnFamilyHandle* handle : {impl.items_cf, impl.meta_cf}) {
    rocksdb::Status s = impl.db->DestroyColumnFamilyHandle(handle);
    if (result.ok() && !s.ok()) result = FromRocks(s, "releasing a column family");
  }
  impl.items_cf = nullptr;
  impl.meta_cf = nullptr;
  rocksdb::Status s = impl.db->Close();
  if (result.ok() && !s.ok()) {
    result = FromRocks(s, absl::StrCat("closing '", impl.options.db_path, "'"));
  }
  impl.db.reset();
  return result;
}

absl::StatusOr<LookupStatus> RocksDbStore::Get(std::string_view key, const ReadOptions& options,
                                               ItemHeader* header, std::string* value) {
  return Visit(key, options, [&](const ItemHeader& h, std::string_view v) {
    *header = h;
    value->assign(v);
  });
}

absl::StatusOr<LookupStatus> RocksDbStore::Visit(std::string_view key, const ReadOptions& options,
                                                 ItemVisitor fn) {
  rocksdb::ReadOptions read_options;
  if (options.cache_only) read_options.read_tier = rocksdb::kBlockCacheTier;
  rocksdb::PinnableSlice record;
  rocksdb::Status s = impl_->db->Get(read_options, impl_->items_cf, ToSlice(key), &record);
  if (s.IsNotFound()) return LookupStatus::kNotFound;
  if (s.IsIncomplete()) return LookupStatus::kWouldBlock;
  if (!s.ok()) return FromRocks(s, "reading an item");

  ItemHeader decoded;
  std::string_view stored;
  if (!DecodeRecord(std::string_view(record.data(), record.size()), &decoded, &stored)) {
    return absl::DataLossError(absl::StrCat("corrupt record (", record.size(),
                                            " bytes) in database at '", impl_->options.db_path,
                                            "'"));
  }
  const int64_t now = impl_->options.clock->Now();
  // Flushed before expired: memcached reports get_flushed ahead of get_expired.
  if (IsFlushed(decoded, impl_->liveness->flush_state.Load(), now)) return LookupStatus::kFlushed;
  if (IsExpired(decoded, now)) return LookupStatus::kExpired;
  fn(decoded, stored);
  return LookupStatus::kFound;
}

absl::Status RocksDbStore::Put(std::string_view key, const ItemHeader& header,
                               std::string_view value, const WriteOptions& options) {
  // The memtable bucket the insert will read is fetched while RocksDB's write path runs.
  if (impl_->hashed_memtables != nullptr) PrefetchBucket(*impl_->hashed_memtables, key);
  // The record goes into the batch in two parts, so the value is copied once (into the
  // batch), not first into an encoded record.
  char head[kMaxRecordHeaderSize];
  const size_t head_size = EncodeRecordHeader(header, head);
  const rocksdb::Slice key_part = ToSlice(key);
  const rocksdb::Slice value_parts[2] = {rocksdb::Slice(head, head_size), ToSlice(value)};
  // One batch per thread, cleared for each write: its buffer is reused instead of allocated
  // per set (a batch that held a large item gives its memory back).
  thread_local rocksdb::WriteBatch batch;
  if (batch.GetDataSize() > kMaxReusedBatchBytes) {
    batch = rocksdb::WriteBatch();
  } else {
    batch.Clear();
  }
  rocksdb::Status added = batch.Put(impl_->items_cf, rocksdb::SliceParts(&key_part, 1),
                                    rocksdb::SliceParts(value_parts, 2));
  if (!added.ok()) return FromRocks(added, "writing an item");
  rocksdb::DB* db = impl_->db.get();
  return FromRocks(impl_->WriteItem(options,
                                    [&](const rocksdb::WriteOptions& w) {
                                      return db->Write(w, &batch);
                                    }),
                   "writing an item");
}

absl::Status RocksDbStore::Delete(std::string_view key, const WriteOptions& options) {
  rocksdb::DB* db = impl_->db.get();
  rocksdb::ColumnFamilyHandle* cf = impl_->items_cf;
  return FromRocks(impl_->WriteItem(options,
                                    [&](const rocksdb::WriteOptions& w) {
                                      return db->Delete(w, cf, ToSlice(key));
                                    }),
                   "deleting an item");
}

uint64_t RocksDbStore::CommitMark() const {
  if (impl_->options.durability == Durability::kNone) return 0;
  return impl_->db->GetLatestSequenceNumber();
}

bool RocksDbStore::Committed(uint64_t mark) const {
  return mark <= impl_->committed.load(std::memory_order_acquire);
}

absl::Status RocksDbStore::Commit(uint64_t mark) {
  Impl& impl = *impl_;
  if (Committed(mark)) return absl::OkStatus();
  // Callers queue here while one writes the WAL; most find their writes covered by it.
  std::lock_guard lock(impl.commit_mu);
  if (Committed(mark)) return absl::OkStatus();
  // A sequence number is published only after its WAL record is in the buffer, so flushing
  // the buffer now covers every write up to `target`.
  const uint64_t target = impl.db->GetLatestSequenceNumber();
  rocksdb::Status s = impl.db->FlushWAL(/*sync=*/impl.options.durability == Durability::kSync);
  if (!s.ok()) return FromRocks(s, "committing writes to the WAL");
  impl.committed.store(target, std::memory_order_release);
  impl.group_commits.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

bool RocksDbStore::CommitWaitsForDevice() const {
  return impl_->options.durability == Durability::kSync;
}

absl::StatusOr<uint64_t> RocksDbStore::NextCas() {
  const uint64_t cas = impl_->next_cas.fetch_add(1, std::memory_order_relaxed);
  if (cas < impl_->cas_ceiling.load(std::memory_order_acquire)) return cas;
  return impl_->ExtendCasCeiling(cas);
}

absl::Status RocksDbStore::SetFlushState(const FlushState& state) {
  absl::MutexLock lock(&impl_->flush_mu);
  absl::Status status =
      FromRocks(impl_->db->Put(impl_->meta_write_options, impl_->meta_cf, kFlushStateKey,
                               EncodeFlushState(state)),
                absl::StrCat("persisting flush state in '", impl_->options.db_path, "'"));
  if (!status.ok()) return status;
  impl_->liveness->flush_state.Store(state);
  return absl::OkStatus();
}

FlushState RocksDbStore::GetFlushState() const { return impl_->liveness->flush_state.Load(); }

StoreStats RocksDbStore::GetStats() const {
  StoreStats stats;
  rocksdb::DB* db = impl_->db.get();
  uint64_t live_bytes = 0;
  uint64_t memtable_bytes = 0;
  if (!db->GetIntProperty(impl_->items_cf, rocksdb::DB::Properties::kEstimateNumKeys,
                          &stats.approximate_items)) {
    stats.approximate_items = 0;
  }
  if (!db->GetIntProperty(impl_->items_cf, rocksdb::DB::Properties::kEstimateLiveDataSize,
                          &live_bytes)) {
    live_bytes = 0;
  }
  if (!db->GetIntProperty(impl_->items_cf, rocksdb::DB::Properties::kCurSizeAllMemTables,
                          &memtable_bytes)) {
    memtable_bytes = 0;
  }
  stats.approximate_bytes = live_bytes + memtable_bytes;
  stats.compaction_dropped_expired =
      impl_->liveness->dropped_expired.load(std::memory_order_relaxed);
  stats.compaction_dropped_flushed =
      impl_->liveness->dropped_flushed.load(std::memory_order_relaxed);
  return stats;
}

absl::Status RocksDbStore::CompactAll() {
  rocksdb::CompactRangeOptions compact;
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (rocksdb::ColumnFamilyHandle* handle : {impl_->items_cf, impl_->meta_cf}) {
    absl::Status status = FromRocks(impl_->db->CompactRange(compact, handle, nullptr, nullptr),
                                    absl::StrCat("compacting '", impl_->options.db_path, "'"));
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status RocksDbStore::Flush() {
  return FromRocks(impl_->db->Flush(rocksdb::FlushOptions(), {impl_->items_cf, impl_->meta_cf}),
                   absl::StrCat("flushing '", impl_->options.db_path, "'"));
}

absl::Status RocksDbStore::Checkpoint(const std::string& dir) {
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(impl_->db.get(), &raw);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  if (s.ok()) s = checkpoint->CreateCheckpoint(dir);
  return FromRocks(s,
                   absl::StrCat("checkpoint of '", impl_->options.db_path, "' into '", dir, "'"));
}

std::vector<std::pair<std::string, uint64_t>> RocksDbStore::Properties() const {
  rocksdb::DB* db = impl_->db.get();
  auto aggregated = [db](const std::string& name) {
    uint64_t v = 0;
    return db->GetAggregatedIntProperty(name, &v) ? v : 0;
  };
  auto items = [&](const std::string& name) {
    uint64_t v = 0;
    return db->GetIntProperty(impl_->items_cf, name, &v) ? v : 0;
  };
  auto ticker = [&](rocksdb::Tickers t) { return impl_->statistics->getTickerCount(t); };
  return {
      {"block_cache_usage", impl_->block_cache->GetUsage()},
      {"block_cache_pinned_usage", impl_->block_cache->GetPinnedUsage()},
      {"block_cache_capacity", impl_->block_cache->GetCapacity()},
      {"block_cache_hits", ticker(rocksdb::BLOCK_CACHE_HIT)},
      {"block_cache_misses", ticker(rocksdb::BLOCK_CACHE_MISS)},
      {"bloom_filter_useful", ticker(rocksdb::BLOOM_FILTER_USEFUL)},
      {"memtable_bytes", aggregated(rocksdb::DB::Properties::kCurSizeAllMemTables)},
      {"estimate_num_keys", items(rocksdb::DB::Properties::kEstimateNumKeys)},
      {"live_sst_bytes", aggregated(rocksdb::DB::Properties::kLiveSstFilesSize)},
      {"pending_compaction_bytes",
       aggregated(rocksdb::DB::Properties::kEstimatePendingCompactionBytes)},
      {"stall_micros", ticker(rocksdb::STALL_MICROS)},
      {"background_errors", items(rocksdb::DB::Properties::kBackgroundErrors)},
      {"wal_syncs", ticker(rocksdb::WAL_FILE_SYNCED)},
      {"group_commits", impl_->group_commits.load(std::memory_order_relaxed)},
      {"stall_rejections", impl_->stall_rejections.load(std::memory_order_relaxed)},
      {"inplace_updates", ticker(rocksdb::NUMBER_KEYS_UPDATED)},
  };
}

absl::StatusOr<uint64_t> RocksDbStore::CountRecords() const {
  rocksdb::ReadOptions read_options;
  read_options.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(read_options, impl_->items_cf));
  uint64_t count = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
  absl::Status status = FromRocks(it->status(), "scanning items");
  if (!status.ok()) return status;
  return count;
}

absl::Status RocksDbStore::PutRawRecordForTesting(std::string_view key, std::string_view record) {
  return FromRocks(
      impl_->db->Put(impl_->item_write_options, impl_->items_cf, ToSlice(key), ToSlice(record)),
      "writing a raw record");
}

absl::Status RocksDbStore::PauseBackgroundWorkForTesting(bool pause) {
  return FromRocks(pause ? impl_->db->PauseBackgroundWork() : impl_->db->ContinueBackgroundWork(),
                   "pausing background work");
}

Durability RocksDbStore::durability() const { return impl_->options.durability; }

const std::string& RocksDbStore::db_path() const { return impl_->options.db_path; }

}  // namespace petracache::storage
