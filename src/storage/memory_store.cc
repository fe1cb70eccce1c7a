// MemoryStore: liveness is judged on read exactly like RocksDbStore, so engine tests written
// against it hold for the real store.
#include "storage/memory_store.h"

namespace petracache::storage {
namespace {

// Debian's Abseil is built with its own absl::string_view, distinct from std::string_view.
absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

MemoryStore::MemoryStore(Clock* clock) : clock_(clock) {}

uint64_t MemoryStore::EntryBytes(std::string_view key, const Entry& entry) {
  return key.size() + RecordHeaderSize(entry.header) + entry.value.size();
}

absl::StatusOr<LookupStatus> MemoryStore::Get(std::string_view key, const ReadOptions& options,
                                              ItemHeader* header, std::string* value) {
  const int64_t now = clock_->Now();
  std::lock_guard lock(mu_);
  auto it = items_.find(AsAbsl(key));
  if (it == items_.end()) return LookupStatus::kNotFound;
  const Entry& entry = it->second;
  // Flushed before expired: memcached reports get_flushed ahead of get_expired.
  if (IsFlushed(entry.header, flush_state_, now)) return LookupStatus::kFlushed;
  if (IsExpired(entry.header, now)) return LookupStatus::kExpired;
  *header = entry.header;
  value->assign(entry.value);
  return LookupStatus::kFound;
}

absl::Status MemoryStore::Put(std::string_view key, const ItemHeader& header,
                              std::string_view value, const WriteOptions& /*options*/) {
  Entry entry{header, std::string(value)};
  std::lock_guard lock(mu_);
  auto [it, inserted] = items_.try_emplace(AsAbsl(key));
  if (!inserted) bytes_ -= EntryBytes(key, it->second);
  it->second = std::move(entry);
  bytes_ += EntryBytes(key, it->second);
  return absl::OkStatus();
}

absl::Status MemoryStore::Delete(std::string_view key, const WriteOptions& /*options*/) {
  std::lock_guard lock(mu_);
  auto it = items_.find(AsAbsl(key));
  if (it == items_.end()) return absl::OkStatus();
  bytes_ -= EntryBytes(key, it->second);
  items_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MemoryStore::NextCas() {
  return next_cas_.fetch_add(1, std::memory_order_relaxed);
}

absl::Status MemoryStore::SetFlushState(const FlushState& state) {
  std::lock_guard lock(mu_);
  flush_state_ = state;
  return absl::OkStatus();
}

FlushState MemoryStore::GetFlushState() const {
  std::lock_guard lock(mu_);
  return flush_state_;
}

StoreStats MemoryStore::GetStats() const {
  std::lock_guard lock(mu_);
  StoreStats stats;
  stats.approximate_items = items_.size();
  stats.approximate_bytes = bytes_;
  return stats;
}

size_t MemoryStore::RawSize() const {
  std::lock_guard lock(mu_);
  return items_.size();
}

}  // namespace petracache::storage
