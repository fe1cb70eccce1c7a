// Engine: memcached's meta commands, following memcached 1.6.18's process_mget_command,
// process_mset_command with do_store_item, process_mdelete_command, process_marithmetic_command
// and process_meta_command (me). The parser has already checked the flags (cmd.meta); here
// they take effect, and return flags are written in the order the request gave them.
#include <algorithm>
#include <charconv>
#include <optional>
#include <string>

#include "engine/engine.h"
#include "engine/engine_internal.h"
#include "protocol/encoder.h"

namespace petracache::engine {

using protocol::AppendMetaEnd;
using protocol::AppendMetaFlag;
using protocol::AppendMetaKey;
using protocol::AppendMetaStatus;
using protocol::AppendMetaToken;
using protocol::MetaStatus;
using storage::kItemKeyBinary;
using storage::kItemStale;
using storage::kItemTokenSent;

namespace {

// The times a meta request works with, as absolute Unix seconds. memcached keeps times
// relative to its start and maps every absolute time at or before its start (and every
// negative TTL) to one instant just after it, so two times in the past compare equal there
// (an R far in the past wins nothing against an item a T just expired). `floor` is that
// instant for this engine; Clamp gives a time as memcached sees it.
struct MetaTimes {
  int64_t now = 0;
  int64_t floor = 0;
  int64_t new_exptime = 0;     // T
  int64_t vivify_exptime = 0;  // N
  int64_t recache_time = 0;    // R
  int64_t Clamp(int64_t t) const { return t == 0 ? 0 : std::max(t, floor); }
};

MetaTimes MetaTimesFor(const Command& cmd, int64_t now, int64_t start_time) {
  // memcached's clock starts ITEM_UPDATE_INTERVAL + 2 seconds before the process does, and
  // the instant it maps the past to is one second after that.
  constexpr int64_t kClockLead = 60 + 2;
  MetaTimes times;
  times.now = now;
  times.floor = start_time - kClockLead + 1;
  times.new_exptime = AbsoluteExptime(cmd.meta.ttl, now);
  times.vivify_exptime = AbsoluteExptime(cmd.meta.vivify_ttl, now);
  times.recache_time = AbsoluteExptime(cmd.meta.recache_ttl, now);
  return times;
}

// The " t<seconds>" return flag: the TTL left, -1 for none. memcached prints it as an
// unsigned 32-bit number, so an item a T of this request put in the past wraps; keep that.
void AppendTtl(std::string* out, int64_t exptime, const MetaTimes& times) {
  if (exptime == 0) {
    AppendMetaFlag(out, 't', int64_t{-1});
  } else {
    AppendMetaFlag(out, 't',
                   static_cast<uint64_t>(static_cast<uint32_t>(times.Clamp(exptime) - times.now)));
  }
}

// The status line's trailing flags that every meta command echoes: the opaque token and the
// key (with the request's encoding). Returns false if an opaque token is too long.
bool AppendEchoFlags(const Command& cmd, std::string* out) {
  for (size_t i = 0; i < cmd.meta.count; ++i) {
    const std::string_view token = cmd.meta.tokens[i];
    if (token[0] == 'O') {
      if (token.size() > kMaxMetaOpaqueLength) return false;
      AppendMetaToken(out, token);
    } else if (token[0] == 'k') {
      AppendMetaKey(out, cmd.key, cmd.meta.base64_key);
    }
  }
  return true;
}

// memcached's slab class for an item of `size` bytes under its default settings (48-byte
// item header plus -n 48, growth factor 1.25, 8-byte alignment, 512 KiB largest chunk): what
// `me` prints as cls. Items above the largest chunk are chunked and report the class of their
// header, which holds the key, the flags and a chunk pointer.
uint64_t SlabClass(size_t size, size_t key_size, uint32_t flags) {
  constexpr size_t kLargestChunk = 512 * 1024;
  constexpr size_t kItemHeader = 48;
  if (size > kLargestChunk) {
    // The header item: memcached's item, CAS, key and NUL, flags, and one chunk header.
    size = kItemHeader + 8 + key_size + 1 + (flags != 0 ? 4 : 0) + 48;
  }
  uint64_t cls = 1;
  size_t chunk = kItemHeader + 48;
  while (true) {
    if (chunk >= kLargestChunk / 1.25) return size <= kLargestChunk ? cls : 0;
    if (chunk % 8 != 0) chunk += 8 - chunk % 8;
    if (size <= chunk) return cls;
    chunk = static_cast<size_t>(static_cast<double>(chunk) * 1.25);
    ++cls;
  }
}

struct MetaGetResult {
  bool opaque_too_long = false;
  bool changed = false;  // the item must be written back (new TTL, new item, token won)
  bool ttl_set = false;  // a T flag applied: counted as a touch, not a get
};

// mg's reply for a live (or just vivified) item, and what the request does to it: walks the
// flags in request order exactly as memcached does (a t before a T shows the old TTL), then
// adds Z (token already sent), X (stale) and W (this client won the token).
MetaGetResult AppendMetaGetHit(const Command& cmd, ItemHeader* header, std::string_view value,
                               bool created, const MetaTimes& times, std::string* out) {
  const MetaFlags& m = cmd.meta;
  MetaGetResult result;
  bool won = false;
  if (m.value) {
    protocol::AppendMetaValueStatus(out, value.size());
  } else {
    AppendMetaStatus(out, MetaStatus::kHd);
  }
  for (size_t i = 0; i < m.count; ++i) {
    const std::string_view token = m.tokens[i];
    switch (token[0]) {
      case 'T':
        result.ttl_set = true;
        result.changed = true;
        header->exptime = times.new_exptime;
        break;
      case 'N':
        if (created) {
          header->exptime = times.vivify_exptime;
          won = true;
        }
        break;
      case 'R':
        if ((header->bits & kItemTokenSent) == 0 && !created && header->exptime != 0 &&
            times.Clamp(header->exptime) < times.Clamp(times.recache_time)) {
          won = true;
        }
        break;
      case 's':
        AppendMetaFlag(out, 's', static_cast<uint64_t>(value.size()));
        break;
      case 't':
        AppendTtl(out, header->exptime, times);
        break;
      case 'c':
        AppendMetaFlag(out, 'c', header->cas);
        break;
      case 'f':
        AppendMetaFlag(out, 'f', static_cast<uint64_t>(header->flags));
        break;
      case 'O':
        if (token.size() > kMaxMetaOpaqueLength) {
          result.opaque_too_long = true;
          return result;
        }
        AppendMetaToken(out, token);
        break;
      case 'k':
        AppendMetaKey(out, cmd.key, (header->bits & kItemKeyBinary) != 0);
        break;
      default:
        break;
    }
  }
  if ((header->bits & kItemTokenSent) != 0) AppendMetaFlag(out, 'Z');
  if ((header->bits & kItemStale) != 0) {
    AppendMetaFlag(out, 'X');
    if ((header->bits & kItemTokenSent) == 0) won = true;
  }
  if (won) {
    AppendMetaFlag(out, 'W');
    header->bits |= kItemTokenSent;
    result.changed = true;
  }
  AppendMetaEnd(out);
  if (m.value) protocol::AppendMetaData(out, value);
  return result;
}

}  // namespace

Outcome Engine::MetaRetrieve(const Command& cmd, ExecContext& ctx) {
  const MetaFlags& m = cmd.meta;
  const int64_t now = clock_->Now();
  // A request that may change the item (touch, vivify, recache) reads and writes under the
  // key's lock. Any other is a plain read encoded straight from the store, unless it finds a
  // stale item whose token nobody has won yet: then it retries under the lock to win it.
  if (m.new_ttl || m.vivify || m.recache) return MetaRetrieveLocked(cmd, ctx, now);
  const size_t rollback = ctx.out->size();
  MetaGetResult result;
  Lookup r = Visit(store_, cmd.key, ctx.allow_disk, [&](const ItemHeader& h, std::string_view v) {
    ItemHeader header = h;
    result = AppendMetaGetHit(cmd, &header, v, false, MetaTimesFor(cmd, now, start_time_), ctx.out);
  });
  if (r.would_block || r.failed || result.changed || result.opaque_too_long) {
    ctx.out->resize(rollback);
  }
  if (r.would_block) return Outcome::kWouldBlock;
  if (r.failed) return StorageFailure(cmd, ctx);
  if (result.changed) return MetaRetrieveLocked(cmd, ctx, now);
  if (result.opaque_too_long) return Answer(cmd, ctx, ProtocolError::kMetaOpaqueTooLong);
  if (IsLive(r.status)) {
    ctx.stats->cmd_get.Add();
    ctx.stats->get_hits.Add();
    return Outcome::kDone;
  }
  return MetaMiss(cmd, ctx, r.status);
}

Outcome Engine::MetaMiss(const Command& cmd, ExecContext& ctx, LookupStatus status) {
  // EN, with the opaque token and the key (as the request encoded it) echoed.
  const size_t rollback = ctx.out->size();
  AppendMetaStatus(ctx.out, MetaStatus::kEn);
  if (!AppendEchoFlags(cmd, ctx.out)) {
    ctx.out->resize(rollback);
    return Answer(cmd, ctx, ProtocolError::kMetaOpaqueTooLong);
  }
  AppendMetaEnd(ctx.out);
  if (cmd.meta.quiet) ctx.out->resize(rollback);
  ctx.stats->cmd_get.Add();
  ctx.stats->get_misses.Add();
  if (status == LookupStatus::kExpired) ctx.stats->get_expired.Add();
  if (status == LookupStatus::kFlushed) ctx.stats->get_flushed.Add();
  return Outcome::kDone;
}

Outcome Engine::MetaRetrieveLocked(const Command& cmd, ExecContext& ctx, int64_t now) {
  const MetaFlags& m = cmd.meta;
  std::unique_lock lock = LockKey(cmd.key, ctx);
  if (!lock.owns_lock()) return Outcome::kWouldBlock;
  ItemHeader header;
  std::string value;
  Lookup r = Read(store_, cmd.key, ctx.allow_disk, &header, &value);
  if (r.would_block) return Outcome::kWouldBlock;
  if (r.failed) return StorageFailure(cmd, ctx);
  const bool live = IsLive(r.status);
  if (!live && !m.vivify) return MetaMiss(cmd, ctx, r.status);
  const bool created = !live;
  if (created) {
    // N on a miss: an empty item, flags 0, whose TTL the N flag sets; this client wins.
    header = ItemHeader{};
    value.clear();
    absl::StatusOr<uint64_t> cas = store_->NextCas();
    if (!cas.ok()) return StorageFailure(cmd, ctx);
    header.cas = *cas;
    header.write_time = now;
  }
  const size_t rollback = ctx.out->size();
  MetaGetResult result =
      AppendMetaGetHit(cmd, &header, value, created, MetaTimesFor(cmd, now, start_time_), ctx.out);
  if (created || result.changed) {
    // memcached changes the item flag by flag: an over-long opaque token still leaves the
    // item created, or touched, by the flags before it (but never marks a token won).
    if (std::optional<Outcome> failed = Write(cmd, ctx, cmd.key, header, value)) {
      ctx.out->resize(rollback);
      return *failed;
    }
    if (created) ctx.stats->total_items.Add();
  }
  if (result.opaque_too_long) {
    ctx.out->resize(rollback);
    return Answer(cmd, ctx, ProtocolError::kMetaOpaqueTooLong);
  }
  if (result.ttl_set) {
    ctx.stats->cmd_touch.Add();
    ctx.stats->touch_hits.Add();
  } else {
    ctx.stats->cmd_get.Add();
    ctx.stats->get_hits.Add();
  }
  return Outcome::kDone;
}

Outcome Engine::MetaStore(const Command& cmd, ExecContext& ctx) {
  const MetaFlags& m = cmd.meta;
  const int64_t now = clock_->Now();
  // ms's modes map onto memcached's store commands; a CAS upgrades set and replace to cas.
  CommandType mode = CommandType::kSet;
  switch (m.mode) {
    case 'E':
      mode = CommandType::kAdd;
      break;
    case 'A':
      mode = CommandType::kAppend;
      break;
    case 'P':
      mode = CommandType::kPrepend;
      break;
    case 'R':
      mode = CommandType::kReplace;
      break;
    default:
      break;
  }
  if (m.has_cas && (mode == CommandType::kSet || mode == CommandType::kReplace)) {
    mode = CommandType::kCas;
  }
  ItemForUpdate item;
  if (mode == CommandType::kSet) {
    // Like set, a plain ms needs the key's lock, not the old item.
    item.lock = LockKey(cmd.key, ctx);
    if (!item.lock.owns_lock()) return Outcome::kWouldBlock;
  } else if (std::optional<Outcome> early = LockAndRead(cmd, ctx, &item)) {
    return *early;
  }
  ctx.stats->cmd_set.Add();

  ItemHeader header;
  header.flags = m.client_flags;
  header.exptime = m.new_ttl ? AbsoluteExptime(m.ttl, now) : 0;
  header.bits = m.base64_key ? kItemKeyBinary : 0;
  std::string_view value = cmd.data;
  std::string combined;
  // memcached compares a CAS of 0 with nothing (its "no CAS" value).
  const bool cas_given = m.has_cas && m.cas != 0;
  MetaStatus status = MetaStatus::kHd;
  if (item.live) {
    const ItemHeader& old = item.header;
    switch (mode) {
      case CommandType::kAdd:
        status = MetaStatus::kNs;
        break;
      case CommandType::kCas:
        if (cas_given && m.cas == old.cas) {
          ctx.stats->cas_hits.Add();
        } else if (cas_given && m.invalidate && m.cas < old.cas) {
          // An older CAS with I stores the value as stale: the TTL, the stale mark and a sent
          // token stay as they were.
          ctx.stats->cas_hits.Add();
          header.exptime = old.exptime;
          header.bits |= kItemStale | (old.bits & kItemTokenSent);
        } else {
          ctx.stats->cas_badval.Add();
          status = MetaStatus::kEx;
        }
        break;
      case CommandType::kAppend:
      case CommandType::kPrepend:
        if (cas_given && m.cas != old.cas) {
          status = MetaStatus::kEx;
          break;
        }
        if (ItemTotalSize(cmd.key.size(), old.flags, item.value.size() + cmd.data.size()) >
            options_.item_size_max) {
          status = MetaStatus::kNs;
          break;
        }
        header.flags = old.flags;
        header.exptime = old.exptime;
        header.bits = 0;
        combined.reserve(item.value.size() + cmd.data.size());
        if (mode == CommandType::kAppend) {
          combined.append(item.value).append(cmd.data);
        } else {
          combined.append(cmd.data).append(item.value);
        }
        value = combined;
        break;
      default:
        break;
    }
  } else if (mode == CommandType::kCas) {
    ctx.stats->cas_misses.Add();
    status = MetaStatus::kNf;
  } else if (mode != CommandType::kSet && mode != CommandType::kAdd) {
    status = MetaStatus::kNs;  // replace, append and prepend need an item
  }

  uint64_t stored_cas = 0;
  if (status == MetaStatus::kHd) {
    if (std::optional<Outcome> failed = StoreNew(cmd, ctx, &header, value, now)) return *failed;
    ctx.stats->total_items.Add();
    stored_cas = header.cas;
    if (m.quiet) return Outcome::kDone;
  }
  AppendMetaStatus(ctx.out, status);
  for (size_t i = 0; i < m.count; ++i) {
    const std::string_view token = m.tokens[i];
    if (token[0] == 'O') {
      AppendMetaToken(ctx.out, token);
    } else if (token[0] == 'k') {
      AppendMetaKey(ctx.out, cmd.key, m.base64_key);
    } else if (token[0] == 'c') {
      AppendMetaFlag(ctx.out, 'c', stored_cas);
    }
  }
  AppendMetaEnd(ctx.out);
  return Outcome::kDone;
}

Outcome Engine::MetaDelete(const Command& cmd, ExecContext& ctx) {
  const MetaFlags& m = cmd.meta;
  ItemForUpdate item;
  if (std::optional<Outcome> early = LockAndRead(cmd, ctx, &item)) return *early;
  MetaStatus status = MetaStatus::kHd;
  if (!item.live) {
    ctx.stats->delete_misses.Add();
    status = MetaStatus::kNf;
  } else if (m.has_cas && m.cas != item.header.cas) {
    ctx.stats->delete_misses.Add();
    status = MetaStatus::kEx;
  } else if (m.invalidate) {
    // I marks the item stale instead of removing it: a new CAS, the next reader wins the
    // token, and T (if given) a new TTL. memcached leaves the item's time alone.
    ItemHeader& header = item.header;
    if (m.new_ttl) header.exptime = AbsoluteExptime(m.ttl, clock_->Now());
    header.bits = static_cast<uint8_t>((header.bits | kItemStale) & ~kItemTokenSent);
    absl::StatusOr<uint64_t> cas = store_->NextCas();
    if (!cas.ok()) return StorageFailure(cmd, ctx);
    header.cas = *cas;
    if (std::optional<Outcome> failed = Write(cmd, ctx, cmd.key, header, item.value)) {
      return *failed;
    }
  } else {
    if (std::optional<Outcome> failed = Remove(cmd, ctx)) return *failed;
    ctx.stats->delete_hits.Add();
  }
  if (status == MetaStatus::kHd && m.quiet) return Outcome::kDone;
  AppendMetaStatus(ctx.out, status);
  AppendEchoFlags(cmd, ctx.out);  // the parser refused over-long opaque tokens
  AppendMetaEnd(ctx.out);
  return Outcome::kDone;
}

Outcome Engine::MetaArithmetic(const Command& cmd, ExecContext& ctx) {
  const MetaFlags& m = cmd.meta;
  const bool incr = m.mode != 'D' && m.mode != '-';
  const int64_t now = clock_->Now();
  ItemForUpdate item;
  if (std::optional<Outcome> early = LockAndRead(cmd, ctx, &item)) return *early;
  ItemHeader& header = item.header;
  const bool created = !item.live && m.vivify;
  uint64_t number = 0;
  std::string new_value;
  MetaStatus status = MetaStatus::kHd;
  if (item.live) {
    // memcached's do_add_delta: the size checks, then the CAS, then the number.
    if (!DeltaCandidate(cmd.key, header, item.value)) {
      return Answer(cmd, ctx, ProtocolError::kNonNumeric);
    }
    if (m.has_cas && m.cas != 0 && m.cas != header.cas) {
      status = MetaStatus::kEx;
    } else if (!ApplyDelta(cmd.key, header, item.value, incr, m.delta, &number, &new_value)) {
      return Answer(cmd, ctx, ProtocolError::kNonNumeric);
    } else if (new_value.size() > item.value.size()) {
      header.bits = 0;  // memcached rewrites in place only when the number fits
    }
  } else if (created) {
    header = ItemHeader{};
    number = m.initial;
    new_value = std::to_string(number);
  } else {
    (incr ? ctx.stats->incr_misses : ctx.stats->decr_misses).Add();
    status = MetaStatus::kNf;
  }

  const bool has_item = status == MetaStatus::kHd;
  const int64_t old_exptime = header.exptime;
  if (has_item) {
    // T and N change the TTL of the item memcached holds after the update (N only of one just
    // created). When the number outgrew its text, memcached stored a copy and that item is
    // not the one T changes: the stored TTL stays as it was.
    const bool in_place = created || new_value.size() <= item.value.size();
    for (size_t i = 0; i < m.count && in_place; ++i) {
      if (m.tokens[i][0] == 'T') header.exptime = AbsoluteExptime(m.ttl, now);
      if (m.tokens[i][0] == 'N' && created) header.exptime = AbsoluteExptime(m.vivify_ttl, now);
    }
    if (std::optional<Outcome> failed = StoreNew(cmd, ctx, &header, new_value, now)) {
      return *failed;
    }
    if (created) {
      ctx.stats->total_items.Add();
    } else {
      (incr ? ctx.stats->incr_hits : ctx.stats->decr_hits).Add();
    }
  }
  // memcached's q hides the whole reply of a successful update (even a VA), but not of a
  // vivify, a miss or a CAS mismatch. An over-long opaque token is reported after the update.
  const size_t rollback = ctx.out->size();
  if (!has_item) {
    AppendMetaStatus(ctx.out, status);
    if (!AppendEchoFlags(cmd, ctx.out)) {
      ctx.out->resize(rollback);
      return Answer(cmd, ctx, ProtocolError::kMetaOpaqueTooLong);
    }
    AppendMetaEnd(ctx.out);
    return Outcome::kDone;
  }
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), number);
  const std::string_view text(digits, static_cast<size_t>(end - digits));
  if (m.value) {
    protocol::AppendMetaValueStatus(ctx.out, text.size());
  } else {
    AppendMetaStatus(ctx.out, MetaStatus::kHd);
  }
  const MetaTimes times = MetaTimesFor(cmd, now, start_time_);
  int64_t exptime = old_exptime;  // as the flags walk sees it
  for (size_t i = 0; i < m.count; ++i) {
    const std::string_view token = m.tokens[i];
    switch (token[0]) {
      case 'c':
        AppendMetaFlag(ctx.out, 'c', header.cas);
        break;
      case 't':
        AppendTtl(ctx.out, exptime, times);
        break;
      case 'T':
        exptime = AbsoluteExptime(m.ttl, now);
        break;
      case 'N':
        if (created) exptime = AbsoluteExptime(m.vivify_ttl, now);
        break;
      case 'O':
        if (token.size() > kMaxMetaOpaqueLength) {
          ctx.out->resize(rollback);
          return Answer(cmd, ctx, ProtocolError::kMetaOpaqueTooLong);
        }
        AppendMetaToken(ctx.out, token);
        break;
      case 'k':
        AppendMetaKey(ctx.out, cmd.key, m.base64_key);
        break;
      default:
        break;
    }
  }
  AppendMetaEnd(ctx.out);
  if (m.value) protocol::AppendMetaData(ctx.out, text);
  if (m.quiet && !created) ctx.out->resize(rollback);
  return Outcome::kDone;
}

Outcome Engine::MetaDebug(const Command& cmd, ExecContext& ctx) {
  const int64_t now = clock_->Now();
  bool binary = false;
  protocol::MetaDebugInfo info;
  Lookup r = Visit(store_, cmd.key, ctx.allow_disk, [&](const ItemHeader& h, std::string_view v) {
    binary = (h.bits & kItemKeyBinary) != 0;
    info.exp = h.exptime == 0 ? -1 : now - h.exptime;
    info.since_write = static_cast<uint64_t>(std::max<int64_t>(now - h.write_time, 0));
    info.cas = h.cas;
    info.size = ItemTotalSize(cmd.key.size(), h.flags, v.size());
    info.slab_class = SlabClass(info.size, cmd.key.size(), h.flags);
  });
  if (r.would_block) return Outcome::kWouldBlock;
  if (r.failed) return StorageFailure(cmd, ctx);
  if (!IsLive(r.status)) {
    AppendMetaStatus(ctx.out, MetaStatus::kEn);
    AppendMetaEnd(ctx.out);
    return Outcome::kDone;
  }
  protocol::AppendMetaDebug(ctx.out, cmd.key, binary, info);
  return Outcome::kDone;
}

}  // namespace petracache::engine
