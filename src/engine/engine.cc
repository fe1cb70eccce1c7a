// Engine: command semantics follow memcached 1.6.18's do_store_item, do_add_delta,
// process_get_command, process_touch_command and process_flush_all_command.
#include "engine/engine.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <functional>
#include <optional>

#include "absl/strings/str_format.h"
#include "common/logging.h"
#include "engine/engine_internal.h"
#include "protocol/encoder.h"
#include "protocol/numbers.h"

namespace petracache::engine {

using protocol::AppendError;
using protocol::AppendReply;
using protocol::Reply;
using storage::ItemHeader;
using storage::LookupStatus;

Engine::Engine(storage::Store* store, Clock* clock, EngineOptions options)
    : store_(store), clock_(clock), options_(std::move(options)), start_time_(clock->Now()) {}

std::mutex& Engine::StripeFor(std::string_view key) {
  return stripes_[std::hash<std::string_view>{}(key) % kLockStripes];
}

std::unique_lock<std::mutex> Engine::LockKey(std::string_view key, const ExecContext& ctx) {
  // An event loop must not wait behind a blocking thread that holds the stripe through a
  // disk read or a stalled write: it gives up (the caller reports kWouldBlock) instead.
  if (!ctx.allow_disk) return std::unique_lock<std::mutex>(StripeFor(key), std::try_to_lock);
  return std::unique_lock<std::mutex>(StripeFor(key));
}

Outcome Engine::Execute(const Command& cmd, ExecContext& ctx) {
  timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  Outcome outcome = Dispatch(cmd, ctx);
  // A command is recorded once, by the call that finishes it.
  if (outcome != Outcome::kWouldBlock && outcome != Outcome::kPartial) {
    timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    int64_t nanos = (end.tv_sec - start.tv_sec) * 1'000'000'000 + (end.tv_nsec - start.tv_nsec);
    ctx.stats->latency[static_cast<size_t>(KindOf(cmd.type))].Record(
        static_cast<uint64_t>(std::max<int64_t>(nanos, 0)));
  }
  return outcome;
}

Outcome Engine::Dispatch(const Command& cmd, ExecContext& ctx) {
  if (cmd.error != ProtocolError::kNone) return Error(cmd, ctx);
  switch (cmd.type) {
    case CommandType::kGet:
    case CommandType::kGets:
    case CommandType::kGat:
    case CommandType::kGats:
      return Retrieve(cmd, ctx);
    case CommandType::kSet:
    case CommandType::kAdd:
    case CommandType::kReplace:
    case CommandType::kAppend:
    case CommandType::kPrepend:
    case CommandType::kCas:
    case CommandType::kLeaseSet:
      return StoreItem(cmd, ctx);
    case CommandType::kIncr:
    case CommandType::kDecr:
      return Arithmetic(cmd, ctx);
    case CommandType::kDelete:
      return Delete(cmd, ctx);
    case CommandType::kTouch:
      return Touch(cmd, ctx);
    case CommandType::kFlushAll:
      return FlushAll(cmd, ctx);
    case CommandType::kStats:
      return Stats(cmd, ctx);
    case CommandType::kVersion:
      protocol::AppendVersion(ctx.out, options_.version);
      return Outcome::kDone;
    case CommandType::kVerbosity:
      verbosity_.store(cmd.verbosity, std::memory_order_relaxed);
      return Answer(cmd, ctx, Reply::kOk);
    case CommandType::kQuit:
      return Outcome::kClose;
    case CommandType::kShutdown:
      if (!options_.enable_shutdown) {
        AppendError(ctx.out, ProtocolError::kShutdownDisabled);
        return Outcome::kDone;
      }
      if (cmd.arg.empty() || cmd.arg == "graceful") return Outcome::kShutdown;
      AppendError(ctx.out, ProtocolError::kInvalidShutdownMode);
      return Outcome::kDone;
    case CommandType::kMetaNoop:
      protocol::AppendMetaStatus(ctx.out, protocol::MetaStatus::kMn);
      protocol::AppendMetaEnd(ctx.out);
      return Outcome::kDone;
    case CommandType::kMetaRetrieve:
      return MetaRetrieve(cmd, ctx);
    case CommandType::kMetaStore:
      return MetaStore(cmd, ctx);
    case CommandType::kMetaDelete:
      return MetaDelete(cmd, ctx);
    case CommandType::kMetaArithmetic:
      return MetaArithmetic(cmd, ctx);
    case CommandType::kMetaDebug:
      return MetaDebug(cmd, ctx);
    case CommandType::kInvalid:
    case CommandType::kLeaseGet:
    case CommandType::kMetaGet:
      break;
  }
  AppendError(ctx.out, ProtocolError::kError);
  return Outcome::kDone;
}

Outcome Engine::Error(const Command& cmd, ExecContext& ctx) {
  switch (cmd.error) {
    case ProtocolError::kObjectTooLarge:
      // memcached removes the old value so a failed set never leaves stale data behind (ms
      // removes it whatever its mode).
      if (cmd.type == CommandType::kSet || cmd.type == CommandType::kMetaStore) {
        std::unique_lock lock = LockKey(cmd.key, ctx);
        if (!lock.owns_lock()) return Outcome::kWouldBlock;
        switch (Classify(store_->Delete(cmd.key, WriteOptionsFor(ctx)), ctx.allow_disk)) {
          case WriteResult::kOk:
            break;
          case WriteResult::kWouldBlock:
            return Outcome::kWouldBlock;
          case WriteResult::kBusy:
          case WriteResult::kFailed:
            ctx.stats->storage_errors.Add();
            break;
        }
      }
      break;
    case ProtocolError::kBadCommandLine:
      // An over-long key in a multi-get: the keys before it were looked up (and a gat
      // touched them) before memcached gave up and replied with the error alone.
      if (!cmd.keys.empty()) {
        std::string discard;
        ExecContext inner{&discard, ctx.stats, ctx.allow_disk};
        Command partial = cmd;
        partial.error = ProtocolError::kNone;
        if (Retrieve(partial, inner) == Outcome::kWouldBlock) return Outcome::kWouldBlock;
      }
      break;
    case ProtocolError::kInvalidExptime:
      if (cmd.type == CommandType::kFlushAll && options_.disable_flush_all) {
        return Answer(cmd, ctx, ProtocolError::kFlushDisabled);
      }
      break;
    default:
      break;
  }
  ctx.stats->protocol_errors.Add();
  return Answer(cmd, ctx, cmd.error);
}

Outcome Engine::StorageFailure(const Command& cmd, ExecContext& ctx) {
  ctx.stats->storage_errors.Add();
  return Answer(cmd, ctx, ProtocolError::kStorageFailure);
}

Outcome Engine::Busy(const Command& cmd, ExecContext& ctx) {
  ctx.stats->storage_errors.Add();
  return Answer(cmd, ctx, ProtocolError::kBusy);
}

Outcome Engine::Answer(const Command& cmd, ExecContext& ctx, Reply reply) {
  if (!cmd.noreply) AppendReply(ctx.out, reply);
  return Outcome::kDone;
}

Outcome Engine::Answer(const Command& cmd, ExecContext& ctx, ProtocolError error) {
  if (!cmd.noreply) AppendError(ctx.out, error);
  return Outcome::kDone;
}

std::optional<Outcome> Engine::LockAndRead(const Command& cmd, ExecContext& ctx,
                                           ItemForUpdate* item) {
  item->lock = LockKey(cmd.key, ctx);
  if (!item->lock.owns_lock()) return Outcome::kWouldBlock;
  Lookup r = Read(store_, cmd.key, ctx.allow_disk, &item->header, &item->value);
  if (r.would_block) return Outcome::kWouldBlock;
  if (r.failed) return StorageFailure(cmd, ctx);
  item->live = IsLive(r.status);
  return std::nullopt;
}

std::optional<Outcome> Engine::WriteOutcome(const Command& cmd, ExecContext& ctx,
                                            const absl::Status& status) {
  switch (Classify(status, ctx.allow_disk)) {
    case WriteResult::kOk:
      return std::nullopt;
    case WriteResult::kWouldBlock:
      return Outcome::kWouldBlock;
    case WriteResult::kBusy:
      return Busy(cmd, ctx);
    case WriteResult::kFailed:
      break;
  }
  return StorageFailure(cmd, ctx);
}

std::optional<Outcome> Engine::Write(const Command& cmd, ExecContext& ctx, std::string_view key,
                                     const ItemHeader& header, std::string_view value) {
  return WriteOutcome(cmd, ctx, store_->Put(key, header, value, WriteOptionsFor(ctx)));
}

std::optional<Outcome> Engine::Remove(const Command& cmd, ExecContext& ctx) {
  return WriteOutcome(cmd, ctx, store_->Delete(cmd.key, WriteOptionsFor(ctx)));
}

std::optional<Outcome> Engine::StoreNew(const Command& cmd, ExecContext& ctx, ItemHeader* header,
                                        std::string_view value, int64_t now) {
  absl::StatusOr<uint64_t> cas = store_->NextCas();
  if (!cas.ok()) return StorageFailure(cmd, ctx);
  header->cas = *cas;
  header->write_time = now;
  return Write(cmd, ctx, cmd.key, *header, value);
}

Outcome Engine::Retrieve(const Command& cmd, ExecContext& ctx) {
  const bool with_cas = cmd.type == CommandType::kGets || cmd.type == CommandType::kGats;
  const bool touch = cmd.type == CommandType::kGat || cmd.type == CommandType::kGats;
  const size_t rollback = ctx.out->size();
  const int64_t now = clock_->Now();
  const int64_t new_exptime = touch ? AbsoluteExptime(cmd.exptime, now) : 0;

  // Counted locally and applied at the end, so a kWouldBlock attempt leaves no trace.
  EngineTotals delta;
  ItemHeader header;
  std::string value;
  for (size_t i = ctx.first_key; i < cmd.keys.size(); ++i) {
    if (i > ctx.first_key && ctx.out->size() >= ctx.output_limit) {
      ctx.next_key = i;
      ApplyRetrievalStats(delta, ctx);
      return Outcome::kPartial;
    }
    const std::string_view key = cmd.keys[i];
    Lookup r;
    if (touch) {
      std::unique_lock lock = LockKey(key, ctx);
      if (!lock.owns_lock()) {
        ctx.out->resize(rollback);
        return Outcome::kWouldBlock;
      }
      r = Read(store_, key, ctx.allow_disk, &header, &value);
      if (!r.failed && !r.would_block && IsLive(r.status)) {
        header.exptime = new_exptime;
        switch (Classify(store_->Put(key, header, value, WriteOptionsFor(ctx)), ctx.allow_disk)) {
          case WriteResult::kOk:
            break;
          case WriteResult::kWouldBlock:
            r.would_block = true;
            break;
          case WriteResult::kBusy:
          case WriteResult::kFailed:
            r.failed = true;
            break;
        }
      }
    } else {
      // The store hands the item straight to the encoder: no copy through `value`.
      r = Visit(store_, key, ctx.allow_disk, [&](const ItemHeader& h, std::string_view v) {
        protocol::AppendValue(ctx.out, key, h.flags, v, with_cas ? &h.cas : nullptr);
      });
    }
    if (r.would_block) {
      ctx.out->resize(rollback);
      return Outcome::kWouldBlock;
    }
    if (r.failed) {
      ctx.out->resize(rollback);
      return StorageFailure(cmd, ctx);
    }
    delta.cmd_get++;
    if (touch) delta.cmd_touch++;
    if (IsLive(r.status)) {
      if (touch) {
        protocol::AppendValue(ctx.out, key, header.flags, value, with_cas ? &header.cas : nullptr);
      }
      (touch ? delta.touch_hits : delta.get_hits)++;
      continue;
    }
    (touch ? delta.touch_misses : delta.get_misses)++;
    if (r.status == LookupStatus::kExpired) delta.get_expired++;
    if (r.status == LookupStatus::kFlushed) delta.get_flushed++;
  }
  ApplyRetrievalStats(delta, ctx);
  AppendReply(ctx.out, Reply::kEnd);
  return Outcome::kDone;
}

void Engine::ApplyRetrievalStats(const EngineTotals& delta, ExecContext& ctx) {
  ctx.stats->cmd_get.Add(delta.cmd_get);
  ctx.stats->cmd_touch.Add(delta.cmd_touch);
  ctx.stats->get_hits.Add(delta.get_hits);
  ctx.stats->get_misses.Add(delta.get_misses);
  ctx.stats->touch_hits.Add(delta.touch_hits);
  ctx.stats->touch_misses.Add(delta.touch_misses);
  ctx.stats->get_expired.Add(delta.get_expired);
  ctx.stats->get_flushed.Add(delta.get_flushed);
}

Outcome Engine::StoreItem(const Command& cmd, ExecContext& ctx) {
  const int64_t now = clock_->Now();
  ItemForUpdate item;
  if (cmd.type == CommandType::kSet || cmd.type == CommandType::kLeaseSet) {
    // A set replaces whatever is there: it needs the key's lock (ordering against concurrent
    // read-modify-writes), not the old item.
    item.lock = LockKey(cmd.key, ctx);
    if (!item.lock.owns_lock()) return Outcome::kWouldBlock;
  } else if (std::optional<Outcome> early = LockAndRead(cmd, ctx, &item)) {
    return *early;
  }
  ItemHeader& old = item.header;
  std::string& old_value = item.value;
  const bool exists = item.live;
  ctx.stats->cmd_set.Add();
  auto reply = [&](Reply what) { return Answer(cmd, ctx, what); };

  ItemHeader header;
  header.flags = cmd.flags;
  header.exptime = AbsoluteExptime(cmd.exptime, now);
  std::string_view value = cmd.data;
  std::string combined;
  switch (cmd.type) {
    case CommandType::kSet:
    case CommandType::kLeaseSet:
      break;
    case CommandType::kAdd:
      if (exists) return reply(Reply::kNotStored);
      break;
    case CommandType::kReplace:
      if (!exists) return reply(Reply::kNotStored);
      break;
    case CommandType::kAppend:
    case CommandType::kPrepend:
      // The flags and exptime sent with append/prepend are ignored; the old item's stay.
      if (!exists) return reply(Reply::kNotStored);
      if (ItemTotalSize(cmd.key.size(), old.flags, old_value.size() + cmd.data.size()) >
          options_.item_size_max) {
        return reply(Reply::kNotStored);
      }
      header.flags = old.flags;
      header.exptime = old.exptime;
      combined.reserve(old_value.size() + cmd.data.size());
      if (cmd.type == CommandType::kAppend) {
        combined.append(old_value).append(cmd.data);
      } else {
        combined.append(cmd.data).append(old_value);
      }
      value = combined;
      break;
    case CommandType::kCas:
      if (!exists) {
        ctx.stats->cas_misses.Add();
        return reply(Reply::kNotFound);
      }
      if (cmd.cas_unique != old.cas) {
        ctx.stats->cas_badval.Add();
        return reply(Reply::kExists);
      }
      ctx.stats->cas_hits.Add();
      break;
    default:
      return reply(Reply::kNotStored);
  }

  if (std::optional<Outcome> failed = StoreNew(cmd, ctx, &header, value, now)) return *failed;
  ctx.stats->total_items.Add();
  return reply(Reply::kStored);
}

Outcome Engine::Arithmetic(const Command& cmd, ExecContext& ctx) {
  const bool incr = cmd.type == CommandType::kIncr;
  ItemForUpdate item;
  if (std::optional<Outcome> early = LockAndRead(cmd, ctx, &item)) return *early;
  ItemHeader& header = item.header;
  std::string& value = item.value;
  const bool live = item.live;
  if (!live) {
    (incr ? ctx.stats->incr_misses : ctx.stats->decr_misses).Add();
    return Answer(cmd, ctx, Reply::kNotFound);
  }
  uint64_t number = 0;
  std::string new_value;
  if (!ApplyDelta(cmd.key, header, value, incr, cmd.delta, &number, &new_value)) {
    return Answer(cmd, ctx, ProtocolError::kNonNumeric);
  }
  // The rewrite keeps the item's state bits only where memcached rewrites in place.
  if (new_value.size() > value.size()) header.bits = 0;

  if (std::optional<Outcome> failed = StoreNew(cmd, ctx, &header, new_value, clock_->Now())) {
    return *failed;
  }
  (incr ? ctx.stats->incr_hits : ctx.stats->decr_hits).Add();
  if (!cmd.noreply) protocol::AppendNumber(ctx.out, number);
  return Outcome::kDone;
}

bool ApplyDelta(std::string_view key, const ItemHeader& header, std::string_view value, bool incr,
                uint64_t delta, uint64_t* number, std::string* new_value) {
  if (!DeltaCandidate(key, header, value) || !protocol::ParseStoredNumber(value, number)) {
    return false;
  }
  if (incr) {
    *number += delta;  // wraps at 2^64, as memcached
  } else {
    *number = delta > *number ? 0 : *number - delta;
  }
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), *number);
  new_value->assign(digits, static_cast<size_t>(end - digits));
  if (new_value->size() < value.size()) new_value->resize(value.size(), ' ');
  return true;
}

