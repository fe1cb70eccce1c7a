// Config: the server's whole configuration. Loads an INI file (inih), applies PETRACACHE_*
// environment overrides on top, and maps every key onto the owning component's Options.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/rocksdb_store.h"

namespace petracache::server {

// kIoUringBasic: io_uring restricted to what Linux 5.10 offers (single-shot accept and recv,
// plain setup flags); for old kernels and for testing the fallback path.
enum class IoBackendChoice { kAuto, kIoUring, kIoUringBasic, kEpoll };

struct ServerOptions {
  std::string listen_addr = "127.0.0.1:11211";
  uint64_t max_connections = 10000;
  uint64_t threads = 0;  // 0 = one worker per online CPU
  uint64_t read_buffer_size = 16 * 1024;
  // Per-connection unsent reply bytes above which the server stops reading that connection.
  uint64_t write_buffer_size = 4 * 1024 * 1024;
  IoBackendChoice io_backend = IoBackendChoice::kAuto;
  uint64_t idle_timeout = 0;  // seconds; 0 = never
  bool enable_shutdown = false;
  bool disable_flush_all = false;
  std::string user;                // when started as root, drop privileges to this user
  uint64_t disk_read_threads = 4;  // blocking pool serving reads that miss the block cache
  // Added to the disk pool threads' nice value (0-19). They share cores with the event loops:
  // a lower priority lets a loop answer what is in memory before a pool thread's next read.
  int disk_read_nice = 10;
  // Back the allocator's memory (hot tier, memtables, block cache) with transparent huge
  // pages where the kernel offers them (mimalloc's large OS pages). Off by default: memory
  // is then committed eagerly and not returned, so buffer-heavy load keeps a higher RSS.
  bool huge_pages = false;
};

struct MetricsOptions {
  bool enabled = true;
  std::string listen_addr = "127.0.0.1:9090";
};

struct Config {
  ServerOptions server;
  storage::RocksDbStore::Options storage;
  uint64_t item_size_max = 1024 * 1024;         // [storage] item_size_max
  uint64_t hot_cache_size = 256 * 1024 * 1024;  // [storage] hot_cache_size; 0 = no hot tier
  std::string backup_dir;                       // [storage] backup_dir; "" = <db_path>.backups
  MetricsOptions metrics;
  std::string log_level = "info";
  std::string config_file;  // "" = embedded defaults

  // Every key with its effective value, for `stats settings` and the startup log.
  std::vector<std::pair<std::string, std::string>> Describe() const;
};

// Parses INI text (as from a file named `origin`) onto *config. Unknown sections or keys and
// unparsable values are errors naming the key and line.
[[nodiscard]] absl::Status ApplyIni(std::string_view text, std::string_view origin, Config* config);
// Applies PETRACACHE_* variables from `env` (NAME -> value): the documented short names
// (PETRACACHE_LISTEN_ADDR, PETRACACHE_MAX_CONNECTIONS, PETRACACHE_DB_PATH,
// PETRACACHE_METRICS_ADDR, PETRACACHE_METRICS_ENABLED, PETRACACHE_LOG_LEVEL) and
// PETRACACHE_<SECTION>_<KEY> for every key. Unknown PETRACACHE_* names are logged and
// ignored (other tools share the prefix).
[[nodiscard]] absl::Status ApplyEnvironment(const std::map<std::string, std::string>& env,
                                            Config* config);
// Reads the process environment's PETRACACHE_* variables.
std::map<std::string, std::string> ProcessEnvironment();
// Loads `path` (may be empty: defaults only), then the environment.
[[nodiscard]] absl::StatusOr<Config> LoadConfig(const std::string& path,
                                                const std::map<std::string, std::string>& env);

// "64MiB", "1g", "4096" -> bytes. Suffixes k, m, g, t with optional "b"/"ib", any case.
[[nodiscard]] bool ParseSize(std::string_view text, uint64_t* out);
[[nodiscard]] bool ParseBool(std::string_view text, bool* out);

// Every "section.key" the loader knows, in documentation order.
std::vector<std::string> KnownKeys();

}  // namespace petracache::server
