// MemoryStore: a Store kept in a hash map under one mutex. It backs fast engine unit tests; it
// persists nothing and its compaction counters stay zero.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "storage/item.h"
#include "storage/store.h"

namespace petracache::storage {

class MemoryStore final : public Store {
 public:
  // `clock` judges expiry and flush; it must outlive the store. CAS values start at 1.
  explicit MemoryStore(Clock* clock);

  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  // Store. Get never reports kWouldBlock: everything is in memory.
  [[nodiscard]] absl::StatusOr<LookupStatus> Get(std::string_view key, const ReadOptions& options,
                                                 ItemHeader* header, std::string* value) override;
  using Store::Delete;
  using Store::Put;
  [[nodiscard]] absl::Status Put(std::string_view key, const ItemHeader& header,
                                 std::string_view value, const WriteOptions& options) override;
  [[nodiscard]] absl::Status Delete(std::string_view key, const WriteOptions& options) override;
  [[nodiscard]] absl::StatusOr<uint64_t> NextCas() override;
  [[nodiscard]] absl::Status SetFlushState(const FlushState& state) override;
  FlushState GetFlushState() const override;
  StoreStats GetStats() const override;

  // Exact number of stored records, dead (expired/flushed) ones included.
  size_t RawSize() const;

 private:
  struct Entry {
    ItemHeader header;
    std::string value;
  };

  static uint64_t EntryBytes(std::string_view key, const Entry& entry);

  Clock* const clock_;
  std::atomic<uint64_t> next_cas_{1};

  // std::mutex rather than absl::Mutex: Debian's Abseil is not built for ThreadSanitizer, which
  // would then not see this lock's ordering.
  mutable std::mutex mu_;
  absl::flat_hash_map<std::string, Entry> items_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  FlushState flush_state_ ABSL_GUARDED_BY(mu_);
};

}  // namespace petracache::storage