Outcome Engine::Delete(const Command& cmd, ExecContext& ctx) {
  ItemForUpdate item;
  if (std::optional<Outcome> early = LockAndRead(cmd, ctx, &item)) return *early;
  if (!item.live) {
    ctx.stats->delete_misses.Add();
    return Answer(cmd, ctx, Reply::kNotFound);
  }
  if (std::optional<Outcome> failed = Remove(cmd, ctx)) return *failed;
  ctx.stats->delete_hits.Add();
  return Answer(cmd, ctx, Reply::kDeleted);
}

Outcome Engine::Touch(const Command& cmd, ExecContext& ctx) {
  const int64_t now = clock_->Now();
  ItemForUpdate item;
  if (std::optional<Outcome> early = LockAndRead(cmd, ctx, &item)) return *early;
  ItemHeader& header = item.header;
  std::string& value = item.value;
  const bool live = item.live;
  ctx.stats->cmd_touch.Add();
  if (!live) {
    ctx.stats->touch_misses.Add();
    return Answer(cmd, ctx, Reply::kNotFound);
  }
  // touch changes only the expiry: memcached keeps the CAS.
  header.exptime = AbsoluteExptime(cmd.exptime, now);
  if (std::optional<Outcome> failed = Write(cmd, ctx, cmd.key, header, value)) return *failed;
  ctx.stats->touch_hits.Add();
  return Answer(cmd, ctx, Reply::kTouched);
}

