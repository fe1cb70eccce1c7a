// Admin HTTP server on cpp-httplib (its own thread pool), and the Prometheus renderer.
#include "server/admin.h"

#include <httplib.h>
#include <sys/socket.h>

#include <charconv>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "common/logging.h"

namespace petracache::server {
namespace {

void Family(std::string* out, std::string_view name, std::string_view type, std::string_view help) {
  absl::StrAppendFormat(out, "# HELP %s %s\n# TYPE %s %s\n", std::string(name), std::string(help),
                        std::string(name), std::string(type));
}

void Sample(std::string* out, std::string_view name, std::string_view labels, uint64_t value) {
  if (labels.empty()) {
    absl::StrAppendFormat(out, "%s %d\n", std::string(name), value);
  } else {
    absl::StrAppendFormat(out, "%s{%s} %d\n", std::string(name), std::string(labels), value);
  }
}

// A family with a single unlabeled sample.
void Metric(std::string* out, std::string_view name, std::string_view type, std::string_view help,
            uint64_t value) {
  Family(out, name, type, help);
  Sample(out, name, "", value);
}

struct Labeled {
  std::string label;
  uint64_t value;
};

// A family with one sample per value of one label; the samples stay contiguous, as the text
// format requires.
void LabeledFamily(std::string* out, std::string_view name, std::string_view type,
                   std::string_view help, std::string_view label_name,
                   const std::vector<Labeled>& samples) {
  Family(out, name, type, help);
  for (const Labeled& l : samples) {
    Sample(out, name, absl::StrFormat("%s=\"%s\"", std::string(label_name), l.label), l.value);
  }
}

std::string FormatBound(double seconds) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", seconds);
  return buf;
}

// Splits "host:port" / "[v6]:port" for httplib.
bool SplitHostPort(const std::string& addr, std::string* host, int* port) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return false;
  *host = addr.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  std::string_view digits = std::string_view(addr).substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *port);
  return ec == std::errc() && end == digits.data() + digits.size() && *port >= 0 && *port < 65536;
}

}  // namespace

