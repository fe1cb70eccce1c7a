// Config loading: one table maps each (section, key) to a parser into Config and a printer
// back out, so the INI file, the environment and `stats settings` can never disagree.
#include "server/config.h"

#include <ini.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/logging.h"

extern char** environ;

namespace petracache::server {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool ParseUint(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

std::string BoolText(bool b) { return b ? "true" : "false"; }

// "host:port", "[v6]:port" or "host"; port 0-65535.
bool ValidAddress(std::string_view text) {
  std::string_view host = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    host = text.substr(1, close - 1);
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
      if (port.empty()) return false;
    }
  } else if (size_t colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty() || host.find(':') != std::string_view::npos) return false;
  }
  if (host.empty() || host.find(' ') != std::string_view::npos) return false;
  if (port.empty()) return true;
  uint64_t n;
  return ParseUint(port, &n) && n <= 65535;
}

std::string BackendName(IoBackendChoice b) {
  switch (b) {
    case IoBackendChoice::kAuto:
      return "auto";
    case IoBackendChoice::kIoUring:
      return "io_uring";
    case IoBackendChoice::kIoUringBasic:
      return "io_uring_basic";
    case IoBackendChoice::kEpoll:
      return "epoll";
  }
  return "auto";
}

// One configuration key.
struct Key {
  std::string_view section;
  std::string_view name;
  std::string_view alias_env;  // documented short environment name, or ""
  // Parses text into config; false when the text is not `expected`.
  std::function<bool(std::string_view, Config*)> set;
  std::string_view expected;
  std::function<std::string(const Config&)> get;
};

template <typename Getter>
Key Size(std::string_view section, std::string_view name, std::string_view alias, Getter field) {
  return Key{section,
             name,
             alias,
             [field](std::string_view v, Config* c) { return ParseSize(v, &field(*c)); },
             "a size in bytes (e.g. 65536, 64MiB, 1GiB)",
             [field](const Config& c) { return absl::StrCat(field(c)); }};
}

template <typename Getter>
Key Count(std::string_view section, std::string_view name, std::string_view alias, Getter field) {
  return Key{section,
             name,
             alias,
             [field](std::string_view v, Config* c) { return ParseUint(v, &field(*c)); },
             "a non-negative integer",
             [field](const Config& c) { return absl::StrCat(field(c)); }};
}

template <typename Getter>
Key Flag(std::string_view section, std::string_view name, std::string_view alias, Getter field) {
  return Key{
      section,         name,
      alias,           [field](std::string_view v, Config* c) { return ParseBool(v, &field(*c)); },
      "true or false", [field](const Config& c) { return BoolText(field(c)); }};
}

template <typename Getter>
Key Address(std::string_view section, std::string_view name, std::string_view alias, Getter field) {
  return Key{section,
             name,
             alias,
             [field](std::string_view v, Config* c) {
               if (!ValidAddress(v)) return false;
               field(*c) = std::string(v);
               return true;
             },
             "host:port, [ipv6]:port or host, with a port from 0 to 65535",
             [field](const Config& c) { return std::string(field(c)); }};
}

template <typename Getter>
Key Text(std::string_view section, std::string_view name, std::string_view alias, Getter field) {
  return Key{section,
             name,
             alias,
             [field](std::string_view v, Config* c) {
               field(*c) = std::string(v);
               return true;
             },
             "text",
             [field](const Config& c) { return std::string(field(c)); }};
}

