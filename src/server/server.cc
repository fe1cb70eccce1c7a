// Server wiring and lifecycle.
#include "server/server.h"

#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "common/clock.h"
#include "common/logging.h"
#include "petracache_config.h"

namespace petracache::server {
namespace {

// Shutdown requests from signal handlers and the `shutdown` command land here.
int g_wake_fd = -1;
std::atomic<int> g_shutdown_requests{0};

void OnSignal(int) {
  if (g_shutdown_requests.fetch_add(1) >= 1) _exit(1);  // second signal: exit at once
  uint64_t one = 1;
  if (g_wake_fd >= 0) (void)!write(g_wake_fd, &one, sizeof(one));
}

// Stats block of the current blocking-pool thread.
thread_local engine::EngineStats* tls_pool_stats = nullptr;

// Adds `increment` to the calling thread's nice value (Linux schedules threads, so the value
// is per thread), up to 19. A pool thread runs one read at a time on the cores the event loops
// use; a lower priority keeps a woken reader from taking the core ahead of a loop's next batch.
void LowerThreadPriority(int increment) {
  if (increment == 0) return;
  const auto tid = static_cast<id_t>(gettid());
  errno = 0;
  int nice = getpriority(PRIO_PROCESS, tid);  // -1 is a valid answer: errno tells
  if (errno != 0) nice = 0;
  nice = std::min(nice + increment, 19);
  if (setpriority(PRIO_PROCESS, tid, nice) != 0) {
    PC_LOG(kWarning, "disk pool: setting nice %d failed: %s", nice, std::strerror(errno));
  }
}

io::Backend ToIoBackend(IoBackendChoice choice) {
  switch (choice) {
    case IoBackendChoice::kIoUring:
    case IoBackendChoice::kIoUringBasic:
      return io::Backend::kIoUring;
    case IoBackendChoice::kEpoll:
      return io::Backend::kEpoll;
    case IoBackendChoice::kAuto:
      break;
  }
  return io::Backend::kAuto;
}

absl::Status DropPrivileges(const std::string& user) {
  if (geteuid() != 0) return absl::OkStatus();
  if (user.empty()) {
    PC_LOG(kWarning, "running as root; set [server] user to drop privileges");
    return absl::OkStatus();
  }
  errno = 0;
  passwd* pw = getpwnam(user.c_str());
  if (pw == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("[server] user: no such user \"%s\"", user));
  }
  if (setgroups(0, nullptr) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
    return absl::PermissionDeniedError(
        absl::StrFormat("[server] user: cannot switch to \"%s\": %s", user, strerror(errno)));
  }
  PC_LOG(kInfo, "running as user %s", user);
  return absl::OkStatus();
}

// `stats settings`: memcached's names first (tools and exporters read them), then every
// PetraCache key as section.key.
std::vector<std::pair<std::string, std::string>> SettingsFor(const Config& c, int port) {
  auto yes_no = [](bool b) { return std::string(b ? "yes" : "no"); };
  std::vector<std::pair<std::string, std::string>> out = {
      {"maxbytes", std::to_string(c.storage.block_cache_size)},
      {"maxconns", std::to_string(c.server.max_connections)},
      {"tcpport", std::to_string(port)},
      {"udpport", "0"},
      {"inter", c.server.listen_addr},
      {"evictions", "off"},
      {"num_threads", std::to_string(c.server.threads)},
      {"cas_enabled", "yes"},
      {"flush_enabled", yes_no(!c.server.disable_flush_all)},
      {"shutdown_command", yes_no(c.server.enable_shutdown)},
      {"item_size_max", std::to_string(c.item_size_max)},
      {"idle_timeout", std::to_string(c.server.idle_timeout)},
      {"binding_protocol", "ascii"},
  };
  for (auto& kv : c.Describe()) out.push_back(std::move(kv));
  return out;
}

}  // namespace

// The io::Handler of one event loop: keeps a Session per connection, and commits the writes
// of each loop iteration at once (group commit) before the replies that depend on them leave.
class Server::Handler final : public io::Handler {
 public:
  Handler(Server* server, engine::EngineStats* stats)
      : server_(server), stats_(stats), store_(server->engine_->store()) {}
  void set_loop(io::EventLoop* loop) { loop_ = loop; }