Outcome Engine::FlushAll(const Command& cmd, ExecContext& ctx) {
  if (options_.disable_flush_all) {
    return Answer(cmd, ctx, ProtocolError::kFlushDisabled);
  }
  const int64_t now = clock_->Now();
  const int32_t delay = cmd.has_exptime ? cmd.exptime : 0;
  const int64_t deadline = delay > 0 ? AbsoluteExptime(delay, now) : now;
  // memcached: oldest_live = deadline - 1; an immediate flush also sets oldest_cas so that
  // items written earlier in this very second die while later ones live.
  storage::FlushState state = store_->GetFlushState();
  state.oldest_live = deadline - 1;
  if (state.oldest_live <= now) {
    absl::StatusOr<uint64_t> cas = store_->NextCas();
    if (!cas.ok()) {
      return StorageFailure(cmd, ctx);
    }
    state.oldest_cas = *cas;
  }
  if (!store_->SetFlushState(state).ok()) {
    return StorageFailure(cmd, ctx);
  }
  ctx.stats->cmd_flush.Add();
  return Answer(cmd, ctx, Reply::kOk);
}

Outcome Engine::Stats(const Command& cmd, ExecContext& ctx) {
  std::string_view sub = cmd.arg;
  if (sub.empty()) {
    AppendGeneralStats(ctx.out);
  } else if (sub == "reset") {
    ResetStats();
    AppendReply(ctx.out, Reply::kReset);
    return Outcome::kDone;
  } else if (sub == "settings") {
    std::lock_guard lock(stats_mu_);
    for (const auto& [name, value] : settings_) protocol::AppendStat(ctx.out, name, value);
  } else if (sub == "items" || sub == "slabs" || sub == "sizes" || sub == "conns") {
    // memcached's per-slab-class views: PetraCache has no slab classes, so the lists are
    // empty (exporters that scrape them keep working).
  } else {
    AppendError(ctx.out, ProtocolError::kError);
    return Outcome::kDone;
  }
  AppendReply(ctx.out, Reply::kEnd);
  return Outcome::kDone;
}

