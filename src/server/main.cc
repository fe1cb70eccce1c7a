// petracache: command-line entry point.
#include <cstdio>
#include <cstring>
#include <string>

#include "common/logging.h"
#include "petracache_config.h"
#include "server/admin.h"
#include "server/config.h"
#include "server/server.h"

#if PETRACACHE_HAVE_MIMALLOC
#include <mimalloc.h>
#endif

namespace {

constexpr char kUsage[] =
    "Usage: petracache [--config FILE | FILE] [--log-level LEVEL]\n"
    "       petracache --backup [--config FILE]\n"
    "       petracache --help | --version\n"
    "\n"
    "A memcached-compatible cache server that keeps every item in RocksDB.\n"
    "Without a config file it uses the embedded defaults: listen on 127.0.0.1:11211,\n"
    "data under ./data/rocksdb. See petracache.ini for every key and its default.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE    INI configuration file\n"
    "  -l, --log-level LVL  debug, info, warning or error (also PETRACACHE_LOG_LEVEL)\n"
    "  -h, --help           this text\n"
    "  -V, --version        print the version\n"
    "      --backup         ask the running server (its [metrics] admin endpoint, from the\n"
    "                       config) for a consistent checkpoint; prints its directory\n"
    "\n"
    "Environment: PETRACACHE_LISTEN_ADDR, PETRACACHE_MAX_CONNECTIONS, PETRACACHE_DB_PATH,\n"
    "PETRACACHE_METRICS_ADDR, PETRACACHE_METRICS_ENABLED, PETRACACHE_LOG_LEVEL, and\n"
    "PETRACACHE_<SECTION>_<KEY> for any key; the environment overrides the file.\n";

}  // namespace

int main(int argc, char** argv) {
  using petracache::server::Config;
  std::string config_path;
  std::string log_level;
  bool backup = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "petracache: %s needs a value\n%s", name, kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "-V" || arg == "--version") {
      std::printf("petracache %s (memcached protocol %s)\n", PETRACACHE_VERSION,
                  PETRACACHE_MEMCACHED_COMPAT_VERSION);
      return 0;
    } else if (arg == "--backup") {
      backup = true;
    } else if (arg == "-c" || arg == "--config") {
      config_path = value("--config");
    } else if (arg.rfind("--config=", 0) == 0) {
      config_path = arg.substr(9);
    } else if (arg == "-l" || arg == "--log-level") {
      log_level = value("--log-level");
    } else if (arg.rfind("--log-level=", 0) == 0) {
      log_level = arg.substr(12);
    } else if (!arg.empty() && arg[0] != '-' && config_path.empty()) {
      config_path = arg;
    } else {
      std::fprintf(stderr, "petracache: unknown argument '%s'\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }

  auto env = petracache::server::ProcessEnvironment();
  if (!log_level.empty()) env["PETRACACHE_LOG_LEVEL"] = log_level;  // the flag wins
  absl::StatusOr<Config> config = petracache::server::LoadConfig(config_path, env);
  if (!config.ok()) {
    std::fprintf(stderr, "petracache: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  if (backup) {
    absl::StatusOr<std::string> dir =
        petracache::server::RequestBackup(config->metrics.listen_addr);
    if (!dir.ok()) {
      std::fprintf(stderr, "petracache: backup failed: %s\n",
                   std::string(dir.status().message()).c_str());
      return 1;
    }
    std::printf("%s\n", dir->c_str());
    return 0;
  }
  petracache::LogLevel level = petracache::LogLevel::kInfo;
  (void)petracache::ParseLogLevel(config->log_level, &level);
  petracache::SetLogLevel(level);

#if PETRACACHE_HAVE_MIMALLOC
  // Before the server allocates its big structures; what exists already stays as it is.
  mi_option_set_enabled(mi_option_large_os_pages, config->server.huge_pages);
#endif
  auto server = petracache::server::Server::Create(*config);
  if (!server.ok()) {
    std::fprintf(stderr, "petracache: %s\n", std::string(server.status().message()).c_str());
    return 1;
  }
  (*server)->Run();
  return 0;
}
