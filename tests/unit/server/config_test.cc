// Tests for server/config: INI mapping, environment overrides, errors, and the sample file.
#include "server/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

namespace petracache::server {
namespace {

std::string Setting(const Config& c, const std::string& key) {
  for (const auto& [k, v] : c.Describe()) {
    if (k == key) return v;
  }
  return "<missing>";
}

TEST(ConfigTest, DefaultsAreTheDocumentedOnes) {
  absl::StatusOr<Config> c = LoadConfig("", {});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->server.listen_addr, "127.0.0.1:11211");
  EXPECT_EQ(c->server.max_connections, 10000u);
  EXPECT_EQ(c->storage.db_path, "./data/rocksdb");
  EXPECT_EQ(c->storage.block_cache_size, uint64_t{1} << 30);
  EXPECT_EQ(c->storage.durability, storage::Durability::kWal);
  EXPECT_EQ(c->item_size_max, 1024u * 1024u);
  EXPECT_EQ(c->server.disk_read_threads, 4u);
  EXPECT_EQ(c->server.disk_read_nice, 10);
  EXPECT_TRUE(c->storage.hashed_memtable);
  EXPECT_TRUE(c->storage.inplace_update);
  EXPECT_TRUE(c->metrics.enabled);
  EXPECT_EQ(c->metrics.listen_addr, "127.0.0.1:9090");
}

TEST(ConfigTest, IniMapsOntoOptions) {
  Config c;
  ASSERT_TRUE(ApplyIni("[server]\nlisten_addr = [::1]:12000\nthreads = 3\nio_backend = epoll\n"
                       "[storage]\ndb_path = /tmp/x\nblock_cache_size = 64MiB\n"
                       "durability = sync\nitem_size_max = 2m\nhashed_memtable = false\n"
                       "[metrics]\nenabled = no\n",
                       "test.ini", &c)
                  .ok());
  EXPECT_EQ(c.server.listen_addr, "[::1]:12000");
  EXPECT_EQ(c.server.threads, 3u);
  EXPECT_EQ(c.server.io_backend, IoBackendChoice::kEpoll);
  EXPECT_EQ(c.storage.db_path, "/tmp/x");
  EXPECT_EQ(c.storage.block_cache_size, 64u << 20);
  EXPECT_EQ(c.storage.durability, storage::Durability::kSync);
  EXPECT_EQ(c.item_size_max, 2u << 20);
  EXPECT_FALSE(c.storage.hashed_memtable);
  EXPECT_FALSE(c.metrics.enabled);
  EXPECT_EQ(Setting(c, "storage.durability"), "sync");
}

TEST(ConfigTest, ErrorsNameTheKeyAndLine) {
  Config c;
  absl::Status s = ApplyIni("[server]\n\nmax_conections = 5\n", "a.ini", &c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("a.ini:3"), std::string::npos) << s;
  EXPECT_NE(s.message().find("max_conections"), std::string::npos) << s;
  s = ApplyIni("[storage]\ndurability = maybe\n", "b.ini", &c);
  EXPECT_NE(s.message().find("durability"), std::string::npos) << s;
  EXPECT_NE(s.message().find("none, wal or sync"), std::string::npos) << s;
  s = ApplyIni("[bogus]\nx = 1\n", "c.ini", &c);
  EXPECT_NE(s.message().find("unknown section"), std::string::npos) << s;
  s = ApplyIni("[server]\nmax_connections = -1\n", "d.ini", &c);
  EXPECT_FALSE(s.ok());
  s = ApplyIni("[server]\nthis is not ini\n", "e.ini", &c);
  EXPECT_FALSE(s.ok());
  s = ApplyIni("[server]\ndisk_read_nice = 20\n", "f.ini", &c);
  EXPECT_NE(s.message().find("an integer from 0 to 19"), std::string::npos) << s;
  EXPECT_TRUE(ApplyIni("[server]\ndisk_read_nice = 19\n", "g.ini", &c).ok());
  EXPECT_EQ(c.server.disk_read_nice, 19);
}

TEST(ConfigTest, EnvironmentBeatsTheFile) {
  Config c;
  ASSERT_TRUE(
      ApplyIni("[server]\nlisten_addr = 127.0.0.1:1\n[storage]\ndb_path = /a\n", "f", &c).ok());
  ASSERT_TRUE(ApplyEnvironment({{"PETRACACHE_LISTEN_ADDR", "127.0.0.1:2"},
                                {"PETRACACHE_DB_PATH", "/b"},
                                {"PETRACACHE_METRICS_ENABLED", "false"},
                                {"PETRACACHE_METRICS_ADDR", "127.0.0.1:3"},
                                {"PETRACACHE_MAX_CONNECTIONS", "7"},
                                {"PETRACACHE_STORAGE_DURABILITY", "none"}},
                               &c)
                  .ok());
  EXPECT_EQ(c.server.listen_addr, "127.0.0.1:2");
  EXPECT_EQ(c.storage.db_path, "/b");
  EXPECT_FALSE(c.metrics.enabled);
  EXPECT_EQ(c.metrics.listen_addr, "127.0.0.1:3");
  EXPECT_EQ(c.server.max_connections, 7u);
  EXPECT_EQ(c.storage.durability, storage::Durability::kNone);
  // Unknown names are ignored; bad values of known ones are errors.
  EXPECT_TRUE(ApplyEnvironment({{"PETRACACHE_BIN", "/usr/bin/x"}}, &c).ok());
  absl::Status s = ApplyEnvironment({{"PETRACACHE_MAX_CONNECTIONS", "many"}}, &c);
  EXPECT_NE(s.message().find("PETRACACHE_MAX_CONNECTIONS"), std::string::npos) << s;
}

TEST(ConfigTest, ListenAddressesAreValidated) {
  for (const char* good : {"127.0.0.1:11211", "[::1]:0", "localhost", "[::1]", "0.0.0.0:65535"}) {
    Config c;
    EXPECT_TRUE(ApplyIni(std::string("[server]\nlisten_addr = ") + good + "\n", "g", &c).ok())
        << good;
  }
  for (const char* bad :
       {"127.0.0.1:99999", "127.0.0.1:", ":11211", "[::1", "::1:80", "a b:1", "127.0.0.1:http"}) {
    Config c;
    absl::Status s = ApplyIni(std::string("[metrics]\nlisten_addr = ") + bad + "\n", "b", &c);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.message().find("b:2"), std::string::npos) << s;
  }
}