std::string RenderMetrics(const engine::EngineTotals& t, const engine::ServerStats& s,
                          const storage::StoreStats& store,
                          const std::vector<std::pair<std::string, uint64_t>>& rocksdb) {
  using engine::CommandKind;
  std::string out;
  out.reserve(16 * 1024);

  std::vector<Labeled> commands;
  for (size_t k = 0; k < engine::kCommandKinds; ++k) {
    auto kind = static_cast<CommandKind>(k);
    commands.push_back({std::string(engine::CommandKindName(kind)), t.Commands(kind)});
  }
  LabeledFamily(&out, "petracache_commands_total", "counter",
                "Commands executed, by command family.", "command", commands);
  LabeledFamily(&out, "petracache_command_hits_total", "counter",
                "Commands that found their key (get counts keys).", "command",
                {{"get", t.get_hits},
                 {"delete", t.delete_hits},
                 {"incr", t.incr_hits},
                 {"decr", t.decr_hits},
                 {"touch", t.touch_hits},
                 {"cas", t.cas_hits}});
  LabeledFamily(&out, "petracache_command_misses_total", "counter",
                "Commands that did not find their key (get counts keys).", "command",
                {{"get", t.get_misses},
                 {"delete", t.delete_misses},
                 {"incr", t.incr_misses},
                 {"decr", t.decr_misses},
                 {"touch", t.touch_misses},
                 {"cas", t.cas_misses}});
  Metric(&out, "petracache_get_keys_total", "counter", "Keys looked up by get/gets/gat/gats.",
         t.cmd_get);
  Metric(&out, "petracache_cas_badval_total", "counter",
         "cas commands whose token no longer matched.", t.cas_badval);
  Metric(&out, "petracache_expired_on_read_total", "counter",
         "Reads that found an item past its exptime.", t.get_expired);
  Metric(&out, "petracache_flushed_on_read_total", "counter",
         "Reads that found an item invalidated by flush_all.", t.get_flushed);
  Metric(&out, "petracache_items_stored_total", "counter", "Items written by storage commands.",
         t.total_items);
  Metric(&out, "petracache_protocol_errors_total", "counter",
         "Requests answered with ERROR/CLIENT_ERROR/SERVER_ERROR by the protocol layer.",
         t.protocol_errors);
  Metric(&out, "petracache_storage_errors_total", "counter",
         "Storage calls that failed (replied SERVER_ERROR).", t.storage_errors);

  Family(&out, "petracache_command_duration_seconds", "histogram",
         "Time to execute a command in the engine, by command family.");
  for (size_t k = 0; k < engine::kCommandKinds; ++k) {
    std::string command(engine::CommandKindName(static_cast<CommandKind>(k)));
    uint64_t cumulative = 0;
    for (size_t b = 0; b < engine::kLatencyBuckets; ++b) {
      cumulative += t.latency_buckets[k][b];
      std::string le =
          b + 1 < engine::kLatencyBuckets ? FormatBound(engine::kLatencyBounds[b]) : "+Inf";
      Sample(&out, "petracache_command_duration_seconds_bucket",
             absl::StrFormat("command=\"%s\",le=\"%s\"", command, le), cumulative);
    }
    absl::StrAppendFormat(&out, "petracache_command_duration_seconds_sum{command=\"%s\"} %.9f\n",
                          command, static_cast<double>(t.latency_sum_nanos[k]) * 1e-9);
    Sample(&out, "petracache_command_duration_seconds_count",
           absl::StrFormat("command=\"%s\"", command), cumulative);
  }

  Metric(&out, "petracache_connections", "gauge", "Open client connections.", s.curr_connections);
  Metric(&out, "petracache_connections_total", "counter", "Client connections accepted.",
         s.total_connections);
  Metric(&out, "petracache_connections_rejected_total", "counter",
         "Connections refused over max_connections.", s.rejected_connections);
  Metric(&out, "petracache_read_bytes_total", "counter", "Bytes received from clients.",
         s.bytes_read);
  Metric(&out, "petracache_written_bytes_total", "counter", "Bytes sent to clients.",
         s.bytes_written);
  Metric(&out, "petracache_items", "gauge",
         "Estimated items on disk (RocksDB's estimate; includes not yet compacted dead items).",
         store.approximate_items);
  LabeledFamily(&out, "petracache_compaction_dropped_items_total", "counter",
                "Dead items the TTL compaction filter dropped since start.", "reason",
                {{"expired", store.compaction_dropped_expired},
                 {"flushed", store.compaction_dropped_flushed}});
  LabeledFamily(&out, "petracache_hot_cache_lookups_total", "counter",
                "Reads of the in-memory hot-item tier, by result.", "result",
                {{"hit", store.hot_cache_hits}, {"miss", store.hot_cache_misses}});
  Metric(&out, "petracache_hot_cache_bytes", "gauge", "Bytes held by the hot-item tier.",
         store.hot_cache_bytes);
  Metric(&out, "petracache_hot_cache_items", "gauge", "Items held by the hot-item tier.",
         store.hot_cache_items);
  Metric(&out, "petracache_hot_cache_evictions_total", "counter",
         "Items dropped from the hot tier for space (they stay on disk).",
         store.hot_cache_evictions);

  // RocksDB health: counters end in _total, sizes in _bytes.
  for (const auto& [name, value] : rocksdb) {
    std::string metric = "petracache_rocksdb_" + name;
    std::string type = "gauge";
    if (name == "block_cache_hits" || name == "block_cache_misses" ||
        name == "bloom_filter_useful" || name == "wal_syncs" || name == "background_errors" ||
        name == "group_commits" || name == "stall_rejections" || name == "inplace_updates") {
      metric += "_total";
      type = "counter";
    } else if (name == "stall_micros") {
      metric = "petracache_rocksdb_write_stall_seconds_total";
      type = "counter";
      absl::StrAppendFormat(&out, "# TYPE %s %s\n%s %.6f\n", metric, type, metric,
                            static_cast<double>(value) * 1e-6);
      continue;
    } else if (name.size() > 6 && name.compare(name.size() - 6, 6, "_bytes") == 0) {
    } else if (name.rfind("block_cache_", 0) == 0) {
      metric += "_bytes";
    }
    absl::StrAppendFormat(&out, "# TYPE %s %s\n", metric, type);
    Sample(&out, metric, "", value);
  }
  return out;
}