const std::vector<Key>& Keys() {
  static const std::vector<Key> keys = [] {
    std::vector<Key> k;
    // [server]
    k.push_back(Address(
        "server", "listen_addr", "PETRACACHE_LISTEN_ADDR",
        [](auto& c) -> auto& { return c.server.listen_addr; }));
    k.push_back(Count(
        "server", "max_connections", "PETRACACHE_MAX_CONNECTIONS",
        [](auto& c) -> auto& { return c.server.max_connections; }));
    k.push_back(Count(
        "server", "threads", "", [](auto& c) -> auto& { return c.server.threads; }));
    k.push_back(Size(
        "server", "read_buffer_size", "",
        [](auto& c) -> auto& { return c.server.read_buffer_size; }));
    k.push_back(Size(
        "server", "write_buffer_size", "",
        [](auto& c) -> auto& { return c.server.write_buffer_size; }));
    k.push_back(Key{"server", "io_backend", "",
                    [](std::string_view v, Config* c) {
                      std::string s = Lower(v);
                      if (s == "auto") {
                        c->server.io_backend = IoBackendChoice::kAuto;
                      } else if (s == "io_uring" || s == "uring") {
                        c->server.io_backend = IoBackendChoice::kIoUring;
                      } else if (s == "io_uring_basic") {
                        c->server.io_backend = IoBackendChoice::kIoUringBasic;
                      } else if (s == "epoll") {
                        c->server.io_backend = IoBackendChoice::kEpoll;
                      } else {
                        return false;
                      }
                      return true;
                    },
                    "auto, io_uring, io_uring_basic or epoll",
                    [](const Config& c) { return BackendName(c.server.io_backend); }});
    k.push_back(Count(
        "server", "idle_timeout", "", [](auto& c) -> auto& { return c.server.idle_timeout; }));
    k.push_back(Flag(
        "server", "enable_shutdown", "",
        [](auto& c) -> auto& { return c.server.enable_shutdown; }));
    k.push_back(Flag(
        "server", "disable_flush_all", "",
        [](auto& c) -> auto& { return c.server.disable_flush_all; }));
    k.push_back(Text(
        "server", "user", "", [](auto& c) -> auto& { return c.server.user; }));
    k.push_back(Count(
        "server", "disk_read_threads", "",
        [](auto& c) -> auto& { return c.server.disk_read_threads; }));
    k.push_back(Key{"server", "disk_read_nice", "",
                    [](std::string_view v, Config* c) {
                      uint64_t n;
                      if (!ParseUint(v, &n) || n > 19) return false;
                      c->server.disk_read_nice = static_cast<int>(n);
                      return true;
                    },
                    "an integer from 0 to 19",
                    [](const Config& c) { return absl::StrCat(c.server.disk_read_nice); }});
    k.push_back(Flag(
        "server", "huge_pages", "", [](auto& c) -> auto& { return c.server.huge_pages; }));
    k.push_back(Text(
        "server", "log_level", "PETRACACHE_LOG_LEVEL",
        [](auto& c) -> auto& { return c.log_level; }));
    // [storage]
    k.push_back(Text(
        "storage", "db_path", "PETRACACHE_DB_PATH",
        [](auto& c) -> auto& { return c.storage.db_path; }));
    k.push_back(Size(
        "storage", "block_cache_size", "",
        [](auto& c) -> auto& { return c.storage.block_cache_size; }));
    k.push_back(Size(
        "storage", "write_buffer_size", "",
        [](auto& c) -> auto& { return c.storage.write_buffer_size; }));
    k.push_back(
        Key{"storage", "max_write_buffer_number", "",
            [](std::string_view v, Config* c) {
              uint64_t n;
              if (!ParseUint(v, &n) || n < 1 || n > 64) return false;
              c->storage.max_write_buffer_number = static_cast<int>(n);
              return true;
            },
            "an integer from 1 to 64",
            [](const Config& c) { return absl::StrCat(c.storage.max_write_buffer_number); }});
    k.push_back(Size(
        "storage", "target_file_size_base", "",
        [](auto& c) -> auto& { return c.storage.target_file_size_base; }));
    k.push_back(Key{"storage", "max_background_jobs", "",
                    [](std::string_view v, Config* c) {
                      uint64_t n;
                      if (!ParseUint(v, &n) || n < 1 || n > 256) return false;
                      c->storage.max_background_jobs = static_cast<int>(n);
                      return true;
                    },
                    "an integer from 1 to 256",
                    [](const Config& c) { return absl::StrCat(c.storage.max_background_jobs); }});
    k.push_back(Flag(
        "storage", "low_priority_compaction", "",
        [](auto& c) -> auto& { return c.storage.low_priority_compaction; }));
    k.push_back(Flag(
        "storage", "hashed_memtable", "",
        [](auto& c) -> auto& { return c.storage.hashed_memtable; }));
    k.push_back(Flag(
        "storage", "inplace_update", "",
        [](auto& c) -> auto& { return c.storage.inplace_update; }));
    k.push_back(Flag(
        "storage", "enable_compression", "",
        [](auto& c) -> auto& { return c.storage.enable_compression; }));
    k.push_back(Flag(
        "storage", "enable_ttl_compaction", "",
        [](auto& c) -> auto& { return c.storage.enable_ttl_compaction; }));
    k.push_back(Key{"storage", "durability", "",
                    [](std::string_view v, Config* c) {
                      return storage::ParseDurability(Lower(v), &c->storage.durability);
                    },
                    "none, wal or sync",
                    [](const Config& c) {
                      return std::string(storage::DurabilityName(c.storage.durability));
                    }});
    k.push_back(Count(
        "storage", "write_stall_timeout_ms", "",
        [](auto& c) -> auto& { return c.storage.write_stall_timeout_ms; }));
    k.push_back(Key{"storage", "item_size_max", "",
                    [](std::string_view v, Config* c) {
                      uint64_t n;
                      // memcached's -I bounds: 1 KiB to 1 GiB.
                      if (!ParseSize(v, &n) || n < 1024 || n > (uint64_t{1} << 30)) return false;
                      c->item_size_max = n;
                      return true;
                    },
                    "a size from 1KiB to 1GiB",
                    [](const Config& c) { return absl::StrCat(c.item_size_max); }});
    k.push_back(Size(
        "storage", "hot_cache_size", "", [](auto& c) -> auto& { return c.hot_cache_size; }));
    k.push_back(Text(
        "storage", "backup_dir", "", [](auto& c) -> auto& { return c.backup_dir; }));
    // [metrics]
    k.push_back(Flag(
        "metrics", "enabled", "PETRACACHE_METRICS_ENABLED",
        [](auto& c) -> auto& { return c.metrics.enabled; }));
    k.push_back(Address(
        "metrics", "listen_addr", "PETRACACHE_METRICS_ADDR",
        [](auto& c) -> auto& { return c.metrics.listen_addr; }));
    return k;
  }();
  return keys;
}

