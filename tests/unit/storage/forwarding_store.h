// ForwardingStore: a Store that passes every call to another one, for tests that wrap a store
// to change one or two behaviours (a cold key, a write stall, a commit that fails).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "storage/store.h"

namespace petracache::storage {

class ForwardingStore : public Store {
 public:
  // `inner` must outlive this store; it is not used during construction.
  explicit ForwardingStore(Store* inner) : inner_(inner) {}

  absl::StatusOr<LookupStatus> Get(std::string_view key, const ReadOptions& options,
                                   ItemHeader* header, std::string* value) override {
    return inner_->Get(key, options, header, value);
  }
  using Store::Delete;
  using Store::Put;
  absl::Status Put(std::string_view key, const ItemHeader& header, std::string_view value,
                   const WriteOptions& options) override {
    return inner_->Put(key, header, value, options);
  }
  absl::Status Delete(std::string_view key, const WriteOptions& options) override {
    return inner_->Delete(key, options);
  }
  uint64_t CommitMark() const override { return inner_->CommitMark(); }
  bool Committed(uint64_t mark) const override { return inner_->Committed(mark); }
  absl::Status Commit(uint64_t mark) override { return inner_->Commit(mark); }
  bool CommitWaitsForDevice() const override { return inner_->CommitWaitsForDevice(); }
  absl::StatusOr<uint64_t> NextCas() override { return inner_->NextCas(); }
  absl::Status SetFlushState(const FlushState& state) override {
    return inner_->SetFlushState(state);
  }
  FlushState GetFlushState() const override { return inner_->GetFlushState(); }
  StoreStats GetStats() const override { return inner_->GetStats(); }

 private:
  Store* const inner_;
};

}  // namespace petracache::storage
