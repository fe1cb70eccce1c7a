// Server: owns the store, the engine, the blocking pool and one event loop per worker thread,
// and wires each connection to a Session. Start-up order: open the database, bind every
// listener, drop privileges, start the loops; shutdown is the reverse.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/thread_pool.h"
#include "engine/engine.h"
#include "io/event_loop.h"
#include "io/listen.h"
#include "io/unique_fd.h"
#include "server/admin.h"
#include "server/config.h"
#include "server/session.h"
#include "storage/caching_store.h"
#include "storage/rocksdb_store.h"

namespace petracache::server {

class Server {
 public:
  // Opens the database and binds the listeners; fails with a message naming the key or path.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Server>> Create(const Config& config);
  ~Server();

  // Runs the worker loops until shutdown has completed (SIGTERM/SIGINT or the `shutdown`
  // command). A second signal during shutdown exits at once.
  void Run();

  // Thread-safe and async-signal-safe request to shut down gracefully.
  static void RequestShutdown();

  // Ready: the database is open and every listener accepts. False again from the first
  // moment of a shutdown, so load balancers drain before the listeners close.
  bool ready() const { return ready_.load(std::memory_order_acquire); }
  // The port actually bound (useful with port 0).
  int port() const { return port_; }
  engine::Engine* engine() { return engine_.get(); }
  engine::ServerStats GetServerStats() const;
  // True when every worker loop runs a posted task within timeout_ms.
  bool LoopsAlive(int timeout_ms);
  // Writes a consistent checkpoint of the database under [storage] backup_dir while serving;
  // returns its directory.
  absl::StatusOr<std::string> Backup();

 private:
  class Handler;
  explicit Server(const Config& config);

  Config config_;
  std::unique_ptr<storage::RocksDbStore> store_;
  std::unique_ptr<storage::CachingStore> hot_tier_;  // in front of store_ when configured
  std::unique_ptr<AdminServer> admin_;               // declared early: destroyed after the loops
  std::unique_ptr<engine::Engine> engine_;
  std::unique_ptr<ThreadPool> disk_pool_;
  // durability = sync: the one thread that runs the loops' group commits (each an fsync).
  std::unique_ptr<ThreadPool> commit_pool_;
  std::vector<io::UniqueFd> listen_fds_;  // until each loop takes its own
  std::vector<std::unique_ptr<Handler>> handlers_;
  std::vector<std::unique_ptr<io::EventLoop>> loops_;
  std::atomic<int64_t> open_connections_{0};
  std::atomic<bool> ready_{false};
  std::mutex backup_mu_;  // one checkpoint at a time
  int port_ = 0;
};

}  // namespace petracache::server
