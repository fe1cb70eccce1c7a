// Tests for server/admin: the Prometheus rendering and the HTTP endpoints.
#include "server/admin.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>

namespace petracache::server {
namespace {

TEST(AdminTest, RendersCountersHistogramsAndStorage) {
  engine::EngineTotals t;
  t.get_hits = 7;
  t.get_misses = 3;
  t.protocol_errors = 2;
  t.latency_buckets[static_cast<size_t>(engine::CommandKind::kGet)][0] = 4;
  t.latency_buckets[static_cast<size_t>(engine::CommandKind::kGet)][3] = 6;
  t.latency_sum_nanos[static_cast<size_t>(engine::CommandKind::kGet)] = 50'000;
  engine::ServerStats s;
  s.curr_connections = 5;
  storage::StoreStats store;
  store.compaction_dropped_expired = 1;
  store.compaction_dropped_flushed = 2;
  store.approximate_items = 42;
  store.hot_cache_hits = 9;
  std::string text =
      RenderMetrics(t, s, store, {{"block_cache_usage", 100}, {"stall_micros", 2500000}});
  for (std::string_view line : {
           "petracache_commands_total{command=\"get\"} 10\n",
           "petracache_command_hits_total{command=\"get\"} 7\n",
           "petracache_command_misses_total{command=\"get\"} 3\n",
           "petracache_protocol_errors_total 2\n",
           "petracache_command_duration_seconds_bucket{command=\"get\",le=\"1e-06\"} 4\n",
           "petracache_command_duration_seconds_bucket{command=\"get\",le=\"1e-05\"} 10\n",
           "petracache_command_duration_seconds_bucket{command=\"get\",le=\"+Inf\"} 10\n",
           "petracache_command_duration_seconds_count{command=\"get\"} 10\n",
           "petracache_command_duration_seconds_sum{command=\"get\"} 0.000050000\n",
           "petracache_connections 5\n",
           "petracache_items 42\n",
           "petracache_compaction_dropped_items_total{reason=\"flushed\"} 2\n",
           "petracache_rocksdb_block_cache_usage_bytes 100\n",
           "petracache_rocksdb_write_stall_seconds_total 2.500000\n",
           "petracache_hot_cache_lookups_total{result=\"hit\"} 9\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line;
  }
}

TEST(AdminTest, EndpointsAnswer) {
  std::atomic<bool> ready{false};
  AdminSources sources;
  sources.ready = [&] { return ready.load(); };
  sources.loops_alive = [](int) { return true; };
  sources.engine_totals = [] { return engine::EngineTotals{}; };
  sources.server_stats = [] { return engine::ServerStats{}; };
  sources.storage_properties = [] { return std::vector<std::pair<std::string, uint64_t>>{}; };
  sources.store_stats = [] { return storage::StoreStats{}; };
  auto admin = AdminServer::Start("127.0.0.1:0", sources);
  ASSERT_TRUE(admin.ok()) << admin.status();
  httplib::Client client("127.0.0.1", (*admin)->port());
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(5, 0);
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto not_ready = client.Get("/ready");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->status, 503);
  ready = true;
  auto is_ready = client.Get("/ready");
  ASSERT_TRUE(is_ready);
  EXPECT_EQ(is_ready->status, 200);
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("# TYPE petracache_commands_total counter"), std::string::npos);
}

TEST(AdminTest, BadAddressIsAClearError) {
  auto admin = AdminServer::Start("nonsense", AdminSources{});
  ASSERT_FALSE(admin.ok());
  EXPECT_NE(admin.status().message().find("[metrics] listen_addr"), std::string::npos);
}

}  // namespace
}  // namespace petracache::server