  void OnOpen(io::Connection& c) override {
    c.user_data = new Conn(server_->engine_.get(), stats_, SessionOptionsFor(server_->config_));
  }

  void OnInput(io::Connection& c) override {
    Conn& conn = ConnOf(c);
    SessionResult r = conn.session.Process(c.input(), &c.output());
    c.Consume(r.consumed);
    if (conn.session.holding() && !conn.waiting_commit) {
      conn.waiting_commit = true;
      waiting_.push_back(&c);
    }
    switch (r.action) {
      case SessionAction::kContinue:
        break;
      case SessionAction::kClose:
      case SessionAction::kShutdown:
        // Held replies go first: the close waits for their commit.
        conn.then = r.action;
        if (!conn.waiting_commit) Finish(c);
        break;
      case SessionAction::kNeedDisk:
        RunOnDisk(c, conn.session.disk_request(), conn.session.disk_first_key());
        break;
    }
    UpdatePause(c);
  }

  void OnBatchEnd() override {
    if (waiting_.empty() || commit_in_flight_) return;
    if (!store_->CommitWaitsForDevice()) {
      // wal: writing the WAL buffer to the OS is quick; do it once for the whole batch.
      Released(store_->Commit(store_->CommitMark()));
      return;
    }
    // sync: an fsync must not stall the loop. Replies keep waiting (their connections paused)
    // while the commit thread syncs; writes made meanwhile join the next commit.
    commit_in_flight_ = true;
    storage::Store* store = store_;
    io::EventLoop* loop = loop_;
    server_->commit_pool_->Submit([this, store, loop, mark = store_->CommitMark()] {
      absl::Status status = store->Commit(mark);
      loop->Post([this, status = std::move(status)] {
        commit_in_flight_ = false;
        Released(status);
        OnBatchEnd();  // replies that arrived during the commit
      });
    });
  }

  void OnDrained(io::Connection& c) override { ContinueOnDisk(c); }

  void OnClose(io::Connection& c) override {
    Conn* conn = &ConnOf(c);
    if (conn->waiting_commit) waiting_.erase(std::find(waiting_.begin(), waiting_.end(), &c));
    delete conn;
    c.user_data = nullptr;
  }

  static SessionOptions SessionOptionsFor(const Config& config) {
    SessionOptions o;
    o.parser.item_size_max = config.item_size_max;
    o.max_output = config.server.write_buffer_size;
    return o;
  }

 private:
  // Per-connection state.
  struct Conn {
    Conn(engine::Engine* engine, engine::EngineStats* stats, const SessionOptions& options)
        : session(engine, stats, options) {}
    Session session;
    bool waiting_commit = false;  // in waiting_: the session holds replies
    bool waiting_disk = false;    // a request runs on the disk pool (or has pieces left)
    std::string disk_request;     // a multi-get answered in pieces on the pool ...
    size_t disk_next_key = 0;     // ... and the key its next piece starts at (0: none)
    SessionAction then = SessionAction::kContinue;  // close or shut down once replies are out
  };
  static Conn& ConnOf(io::Connection& c) { return *static_cast<Conn*>(c.user_data); }

  // Paused: no more input is handled while a disk request runs (its reply comes first), while
  // replies wait for an fsync (nothing may close the connection under them), or while held
  // replies and unsent output together fill the output budget. The session stops taking
  // requests at that budget counting both (its output may have moved into the held replies
  // after it stopped), so the pause must too: the release that unpauses it is what calls the
  // session again for requests already read.
  void UpdatePause(io::Connection& c) {
    Conn& conn = ConnOf(c);
    const bool held_full = conn.session.held_bytes() + c.pending_output() >=
                           server_->config_.server.write_buffer_size;
    c.SetPaused(conn.waiting_disk ||
                (conn.waiting_commit && (store_->CommitWaitsForDevice() || held_full)));
  }

  void Finish(io::Connection& c) {
    Conn& conn = ConnOf(c);
    if (conn.then == SessionAction::kContinue) return;
    c.CloseAfterWrite();
    if (conn.then == SessionAction::kShutdown) RequestShutdown();
  }