std::string Upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string GenericEnvName(const Key& key) {
  return "PETRACACHE_" + Upper(key.section) + "_" + Upper(key.name);
}

absl::Status SetKey(const Key& key, std::string_view value, std::string_view where,
                    Config* config) {
  if (!key.set(value, config)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: [%s] %s = \"%s\": expected %s", std::string(where), std::string(key.section),
        std::string(key.name), std::string(value), std::string(key.expected)));
  }
  return absl::OkStatus();
}

struct IniState {
  Config* config;
  std::string origin;
  absl::Status status;
  std::string_view text;  // what is left to read
  int line = 0;           // the line inih is handling now
};

// inih's reader callback (an fgets): hands out one line at a time, which also tells us the
// line number, since Debian's inih is built without INI_HANDLER_LINENO.
char* ReadIniLine(char* buf, int size, void* user) {
  auto* state = static_cast<IniState*>(user);
  if (state->text.empty() || size <= 1) return nullptr;
  size_t n = state->text.find('\n');
  n = n == std::string_view::npos ? state->text.size() : n + 1;
  n = std::min(n, static_cast<size_t>(size - 1));
  state->text.copy(buf, n);
  buf[n] = '\0';
  state->text.remove_prefix(n);
  if (n > 0 && buf[n - 1] == '\n') ++state->line;
  return buf;
}

int OnIniEntry(void* user, const char* section, const char* name, const char* value) {
  auto* state = static_cast<IniState*>(user);
  if (!state->status.ok()) return 0;
  std::string where = absl::StrFormat("%s:%d", state->origin, state->line);
  std::string s = Lower(section);
  std::string n = Lower(name);
  for (const Key& key : Keys()) {
    if (key.section == s && key.name == n) {
      state->status = SetKey(key, value, where, state->config);
      return state->status.ok() ? 1 : 0;
    }
  }
  bool known_section = false;
  for (const Key& key : Keys()) known_section |= key.section == s;
  state->status = absl::InvalidArgumentError(
      known_section
          ? absl::StrFormat("%s: unknown key \"%s\" in section [%s]", where, name, s)
          : absl::StrFormat("%s: unknown section [%s] (key \"%s\")", where, section, name));
  return 0;
}

}  // namespace

