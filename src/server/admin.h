// Admin: the HTTP endpoints operators and orchestrators use (/health, /ready, /metrics), on
// threads of their own so a slow scraper never touches a worker loop.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/stats.h"

namespace petracache::server {

// What the admin endpoints read; all callbacks must be thread-safe.
struct AdminSources {
  std::function<bool()> ready;
  // True when every worker loop ran a posted no-op within the timeout (loops are turning).
  std::function<bool(int timeout_ms)> loops_alive;
  std::function<engine::EngineTotals()> engine_totals;
  std::function<engine::ServerStats()> server_stats;
  // RocksDB health figures (name, value), from RocksDbStore::Properties().
  std::function<std::vector<std::pair<std::string, uint64_t>>()> storage_properties;
  std::function<uint64_t()> compaction_dropped_expired;
  std::function<uint64_t()> compaction_dropped_flushed;
  std::function<uint64_t()> approximate_items;
};

// Renders the Prometheus text exposition (version 0.0.4).
std::string RenderMetrics(const engine::EngineTotals& totals, const engine::ServerStats& server,
                          const std::vector<std::pair<std::string, uint64_t>>& storage,
                          uint64_t dropped_expired, uint64_t dropped_flushed, uint64_t items);

class AdminServer {
 public:
  // Binds `listen_addr` ("host:port" or "[v6]:port") and starts serving on its own threads.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<AdminServer>> Start(
      const std::string& listen_addr, AdminSources sources);
  ~AdminServer();  // stops and joins

  int port() const { return port_; }

 private:
  struct Impl;
  explicit AdminServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

}  // namespace petracache::server