  // A commit finished: release the replies it covers (all of them, rewritten, if it failed).
  void Released(const absl::Status& status) {
    ReportCommit(status);
    std::vector<io::Connection*> waiting;
    waiting.swap(waiting_);
    for (io::Connection* c : waiting) {
      Conn& conn = ConnOf(*c);
      if (status.ok() && !store_->Committed(conn.session.held_mark())) {
        waiting_.push_back(c);  // written after the commit began
        continue;
      }
      conn.session.ReleaseHeld(status, &c->output());
      conn.waiting_commit = false;
      c->Wake();
      Finish(*c);
      UpdatePause(*c);
      ContinueOnDisk(*c);
    }
  }

  // Logs when commits start failing (disk full: once, not once per loop iteration) and when
  // they succeed again; `stats storage_errors` counts every retracted acknowledgement.
  void ReportCommit(const absl::Status& status) {
    if (!status.ok() && !commit_failing_) {
      PC_LOG(kError, "storage: commit failed, writes answered with SERVER_ERROR: %s",
             status.ToString());
    } else if (status.ok() && commit_failing_) {
      PC_LOG(kInfo, "storage: commits succeed again");
    }
    commit_failing_ = !status.ok();
  }

  // The connection waits (paused, in order) while a pool thread runs the request. A
  // multi-get comes back in pieces of at most write_buffer_size: the next piece is asked for
  // once the client has read enough of the last one (OnDrained), so one request never holds
  // more than a piece in memory.
  void RunOnDisk(io::Connection& c, std::string request, size_t first_key) {
    ConnOf(c).waiting_disk = true;
    Server* server = server_;
    io::EventLoop* loop = loop_;
    server->disk_pool_->Submit([this, server, loop, id = c.id(), request = std::move(request),
                                first_key]() mutable {
      std::string out;
      size_t next_key = 0;
      SessionAction action = Session::RunBlocking(
          server->engine_.get(), tls_pool_stats, SessionOptionsFor(server->config_).parser,
          request, first_key, &out, server->config_.server.write_buffer_size, &next_key);
      loop->PostToConnection(id, [this, out = std::move(out), action, next_key,
                                  request = std::move(request)](io::Connection& done) mutable {
        Conn& conn = ConnOf(done);
        conn.session.AppendReply(out, &done.output());
        if (next_key != 0) {
          conn.disk_request = std::move(request);
          conn.disk_next_key = next_key;
          ContinueOnDisk(done);
          return;
        }
        conn.waiting_disk = false;
        if (action != SessionAction::kContinue) {
          conn.then = action;
          if (!conn.waiting_commit) Finish(done);
          return;
        }
        UpdatePause(done);
      });
    });
  }

  // The next piece of a multi-get answered on the pool, once the output has room for it
  // (and earlier replies are no longer held for a commit).
  void ContinueOnDisk(io::Connection& c) {
    Conn& conn = ConnOf(c);
    if (conn.disk_next_key == 0 || conn.waiting_commit) return;  // Released() calls again
    if (c.OutputFull()) {
      c.NotifyWhenDrained();
      return;
    }
    const size_t next = std::exchange(conn.disk_next_key, 0);
    RunOnDisk(c, std::move(conn.disk_request), next);
  }

