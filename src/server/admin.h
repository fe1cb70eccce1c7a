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
#include "storage/store.h"

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
  std::function<storage::StoreStats()> store_stats;
  // Takes a consistent checkpoint of the database; returns its directory.
  std::function<absl::StatusOr<std::string>()> backup;
};

// Asks the server whose admin endpoint listens on `admin_addr` for a checkpoint
// (POST /backup); returns the checkpoint's directory. Used by `petracache --backup`.
[[nodiscard]] absl::StatusOr<std::string> RequestBackup(const std::string& admin_addr);

// Renders the Prometheus text exposition (version 0.0.4).
std::string RenderMetrics(const engine::EngineTotals& totals, const engine::ServerStats& server,
                          const storage::StoreStats& store,
                          const std::vector<std::pair<std::string, uint64_t>>& rocksdb);

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
