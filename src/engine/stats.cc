// Engine statistics helpers: command kinds, histogram bucketing, and summation.
#include "engine/stats.h"

namespace petracache::engine {

CommandKind KindOf(CommandType type) {
  switch (type) {
    case CommandType::kGet:
    case CommandType::kGets:
    case CommandType::kGat:
    case CommandType::kGats:
    case CommandType::kMetaRetrieve:
      return CommandKind::kGet;
    case CommandType::kSet:
    case CommandType::kAdd:
    case CommandType::kReplace:
    case CommandType::kAppend:
    case CommandType::kPrepend:
    case CommandType::kLeaseSet:
    case CommandType::kMetaStore:
      return CommandKind::kSet;
    case CommandType::kCas:
      return CommandKind::kCas;
    case CommandType::kDelete:
    case CommandType::kMetaDelete:
      return CommandKind::kDelete;
    case CommandType::kIncr:
      return CommandKind::kIncr;
    case CommandType::kDecr:
      return CommandKind::kDecr;
    case CommandType::kTouch:
      return CommandKind::kTouch;
    case CommandType::kFlushAll:
      return CommandKind::kFlush;
    default:
      return CommandKind::kOther;
  }
}

std::string_view CommandKindName(CommandKind kind) {
  static constexpr std::string_view kNames[kCommandKinds] = {
      "get", "set", "delete", "incr", "decr", "touch", "cas", "flush", "other"};
  return kNames[static_cast<size_t>(kind)];
}

void LatencyHistogram::Record(uint64_t nanos) {
  const double seconds = static_cast<double>(nanos) * 1e-9;
  size_t i = 0;
  while (i < kLatencyBuckets - 1 && seconds > kLatencyBounds[i]) ++i;
  buckets[i].Add();
  sum_nanos.Add(nanos);
}

void EngineTotals::Add(const EngineStats& s) {
#define PETRACACHE_ADD_TOTAL(name) name += s.name.Get();
  PETRACACHE_ENGINE_COUNTERS(PETRACACHE_ADD_TOTAL)
#undef PETRACACHE_ADD_TOTAL
  for (size_t k = 0; k < kCommandKinds; ++k) {
    for (size_t b = 0; b < kLatencyBuckets; ++b) {
      latency_buckets[k][b] += s.latency[k].buckets[b].Get();
    }
    latency_sum_nanos[k] += s.latency[k].sum_nanos.Get();
  }
}

void EngineTotals::Subtract(const EngineTotals& base) {
#define PETRACACHE_SUB_TOTAL(name) name -= base.name;
  PETRACACHE_ENGINE_COUNTERS(PETRACACHE_SUB_TOTAL)
#undef PETRACACHE_SUB_TOTAL
  for (size_t k = 0; k < kCommandKinds; ++k) {
    for (size_t b = 0; b < kLatencyBuckets; ++b) {
      latency_buckets[k][b] -= base.latency_buckets[k][b];
    }
    latency_sum_nanos[k] -= base.latency_sum_nanos[k];
  }
}

uint64_t EngineTotals::Commands(CommandKind kind) const {
  uint64_t n = 0;
  for (uint64_t b : latency_buckets[static_cast<size_t>(kind)]) n += b;
  return n;
}

}  // namespace petracache::engine
