// Engine: memcached's command semantics (Command x Store -> reply bytes), linearizable per key
// across threads.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/clock.h"
#include "engine/stats.h"
#include "petracache/command.h"
#include "protocol/encoder.h"
#include "storage/store.h"

namespace petracache::engine {

struct EngineOptions {
  // Text after "VERSION ": memcached's version first (clients parse it), then ours.
  std::string version;
  bool enable_shutdown = false;
  bool disable_flush_all = false;
  // Limits append/prepend results like memcached's item size limit.
  size_t item_size_max = kDefaultItemSizeMax;
};

enum class Outcome {
  kDone,        // reply (if any) appended
  kWouldBlock,  // ctx.allow_disk was false and the answer needs disk: nothing was changed or
                // appended; run the same command again with allow_disk = true
  kClose,       // reply appended (if any); close the connection (quit)
  kShutdown,    // the client asked the server to shut down (enabled by config)
  kPartial,     // a retrieval reached ctx.output_limit: the VALUE lines of keys before
                // ctx.next_key are appended (no END); run the same command again with
                // ctx.first_key = ctx.next_key once the client has read some
};

struct ExecContext {
  std::string* out = nullptr;
  EngineStats* stats = nullptr;
  bool allow_disk = true;
  // Retrievals: start at this key, and stop with kPartial once out->size() reaches
  // output_limit with keys left, so one multi-get cannot build an unbounded reply.
  size_t first_key = 0;
  size_t output_limit = SIZE_MAX;
  size_t next_key = 0;  // set with kPartial
};

// Thread-safe: any number of threads may Execute concurrently, each with its own EngineStats.
//
// Linearizability: every command that reads and then writes a key (all mutations) holds the
// key's lock stripe across the read and the write, and allocates its CAS inside it, so two
// clients on different cores never interleave inside one key's read-modify-write. Plain reads
// take no lock: a single Store::Get observes a whole write or none of it.
class Engine {
 public:
  Engine(storage::Store* store, Clock* clock, EngineOptions options);

  // Executes one command, recording its latency in ctx.stats (except for kWouldBlock: the
  // retry with disk records its own).
  Outcome Execute(const Command& cmd, ExecContext& ctx);

  // A per-thread stats block that lives as long as the engine; summed by Totals().
  EngineStats* RegisterStats();
  // Counters since start or the last `stats reset` (the memcached `stats` view).
  EngineTotals Totals() const;
  // Counters since start, never reset (Prometheus counters must not go backwards).
  EngineTotals LifetimeTotals() const;
  void ResetStats();

  // Where `stats` gets server-level figures; `stats settings` prints `settings` verbatim.
  void SetServerStatsSource(std::function<ServerStats()> source);
  void SetSettings(std::vector<std::pair<std::string, std::string>> settings);

  uint32_t verbosity() const { return verbosity_.load(std::memory_order_relaxed); }
  int64_t start_time() const { return start_time_; }
  storage::Store* store() const { return store_; }

 private:
  static constexpr size_t kLockStripes = 1024;

  std::mutex& StripeFor(std::string_view key);
  // The key's stripe, locked; on an event loop (no disk access) only if free right now.
  std::unique_lock<std::mutex> LockKey(std::string_view key, const ExecContext& ctx);

  Outcome Dispatch(const Command& cmd, ExecContext& ctx);
  Outcome Retrieve(const Command& cmd, ExecContext& ctx);
  static void ApplyRetrievalStats(const EngineTotals& delta, ExecContext& ctx);
  Outcome StoreItem(const Command& cmd, ExecContext& ctx);
  Outcome Arithmetic(const Command& cmd, ExecContext& ctx);
  Outcome Delete(const Command& cmd, ExecContext& ctx);
  Outcome Touch(const Command& cmd, ExecContext& ctx);
  Outcome FlushAll(const Command& cmd, ExecContext& ctx);
  Outcome Stats(const Command& cmd, ExecContext& ctx);
  // Meta commands (meta.cc).
  Outcome MetaRetrieve(const Command& cmd, ExecContext& ctx);
  Outcome MetaRetrieveLocked(const Command& cmd, ExecContext& ctx, int64_t now);
  Outcome MetaMiss(const Command& cmd, ExecContext& ctx, storage::LookupStatus status);
  Outcome MetaStore(const Command& cmd, ExecContext& ctx);
  Outcome MetaDelete(const Command& cmd, ExecContext& ctx);
  Outcome MetaArithmetic(const Command& cmd, ExecContext& ctx);
  Outcome MetaDebug(const Command& cmd, ExecContext& ctx);
  Outcome Error(const Command& cmd, ExecContext& ctx);
  void AppendGeneralStats(std::string* out);
  // Replies SERVER_ERROR for a failed storage call (noreply suppresses it, as memcached does
  // for its own SERVER_ERRORs: an unexpected line would desynchronize the client).
  Outcome StorageFailure(const Command& cmd, ExecContext& ctx);
  // Replies "SERVER_ERROR 307 busy": the store gave up on a long write stall (overload).
  Outcome Busy(const Command& cmd, ExecContext& ctx);
  // Appends the reply unless the command said noreply.
  Outcome Answer(const Command& cmd, ExecContext& ctx, protocol::Reply reply);
  Outcome Answer(const Command& cmd, ExecContext& ctx, ProtocolError error);
  // A mutation's key, locked (the stripe stays held while this lives) and read.
  struct ItemForUpdate {
    std::unique_lock<std::mutex> lock;
    storage::ItemHeader header;
    std::string value;
    bool live = false;
  };
  // The read half of a mutation: locks cmd.key's stripe and reads the item. Returns the
  // outcome to give up with (stripe busy on an event loop, needs disk, storage failure), or
  // nullopt with *item filled.
  std::optional<Outcome> LockAndRead(const Command& cmd, ExecContext& ctx, ItemForUpdate* item);
  // Stores the item under cmd.key; nullopt when written, else the outcome to return
  // (kWouldBlock for a write stall on an event loop, or the storage failure reply).
  std::optional<Outcome> Write(const Command& cmd, ExecContext& ctx, std::string_view key,
                               const storage::ItemHeader& header, std::string_view value);
  // What a store write's status means for cmd: nullopt when done, else the outcome to return.
  std::optional<Outcome> WriteOutcome(const Command& cmd, ExecContext& ctx,
                                      const absl::Status& status);
  // Deletes cmd.key; nullopt when done, else the outcome to return (as Write).
  std::optional<Outcome> Remove(const Command& cmd, ExecContext& ctx);
  // Gives *header a fresh CAS and write time, then Write()s it.
  std::optional<Outcome> StoreNew(const Command& cmd, ExecContext& ctx, storage::ItemHeader* header,
                                  std::string_view value, int64_t now);

  storage::Store* const store_;
  Clock* const clock_;
  const EngineOptions options_;
  const int64_t start_time_;
  std::atomic<uint32_t> verbosity_{0};
  std::array<std::mutex, kLockStripes> stripes_;

  mutable std::mutex stats_mu_;
  std::vector<std::unique_ptr<EngineStats>> stats_blocks_;     // guarded by stats_mu_
  EngineTotals stats_base_;                                    // guarded by stats_mu_
  ServerStats server_base_;                                    // guarded by stats_mu_
  std::function<ServerStats()> server_stats_;                  // guarded by stats_mu_
  std::vector<std::pair<std::string, std::string>> settings_;  // guarded by stats_mu_
};

}  // namespace petracache::engine