  Server* const server_;
  engine::EngineStats* const stats_;
  storage::Store* const store_;
  io::EventLoop* loop_ = nullptr;
  std::vector<io::Connection*> waiting_;  // connections whose sessions hold replies
  bool commit_in_flight_ = false;         // sync: a commit runs on the commit thread
  bool commit_failing_ = false;           // the last commit failed (logged once)
};

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const Config& config) {
  std::unique_ptr<Server> server(new Server(config));
  Config& c = server->config_;
  if (c.server.threads == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c.server.threads = cpus > 0 ? static_cast<uint64_t>(cpus) : 1;
  }

  // Bind first (ports below 1024 need root), then drop privileges, then open the database, so
  // every file RocksDB creates belongs to the user the server runs as.
  absl::StatusOr<std::vector<io::UniqueFd>> fds =
      io::ListenReusePort(c.server.listen_addr, static_cast<int>(c.server.threads));
  if (!fds.ok()) return fds.status();
  server->listen_fds_ = std::move(*fds);
  server->port_ = io::LocalPort(server->listen_fds_.front().get());

  absl::Status dropped = DropPrivileges(c.server.user);
  if (!dropped.ok()) return dropped;

  storage::RocksDbStore::Options storage_options = c.storage;
  storage_options.clock = SystemClock::Get();
  absl::StatusOr<std::unique_ptr<storage::RocksDbStore>> store =
      storage::RocksDbStore::Open(storage_options);
  if (!store.ok()) return store.status();
  server->store_ = std::move(*store);

  storage::Store* engine_store = server->store_.get();
  if (c.hot_cache_size > 0) {
    server->hot_tier_ = std::make_unique<storage::CachingStore>(
        server->store_.get(), SystemClock::Get(), c.hot_cache_size);
    engine_store = server->hot_tier_.get();
  }

  engine::EngineOptions engine_options;
  engine_options.version =
      absl::StrFormat("%s petracache-%s", PETRACACHE_MEMCACHED_COMPAT_VERSION, PETRACACHE_VERSION);
  engine_options.enable_shutdown = c.server.enable_shutdown;
  engine_options.disable_flush_all = c.server.disable_flush_all;
  engine_options.item_size_max = c.item_size_max;
  server->engine_ =
      std::make_unique<engine::Engine>(engine_store, SystemClock::Get(), engine_options);
  Server* raw = server.get();
  server->engine_->SetServerStatsSource([raw] { return raw->GetServerStats(); });
  server->engine_->SetSettings(SettingsFor(c, server->port_));

  engine::Engine* engine = server->engine_.get();
  server->disk_pool_ = std::make_unique<ThreadPool>(
      std::max<uint64_t>(1, c.server.disk_read_threads), "pc-disk",
      [engine, nice = c.server.disk_read_nice](size_t) {
        LowerThreadPriority(nice);
        tls_pool_stats = engine->RegisterStats();
      });
  if (engine_store->CommitWaitsForDevice()) {
    server->commit_pool_ = std::make_unique<ThreadPool>(1, "pc-commit");
  }

  for (uint64_t i = 0; i < c.server.threads; ++i) {
    auto handler = std::make_unique<Handler>(raw, engine->RegisterStats());
    io::LoopOptions o;
    o.backend = ToIoBackend(c.server.io_backend);
    if (c.server.io_backend == IoBackendChoice::kIoUringBasic) {
      o.uring_level = io::UringLevel::kBasic;
    }
    o.listen_fd = server->listen_fds_[i].get();
    o.max_connections = c.server.max_connections;
    o.open_connections = &server->open_connections_;
    o.reject_message = "ERROR Too many open connections\r\n";
    o.read_buffer_size = c.server.read_buffer_size;
    o.max_pending_output = c.server.write_buffer_size;
    o.idle_timeout_seconds = static_cast<int>(c.server.idle_timeout);
    absl::StatusOr<std::unique_ptr<io::EventLoop>> loop = io::EventLoop::Create(o, handler.get());
    if (!loop.ok()) return loop.status();
    (void)server->listen_fds_[i].release();  // the loop owns it now
    handler->set_loop(loop->get());
    server->handlers_.push_back(std::move(handler));
    server->loops_.push_back(std::move(*loop));
  }
  if (c.metrics.enabled) {
    AdminSources sources;
    sources.ready = [raw] { return raw->ready(); };
    sources.loops_alive = [raw](int timeout_ms) { return raw->LoopsAlive(timeout_ms); };
    sources.engine_totals = [engine] { return engine->LifetimeTotals(); };
    sources.server_stats = [raw] { return raw->GetServerStats(); };
    storage::RocksDbStore* rocks = server->store_.get();
    sources.storage_properties = [rocks] { return rocks->Properties(); };
    sources.store_stats = [engine] { return engine->store()->GetStats(); };
    sources.backup = [raw] { return raw->Backup(); };
    absl::StatusOr<std::unique_ptr<AdminServer>> admin =
        AdminServer::Start(c.metrics.listen_addr, std::move(sources));
    if (!admin.ok()) return admin.status();
    server->admin_ = std::move(*admin);
  }
  PC_LOG(kInfo, "petracache %s: listening on %s (port %d), %d worker threads, io: %s",
         PETRACACHE_VERSION, c.server.listen_addr, server->port_,
         static_cast<int>(c.server.threads), server->loops_.front()->Description());
  PC_LOG(kInfo, "config: %s; db_path: %s; durability: %s",
         c.config_file.empty() ? "(embedded defaults)" : c.config_file, c.storage.db_path,
         std::string(storage::DurabilityName(c.storage.durability)));
  return server;
}