void Engine::AppendGeneralStats(std::string* out) {
  using protocol::AppendStat;
  EngineTotals t = Totals();
  ServerStats s;
  {
    std::lock_guard lock(stats_mu_);
    if (server_stats_) s = server_stats_();
    s.total_connections -= std::min(s.total_connections, server_base_.total_connections);
    s.rejected_connections -= std::min(s.rejected_connections, server_base_.rejected_connections);
    s.bytes_read -= std::min(s.bytes_read, server_base_.bytes_read);
    s.bytes_written -= std::min(s.bytes_written, server_base_.bytes_written);
  }
  storage::StoreStats store_stats = store_->GetStats();
  const int64_t now = clock_->Now();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return absl::StrFormat("%d.%06d", static_cast<int64_t>(tv.tv_sec),
                           static_cast<int64_t>(tv.tv_usec));
  };

  AppendStat(out, "pid", static_cast<int64_t>(getpid()));
  AppendStat(out, "uptime", now - start_time_);
  AppendStat(out, "time", now);
  std::string_view version = options_.version;
  AppendStat(out, "version", version.substr(0, version.find(' ')));
  AppendStat(out, "petracache_version", version.substr(version.find(' ') + 1));
  AppendStat(out, "pointer_size", static_cast<uint64_t>(sizeof(void*) * 8));
  AppendStat(out, "rusage_user", seconds(usage.ru_utime));
  AppendStat(out, "rusage_system", seconds(usage.ru_stime));
  AppendStat(out, "max_connections", s.max_connections);
  AppendStat(out, "curr_connections", s.curr_connections);
  AppendStat(out, "total_connections", s.total_connections);
  AppendStat(out, "rejected_connections", s.rejected_connections);