TEST(ConfigTest, ConfigPathMustBeARegularFile) {
  absl::StatusOr<Config> c = LoadConfig("/tmp", {});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("/tmp"), std::string::npos);
  EXPECT_FALSE(LoadConfig("/nonexistent/petracache.ini", {}).ok());
}

TEST(ConfigTest, Sizes) {
  uint64_t v;
  EXPECT_TRUE(ParseSize("4096", &v));
  EXPECT_EQ(v, 4096u);
  EXPECT_TRUE(ParseSize("64MiB", &v));
  EXPECT_EQ(v, 64u << 20);
  EXPECT_TRUE(ParseSize("1g", &v));
  EXPECT_EQ(v, 1u << 30);
  EXPECT_TRUE(ParseSize("16KB", &v));
  EXPECT_EQ(v, 16u << 10);
  EXPECT_FALSE(ParseSize("", &v));
  EXPECT_FALSE(ParseSize("12q", &v));
  EXPECT_FALSE(ParseSize("-1", &v));
  EXPECT_FALSE(ParseSize("99999999999999999999", &v));
}

// The shipped sample must parse and mention every key the loader knows.
TEST(ConfigTest, SampleFileDocumentsEveryKey) {
  std::ifstream in(PETRACACHE_SOURCE_ROOT "/petracache.ini");
  ASSERT_TRUE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  Config c;
  ASSERT_TRUE(ApplyIni(text.str(), "petracache.ini", &c).ok());
  Config defaults;
  EXPECT_EQ(c.Describe(), defaults.Describe()) << "the sample shows non-default values";
  for (const std::string& key : KnownKeys()) {
    std::string name = key.substr(key.find('.') + 1);
    EXPECT_NE(text.str().find("\n" + name + " ="), std::string::npos) << key;
  }
}

}  // namespace
}  // namespace petracache::server