Server::Server(const Config& config) : config_(config) {}

Server::~Server() {
  // Pool threads post replies to loops: stop them before the loops go away.
  disk_pool_.reset();
  commit_pool_.reset();
  loops_.clear();
  handlers_.clear();
}

engine::ServerStats Server::GetServerStats() const {
  engine::ServerStats s;
  s.max_connections = config_.server.max_connections;
  s.threads = config_.server.threads;
  s.limit_maxbytes = config_.storage.block_cache_size;
  for (const auto& loop : loops_) {
    const io::LoopStats& l = loop->stats();
    s.curr_connections += l.curr_connections.load(std::memory_order_relaxed);
    s.total_connections += l.total_connections.load(std::memory_order_relaxed);
    s.rejected_connections += l.rejected_connections.load(std::memory_order_relaxed);
    s.bytes_read += l.bytes_read.load(std::memory_order_relaxed);
    s.bytes_written += l.bytes_written.load(std::memory_order_relaxed);
  }
  return s;
}

absl::StatusOr<std::string> Server::Backup() {
  std::lock_guard lock(backup_mu_);
  std::string root =
      config_.backup_dir.empty() ? config_.storage.db_path + ".backups" : config_.backup_dir;
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrFormat("backup_dir %s: cannot create: %s", root, ec.message()));
  }
  char stamp[32];
  time_t now = time(nullptr);
  tm utc;
  gmtime_r(&now, &utc);
  strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  std::string dir = root + "/petracache-" + stamp;
  for (int n = 2; std::filesystem::exists(dir); ++n) {
    dir = root + "/petracache-" + stamp + "-" + std::to_string(n);
  }
  absl::Status s = store_->Checkpoint(dir);
  if (!s.ok()) return s;
  PC_LOG(kInfo, "backup: checkpoint written to %s", dir);
  return dir;
}

bool Server::LoopsAlive(int timeout_ms) {
  auto done = std::make_shared<std::atomic<size_t>>(0);
  for (auto& loop : loops_) loop->Post([done] { done->fetch_add(1); });
  for (int waited = 0; waited < timeout_ms; waited += 5) {
    if (done->load() == loops_.size()) return true;
    usleep(5000);
  }
  return done->load() == loops_.size();
}

void Server::RequestShutdown() { OnSignal(0); }

void Server::Run() {
  g_wake_fd = eventfd(0, EFD_CLOEXEC);
  struct sigaction sa {};
  sa.sa_handler = &OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::vector<std::thread> threads;
  for (size_t i = 0; i < loops_.size(); ++i) {
    threads.emplace_back([loop = loops_[i].get()] { loop->Run(); });
    std::string name = absl::StrFormat("pc-worker%d", i);
    pthread_setname_np(threads.back().native_handle(), name.c_str());
  }
  ready_.store(true, std::memory_order_release);
  PC_LOG(kInfo, "ready");

  uint64_t value = 0;
  while (read(g_wake_fd, &value, sizeof(value)) < 0 && errno == EINTR) {
  }
  ready_.store(false, std::memory_order_release);
  PC_LOG(kInfo, "shutting down: no longer accepting");
  for (auto& loop : loops_) loop->StopAccepting();
  // Requests already on the disk pool finish and post their replies before loops flush.
  disk_pool_.reset();
  for (auto& loop : loops_) loop->Shutdown();
  for (auto& t : threads) t.join();
  commit_pool_.reset();
  PC_LOG(kInfo, "connections closed; closing the database");
  admin_.reset();
  engine_.reset();
  hot_tier_.reset();
  store_.reset();
  PC_LOG(kInfo, "shutdown complete");
}

}  // namespace petracache::server