absl::StatusOr<std::string> RequestBackup(const std::string& admin_addr) {
  std::string host;
  int port = 0;
  if (!SplitHostPort(admin_addr, &host, &port) || port == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "[metrics] listen_addr \"%s\": need host:port to reach the server", admin_addr));
  }
  httplib::Client client(host, port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(600, 0);  // a checkpoint of a large database can take a while
  httplib::Result res = client.Post("/backup");
  if (!res) {
    return absl::UnavailableError(absl::StrFormat(
        "cannot reach petracache's admin endpoint at %s (is the server running with [metrics] "
        "enabled?)",
        admin_addr));
  }
  std::string body = res->body;
  while (!body.empty() && body.back() == '\n') body.pop_back();
  if (res->status != 200) return absl::InternalError(body);
  return body;
}

struct AdminServer::Impl {
  httplib::Server http;
  std::thread thread;
};

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminServer::~AdminServer() {
  impl_->http.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Start(const std::string& listen_addr,
                                                                AdminSources sources) {
  std::string host;
  int port = 0;
  if (!SplitHostPort(listen_addr, &host, &port)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "[metrics] listen_addr \"%s\": expected host:port or [ipv6]:port", listen_addr));
  }
  auto impl = std::make_unique<Impl>();
  httplib::Server& http = impl->http;
  http.set_read_timeout(5, 0);
  http.set_write_timeout(5, 0);
  http.set_keep_alive_timeout(5);
  // SO_REUSEADDR only. httplib's default adds SO_REUSEPORT, which lets the admin socket join
  // any same-user listener's group on that port (the memcached port itself, or another
  // instance's admin port) and silently take a share of its connections; without it, a port
  // something listens on is refused at bind.
  http.set_socket_options([](int fd) {
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  });

  http.Get("/health", [sources](const httplib::Request&, httplib::Response& res) {
    if (sources.loops_alive(2000)) {
      res.set_content("ok\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content("worker loop not responding\n", "text/plain");
    }
  });
  http.Get("/ready", [sources](const httplib::Request&, httplib::Response& res) {
    if (sources.ready()) {
      res.set_content("ready\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content("not ready\n", "text/plain");
    }
  });
  http.Get("/metrics", [sources](const httplib::Request&, httplib::Response& res) {
    res.set_content(RenderMetrics(sources.engine_totals(), sources.server_stats(),
                                  sources.store_stats(), sources.storage_properties()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });

  // POST only, so a crawler or a browser prefetch never writes a checkpoint.
  http.Post("/backup", [sources](const httplib::Request&, httplib::Response& res) {
    absl::StatusOr<std::string> dir = sources.backup();
    if (dir.ok()) {
      res.set_content(*dir + "\n", "text/plain");
    } else {
      res.status = 500;
      res.set_content(std::string(dir.status().message()) + "\n", "text/plain");
    }
  });

  int bound = port == 0 ? http.bind_to_any_port(host) : (http.bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    return absl::UnavailableError(
        absl::StrFormat("[metrics] listen_addr %s: cannot bind (address in use?)", listen_addr));
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->http.listen_after_bind(); });
  pthread_setname_np(impl->thread.native_handle(), "pc-admin");
  std::unique_ptr<AdminServer> server(new AdminServer(std::move(impl)));
  server->port_ = bound;
  PC_LOG(kInfo, "admin HTTP on %s (port %d): /health /ready /metrics", listen_addr, bound);
  return server;
}

}  // namespace petracache::server