#define PETRACACHE_APPEND_COUNTER(name) AppendStat(out, #name, t.name);
  PETRACACHE_ENGINE_COUNTERS(PETRACACHE_APPEND_COUNTER)
#undef PETRACACHE_APPEND_COUNTER
  AppendStat(out, "bytes_read", s.bytes_read);
  AppendStat(out, "bytes_written", s.bytes_written);
  AppendStat(out, "limit_maxbytes", s.limit_maxbytes);
  AppendStat(out, "threads", s.threads);
  AppendStat(out, "bytes", store_stats.approximate_bytes);
  AppendStat(out, "curr_items", store_stats.approximate_items);
  AppendStat(out, "evictions", uint64_t{0});
  AppendStat(out, "expired_compacted", store_stats.compaction_dropped_expired);
  AppendStat(out, "flushed_compacted", store_stats.compaction_dropped_flushed);
  AppendStat(out, "hot_cache_hits", store_stats.hot_cache_hits);
  AppendStat(out, "hot_cache_misses", store_stats.hot_cache_misses);
  AppendStat(out, "hot_cache_bytes", store_stats.hot_cache_bytes);
  AppendStat(out, "hot_cache_items", store_stats.hot_cache_items);
  AppendStat(out, "hot_cache_evictions", store_stats.hot_cache_evictions);
}

EngineStats* Engine::RegisterStats() {
  std::lock_guard lock(stats_mu_);
  stats_blocks_.push_back(std::make_unique<EngineStats>());
  return stats_blocks_.back().get();
}

EngineTotals Engine::Totals() const {
  EngineTotals t = LifetimeTotals();
  std::lock_guard lock(stats_mu_);
  t.Subtract(stats_base_);
  return t;
}

EngineTotals Engine::LifetimeTotals() const {
  std::lock_guard lock(stats_mu_);
  EngineTotals t;
  for (const auto& block : stats_blocks_) t.Add(*block);
  return t;
}

void Engine::ResetStats() {
  EngineTotals now = LifetimeTotals();
  std::lock_guard lock(stats_mu_);
  stats_base_ = now;
  if (server_stats_) server_base_ = server_stats_();
}

void Engine::SetServerStatsSource(std::function<ServerStats()> source) {
  std::lock_guard lock(stats_mu_);
  server_stats_ = std::move(source);
}

void Engine::SetSettings(std::vector<std::pair<std::string, std::string>> settings) {
  std::lock_guard lock(stats_mu_);
  settings_ = std::move(settings);
}

}  // namespace petracache::engine