bool ParseSize(std::string_view text, uint64_t* out) {
  std::string s = Lower(text);
  size_t digits = 0;
  while (digits < s.size() && std::isdigit(static_cast<unsigned char>(s[digits]))) ++digits;
  uint64_t base;
  if (!ParseUint(std::string_view(s).substr(0, digits), &base)) return false;
  std::string_view suffix = std::string_view(s).substr(digits);
  while (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
  int shift = 0;
  if (!suffix.empty()) {
    switch (suffix.front()) {
      case 'k':
        shift = 10;
        break;
      case 'm':
        shift = 20;
        break;
      case 'g':
        shift = 30;
        break;
      case 't':
        shift = 40;
        break;
      case 'b':
        shift = 0;
        break;
      default:
        return false;
    }
    if (suffix.front() != 'b') suffix.remove_prefix(1);
    if (suffix != "" && suffix != "b" && suffix != "ib") return false;
  }
  if (shift > 0 && base > (UINT64_MAX >> shift)) return false;
  *out = base << shift;
  return true;
}

bool ParseBool(std::string_view text, bool* out) {
  std::string s = Lower(text);
  if (s == "true" || s == "yes" || s == "on" || s == "1") {
    *out = true;
  } else if (s == "false" || s == "no" || s == "off" || s == "0") {
    *out = false;
  } else {
    return false;
  }
  return true;
}

absl::Status ApplyIni(std::string_view text, std::string_view origin, Config* config) {
  IniState state{config, std::string(origin), absl::OkStatus(), text, 0};
  int rc = ini_parse_stream(&ReadIniLine, &state, &OnIniEntry, &state);
  if (!state.status.ok()) return state.status;
  if (rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s:%d: syntax error", std::string(origin), rc));
  }
  return absl::OkStatus();
}

absl::Status ApplyEnvironment(const std::map<std::string, std::string>& env, Config* config) {
  for (const auto& [name, value] : env) {
    if (name.rfind("PETRACACHE_", 0) != 0) continue;
    const Key* found = nullptr;
    for (const Key& key : Keys()) {
      if (name == key.alias_env || name == GenericEnvName(key)) found = &key;
    }
    if (found == nullptr) {
      // Tooling shares the prefix (PETRACACHE_BIN in tests, ...): warn, don't refuse to start.
      PC_LOG(kWarning, "environment: ignoring unknown variable %s (see docs/configuration.md)",
             name);
      continue;
    }
    absl::Status s = SetKey(*found, value, "environment " + name, config);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

std::map<std::string, std::string> ProcessEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    if (entry.rfind("PETRACACHE_", 0) != 0) continue;
    size_t eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}

absl::StatusOr<Config> LoadConfig(const std::string& path,
                                  const std::map<std::string, std::string>& env) {
  Config config;
  if (!path.empty()) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("config file %s: not a regular file", path));
    }
    std::ifstream in(path);
    if (!in) {
      return absl::NotFoundError(absl::StrFormat("config file %s: cannot be read", path));
    }
    std::stringstream text;
    text << in.rdbuf();
    absl::Status s = ApplyIni(text.str(), path, &config);
    if (!s.ok()) return s;
    config.config_file = path;
  }
  absl::Status s = ApplyEnvironment(env, &config);
  if (!s.ok()) return s;
  LogLevel level;
  if (!ParseLogLevel(config.log_level, &level)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "log_level \"%s\": expected debug, info, warning or error", config.log_level));
  }
  return config;
}

std::vector<std::pair<std::string, std::string>> Config::Describe() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Key& key : Keys()) {
    out.emplace_back(std::string(key.section) + "." + std::string(key.name), key.get(*this));
  }
  return out;
}

std::vector<std::string> KnownKeys() {
  std::vector<std::string> out;
  for (const Key& key : Keys()) {
    out.push_back(std::string(key.section) + "." + std::string(key.name));
  }
  return out;
}

}  // namespace petracache::server
