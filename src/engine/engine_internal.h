// Engine internals shared by engine.cc (classic commands) and meta.cc (meta commands): how a
// command reads and writes the store, with its errors folded into what the command replies,
// and memcached's arithmetic on stored numbers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/logging.h"
#include "engine/engine.h"
#include "petracache/command.h"
#include "storage/store.h"

namespace petracache::engine {

using storage::ItemHeader;
using storage::LookupStatus;

// memcached's slab_chunk_max (default): larger items are stored in chunks.
constexpr size_t kChunkedItemSize = 512 * 1024;

// memcached's REALTIME_MAXDELTA: larger exptimes are absolute Unix times.
constexpr int32_t kRealtimeMaxDelta = 60 * 60 * 24 * 30;

// memcached's realtime(): protocol exptime -> absolute Unix seconds (0 = never).
inline int64_t AbsoluteExptime(int32_t exptime, int64_t now) {
  // A negative exptime means "already expired" (memcached maps it to a time in the past).
  if (exptime < 0) return 1;
  if (exptime == 0) return 0;
  if (exptime > kRealtimeMaxDelta) return exptime;
  return now + exptime;
}

inline bool IsLive(LookupStatus s) { return s == LookupStatus::kFound; }

// One key's read inside a command: what Store::Get said, with its errors folded in.
struct Lookup {
  bool failed = false;       // storage error
  bool would_block = false;  // needs disk and the caller forbade it
  LookupStatus status = LookupStatus::kNotFound;
};

inline Lookup ToLookup(const absl::StatusOr<LookupStatus>& r) {
  Lookup out;
  if (!r.ok()) {
    PC_LOG(kWarning, "storage read failed: %s", r.status().ToString());
    out.failed = true;
    return out;
  }
  out.status = *r;
  out.would_block = *r == LookupStatus::kWouldBlock;
  return out;
}

inline storage::ReadOptions ReadOptionsFor(bool allow_disk) {
  storage::ReadOptions options;
  options.cache_only = !allow_disk;
  return options;
}

inline Lookup Read(storage::Store* store, std::string_view key, bool allow_disk, ItemHeader* header,
                   std::string* value) {
  return ToLookup(store->Get(key, ReadOptionsFor(allow_disk), header, value));
}

inline Lookup Visit(storage::Store* store, std::string_view key, bool allow_disk,
                    storage::Store::ItemVisitor fn) {
  return ToLookup(store->Visit(key, ReadOptionsFor(allow_disk), fn));
}

// What a store write's status means for the command: done, retry with disk access (an event
// loop must not wait for a stalled write), or failed.
// Unavailable on a thread that may wait means the store gave up on a long write stall
// (overload): the client is told to retry rather than kept waiting.
enum class WriteResult { kOk, kWouldBlock, kBusy, kFailed };

inline WriteResult Classify(const absl::Status& s, bool allow_disk) {
  if (s.ok()) return WriteResult::kOk;
  if (absl::IsUnavailable(s)) return allow_disk ? WriteResult::kBusy : WriteResult::kWouldBlock;
  PC_LOG(kWarning, "storage write failed: %s", s.ToString());
  return WriteResult::kFailed;
}

inline storage::WriteOptions WriteOptionsFor(const ExecContext& ctx) {
  storage::WriteOptions w;
  w.no_stall = !ctx.allow_disk;
  return w;
}

// memcached never does arithmetic on an empty value or one large enough to be stored in
// chunks.
inline bool DeltaCandidate(std::string_view key, const ItemHeader& header, std::string_view value) {
  return !value.empty() &&
         ItemTotalSize(key.size(), header.flags, value.size()) <= kChunkedItemSize;
}

// memcached's do_add_delta on a live item: false for a value it will not change (see
// DeltaCandidate, or not a decimal number). Otherwise *number is the result (incr wraps at
// 2^64, decr floors at 0) and *new_value its text as stored: padded with spaces to the old
// length when shorter, as memcached's in-place rewrite leaves it.
bool ApplyDelta(std::string_view key, const ItemHeader& header, std::string_view value, bool incr,
                uint64_t delta, uint64_t* number, std::string* new_value);

}  // namespace petracache::engine
