// RocksDbStore specifics: persistence across reopen, CAS ceiling, compaction filter, cache-only
// reads, durability modes, open errors.
#include "storage/rocksdb_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "common/clock.h"
#include "tests/unit/storage/test_util.h"

extern char** environ;

namespace petracache::storage {
namespace {

class RocksDbStoreTest : public ::testing::Test {
 protected:
  RocksDbStore::Options DefaultOptions() {
    RocksDbStore::Options options;
    options.db_path = dir_.path() + "/db";
    options.clock = &clock_;
    options.block_cache_size = 8 << 20;
    options.write_buffer_size = 4 << 20;
    options.max_background_jobs = 2;
    return options;
  }

  void Reopen(const RocksDbStore::Options& options) {
    store_.reset();
    auto store = RocksDbStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void Reopen() { Reopen(DefaultOptions()); }

  LookupStatus Lookup(std::string_view key, ItemHeader* header = nullptr,
                      std::string* value = nullptr, bool cache_only = false) {
    ItemHeader h;
    std::string v;
    auto result = store_->Get(key, ReadOptions{.cache_only = cache_only}, &h, &v);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return LookupStatus::kNotFound;
    if (header != nullptr) *header = h;
    if (value != nullptr) *value = v;
    return *result;
  }

  uint64_t Cas() {
    auto cas = store_->NextCas();
    EXPECT_TRUE(cas.ok()) << cas.status();
    return cas.value_or(0);
  }

  ItemHeader Header(int64_t exptime = 0) {
    return {.flags = 0, .exptime = exptime, .cas = Cas(), .write_time = clock_.Now()};
  }

  // One of RocksDbStore::Properties() by name (0 if absent).
  uint64_t Property(std::string_view name) {
    for (const auto& [key, value] : store_->Properties()) {
      if (key == name) return value;
    }
    ADD_FAILURE() << "no property " << name;
    return 0;
  }

  uint64_t Records() {
    auto count = store_->CountRecords();
    EXPECT_TRUE(count.ok()) << count.status();
    return count.value_or(0);
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<RocksDbStore> store_;
};

TEST(DurabilityTest, ParseAndName) {
  for (Durability d : {Durability::kNone, Durability::kWal, Durability::kSync}) {
    Durability parsed = d == Durability::kWal ? Durability::kNone : Durability::kWal;
    ASSERT_TRUE(ParseDurability(DurabilityName(d), &parsed));
    EXPECT_EQ(parsed, d);
  }
  Durability untouched = Durability::kSync;
  EXPECT_FALSE(ParseDurability("fsync", &untouched));
  EXPECT_FALSE(ParseDurability("", &untouched));
  EXPECT_FALSE(ParseDurability("WAL", &untouched));
  EXPECT_EQ(untouched, Durability::kSync);
}

TEST(RocksDbOptionsTest, DefaultsMatchTheDocumentedConfig) {
  RocksDbStore::Options options;
  EXPECT_EQ(options.db_path, "./data/rocksdb");
  EXPECT_EQ(options.block_cache_size, uint64_t{1} << 30);
  EXPECT_EQ(options.write_buffer_size, uint64_t{64} << 20);
  EXPECT_EQ(options.max_write_buffer_number, 3);
  EXPECT_EQ(options.target_file_size_base, uint64_t{64} << 20);
  EXPECT_EQ(options.max_background_jobs, 4);
  EXPECT_FALSE(options.enable_compression);
  EXPECT_TRUE(options.enable_ttl_compaction);
  EXPECT_EQ(options.durability, Durability::kWal);
  EXPECT_EQ(options.write_stall_timeout_ms, 500u);
  EXPECT_TRUE(options.hashed_memtable);
  EXPECT_TRUE(options.inplace_update);
}

TEST_F(RocksDbStoreTest, OverwritesInPlaceReadBackExactly) {
  for (bool inplace : {true, false}) {
    SCOPED_TRACE(inplace ? "inplace_update" : "no inplace_update");
    RocksDbStore::Options options = DefaultOptions();
    options.inplace_update = inplace;
    options.db_path = dir_.path() + (inplace ? "/inplace" : "/appended");
    Reopen(options);
    struct Step {
      std::string value;
      uint32_t flags;
      bool fits;  // no longer than the newest value in the memtable
    };
    // Shorter, equal, longer (a new entry), then shorter than that one again.
    const std::vector<Step> steps = {{"0123456789", 1, false}, {"abcde", 2, true},
                                     {"vwxyz", 3, true},       {std::string(300, 'L'), 4, false},
                                     {"s", 5, true},           {"", 6, true}};
    uint64_t expect_in_place = 0;
    ItemHeader last;
    for (const Step& step : steps) {
      last = ItemHeader{.flags = step.flags, .exptime = 0, .cas = Cas(), .write_time = 7};
      PC_ASSERT_OK(store_->Put("k", last, step.value));
      if (inplace && step.fits) ++expect_in_place;
      ItemHeader h;
      std::string v;
      ASSERT_EQ(Lookup("k", &h, &v), LookupStatus::kFound);
      EXPECT_EQ(v, step.value);
      EXPECT_EQ(h.flags, step.flags);
      EXPECT_EQ(h.cas, last.cas);
      EXPECT_EQ(Property("inplace_updates"), expect_in_place);
    }
    // A delete is never overwritten in place: the set after it adds an entry.
    PC_ASSERT_OK(store_->Delete("k"));
    EXPECT_EQ(Lookup("k"), LookupStatus::kNotFound);
    PC_ASSERT_OK(store_->Put("k", last, "back"));
    EXPECT_EQ(Property("inplace_updates"), expect_in_place);
    for (int round = 0; round < 2; ++round) {  // after WAL replay, then from an SST
      Reopen(options);
      ItemHeader h;
      std::string v;
      ASSERT_EQ(Lookup("k", &h, &v), LookupStatus::kFound);
      EXPECT_EQ(v, "back");
      EXPECT_EQ(h.cas, last.cas);
      EXPECT_EQ(Records(), 1u);
      PC_ASSERT_OK(store_->Flush());
    }
  }
}

TEST_F(RocksDbStoreTest, ReopenFindsEveryItem) {
  Reopen();
  std::map<std::string, ItemHeader> written;
  for (int i = 0; i < 2000; ++i) {
    ItemHeader header{.flags = static_cast<uint32_t>(i * 7),
                      .exptime = clock_.Now() + 1000 + i,
                      .cas = Cas(),
                      .write_time = clock_.Now() - i};
    if (i % 3 == 0) header.exptime = 0;
    const std::string key = "key:" + std::to_string(i);
    PC_ASSERT_OK(store_->Put(key, header, "value:" + std::to_string(i)));
    written[key] = header;
    // Half the items end up in SST files, half only in the WAL.
    if (i == 1000) PC_ASSERT_OK(store_->Flush());
  }
  PC_ASSERT_OK(store_->Delete("key:5"));
  written.erase("key:5");
  Reopen();
  EXPECT_EQ(Lookup("key:5"), LookupStatus::kNotFound);
  for (const auto& [key, in] : written) {
    ItemHeader out;
    std::string value;
    ASSERT_EQ(Lookup(key, &out, &value), LookupStatus::kFound) << key;
    EXPECT_EQ(out.flags, in.flags);
    EXPECT_EQ(out.exptime, in.exptime);
    EXPECT_EQ(out.cas, in.cas);
    EXPECT_EQ(out.write_time, in.write_time);
    EXPECT_EQ(value, "value:" + key.substr(4));
  }
  EXPECT_EQ(Records(), written.size());
}

TEST_F(RocksDbStoreTest, EitherMemtableReadsWhatTheOtherWrote) {
  // The memtable is never persisted as such: the WAL replays into whichever is configured.
  RocksDbStore::Options hashed = DefaultOptions();
  RocksDbStore::Options skiplist = DefaultOptions();
  skiplist.hashed_memtable = false;
  std::map<std::string, std::string> written;
  auto write = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      const std::string key = "key:" + std::to_string(i % 700);  // overwrites too
      const std::string value = "v" + std::to_string(i);
      PC_ASSERT_OK(store_->Put(key, ItemHeader{.cas = Cas()}, value));
      written[key] = value;
    }
  };
  auto check = [&] {
    for (const auto& [key, want] : written) {
      std::string value;
      ASSERT_EQ(Lookup(key, nullptr, &value), LookupStatus::kFound) << key;
      EXPECT_EQ(value, want) << key;
    }
    EXPECT_EQ(Records(), written.size());
  };
  Reopen(hashed);
  write(0, 1000);
  PC_ASSERT_OK(store_->Delete("key:3"));
  written.erase("key:3");
  check();
  Reopen(skiplist);
  check();
  write(1000, 1500);
  Reopen(hashed);
  check();
  PC_ASSERT_OK(store_->Flush());
  Reopen(skiplist);
  check();
}

TEST_F(RocksDbStoreTest, CheckpointIsAConsistentOpenableCopy) {
  Reopen();
  const int64_t now = clock_.Now();
  PC_ASSERT_OK(
      store_->Put("flushed", ItemHeader{.flags = 1, .cas = Cas(), .write_time = now}, "in an SST"));
  PC_ASSERT_OK(store_->Flush());
  PC_ASSERT_OK(store_->Put("recent", ItemHeader{.flags = 2, .cas = Cas(), .write_time = now},
                           "only in the WAL"));
  PC_ASSERT_OK(store_->SetFlushState(FlushState{.oldest_live = 5, .oldest_cas = 0}));
  const std::string copy = dir_.path() + "/backup";
  PC_ASSERT_OK(store_->Checkpoint(copy));
  // Writes after the checkpoint are not in it; the original keeps serving.
  PC_ASSERT_OK(store_->Put("later", ItemHeader{.cas = Cas(), .write_time = now}, "x"));
  EXPECT_FALSE(store_->Checkpoint(copy).ok()) << "an existing directory must not be reused";

  RocksDbStore::Options options = DefaultOptions();
  options.db_path = copy;
  Reopen(options);
  std::string value;
  ItemHeader header;
  ASSERT_EQ(Lookup("flushed", &header, &value), LookupStatus::kFound);
  EXPECT_EQ(value, "in an SST");
  ASSERT_EQ(Lookup("recent", &header, &value), LookupStatus::kFound);
  EXPECT_EQ(header.flags, 2u);
  EXPECT_EQ(Lookup("later"), LookupStatus::kNotFound);
  EXPECT_EQ(store_->GetFlushState().oldest_live, 5);
}

TEST_F(RocksDbStoreTest, CasStrictlyIncreasesAcrossReopens) {
  uint64_t highest = 0;
  for (int run = 0; run < 5; ++run) {
    Reopen();
    const uint64_t first = Cas();
    EXPECT_GT(first, highest) << "run " << run;
    highest = first;
    // One run crosses the persisted ceiling, the others stay far below it.
    const int count = run == 2 ? (1 << 20) + 10 : 100;
    for (int i = 0; i < count; ++i) {
      const uint64_t cas = Cas();
      ASSERT_GT(cas, highest);
      highest = cas;
    }
  }
}

TEST_F(RocksDbStoreTest, ConcurrentNextCasAcrossCeilingIsUnique) {
  Reopen();
  constexpr int kThreads = 8;
  constexpr int kPerThread = (1 << 20) / kThreads + 5000;  // forces a ceiling extension
  std::vector<std::vector<uint64_t>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      seen[t].reserve(kPerThread);
      for (int i = 0; i < kPerThread; ++i) {
        auto cas = store_->NextCas();
        if (!cas.ok()) return;
        seen[t].push_back(*cas);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  std::vector<uint64_t> all;
  for (const auto& v : seen) {
    ASSERT_EQ(v.size(), static_cast<size_t>(kPerThread));
    ASSERT_TRUE(std::is_sorted(v.begin(), v.end()));
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
  Reopen();
  EXPECT_GT(Cas(), all.back());
}

TEST_F(RocksDbStoreTest, FlushStateSurvivesReopen) {
  Reopen();
  const FlushState state{.oldest_live = clock_.Now() + 60, .oldest_cas = 12345};
  PC_ASSERT_OK(store_->SetFlushState(state));
  Reopen();
  EXPECT_EQ(store_->GetFlushState(), state);
  PC_ASSERT_OK(store_->SetFlushState({}));
  Reopen();
  EXPECT_EQ(store_->GetFlushState(), FlushState{});
}

TEST_F(RocksDbStoreTest, CompactionDropsExpiredItems) {
  Reopen();
  const int64_t now = clock_.Now();
  for (int i = 0; i < 100; ++i) {
    PC_ASSERT_OK(store_->Put("ttl:" + std::to_string(i), Header(now + 10), "v"));
  }
  for (int i = 0; i < 50; ++i) {
    PC_ASSERT_OK(store_->Put("keep:" + std::to_string(i), Header(now + 1000), "v"));
  }
  PC_ASSERT_OK(store_->Flush());
  // Not expired yet: compaction keeps everything.
  PC_ASSERT_OK(store_->CompactAll());
  EXPECT_EQ(Records(), 150u);
  EXPECT_EQ(store_->GetStats().compaction_dropped_expired, 0u);

  clock_.Advance(10);
  PC_ASSERT_OK(store_->CompactAll());
  EXPECT_EQ(store_->GetStats().compaction_dropped_expired, 100u);
  EXPECT_EQ(store_->GetStats().compaction_dropped_flushed, 0u);
  EXPECT_EQ(Records(), 50u);
  EXPECT_EQ(Lookup("ttl:3"), LookupStatus::kNotFound);
  EXPECT_EQ(Lookup("keep:3"), LookupStatus::kFound);
}

TEST_F(RocksDbStoreTest, CompactionDropsFlushedItems) {
  Reopen();
  for (int i = 0; i < 40; ++i) {
    PC_ASSERT_OK(store_->Put("old:" + std::to_string(i), Header(), "v"));
  }
  const uint64_t oldest_cas = Cas();
  for (int i = 0; i < 10; ++i) {
    PC_ASSERT_OK(store_->Put("new:" + std::to_string(i), Header(), "v"));
  }
  PC_ASSERT_OK(store_->SetFlushState({.oldest_live = 0, .oldest_cas = oldest_cas}));
  PC_ASSERT_OK(store_->Flush());
  PC_ASSERT_OK(store_->CompactAll());
  EXPECT_EQ(store_->GetStats().compaction_dropped_flushed, 40u);
  EXPECT_EQ(Records(), 10u);

  // A delayed flush drops nothing until it is due.
  clock_.Advance(5);
  PC_ASSERT_OK(store_->SetFlushState({.oldest_live = clock_.Now() + 100, .oldest_cas = 0}));
  PC_ASSERT_OK(store_->CompactAll());
  EXPECT_EQ(Records(), 10u);
  clock_.Advance(100);
  PC_ASSERT_OK(store_->CompactAll());
  EXPECT_EQ(store_->GetStats().compaction_dropped_flushed, 50u);
  EXPECT_EQ(Records(), 0u);
}

TEST_F(RocksDbStoreTest, DroppedItemDoesNotUncoverOlderVersion) {
  Reopen();
  PC_ASSERT_OK(store_->Put("k", Header(0), "old, never expires"));
  PC_ASSERT_OK(store_->Flush());
  PC_ASSERT_OK(store_->CompactAll());  // the old version now sits on the last level
  PC_ASSERT_OK(store_->Put("k", Header(clock_.Now() + 5), "new, expires"));
  PC_ASSERT_OK(store_->Flush());
  clock_.Advance(5);
  EXPECT_EQ(Lookup("k"), LookupStatus::kExpired);
  PC_ASSERT_OK(store_->CompactAll());
  EXPECT_EQ(Lookup("k"), LookupStatus::kNotFound);
  EXPECT_EQ(Records(), 0u);
}

TEST_F(RocksDbStoreTest, CacheOnlyColdReadNeverReportsWrongNotFound) {
  RocksDbStore::Options options = DefaultOptions();
  options.block_cache_size = 1;  // every data block is evicted as soon as it is released
  Reopen(options);
  constexpr int kKeys = 3000;
  for (int i = 0; i < kKeys; ++i) {
    PC_ASSERT_OK(store_->Put("cold:" + std::to_string(i), Header(), std::string(100, 'v')));
  }
  PC_ASSERT_OK(store_->Flush());
  PC_ASSERT_OK(store_->CompactAll());
  Reopen(options);

  int would_block = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = "cold:" + std::to_string(i);
    const LookupStatus status = Lookup(key, nullptr, nullptr, /*cache_only=*/true);
    ASSERT_TRUE(status == LookupStatus::kWouldBlock || status == LookupStatus::kFound)
        << key << " status " << static_cast<int>(status);
    if (status == LookupStatus::kWouldBlock) ++would_block;
  }
  EXPECT_GT(would_block, 0);
  // A missing key may be answered from the bloom filter or need disk; never kFound.
  const LookupStatus missing = Lookup("absent", nullptr, nullptr, /*cache_only=*/true);
  EXPECT_TRUE(missing == LookupStatus::kNotFound || missing == LookupStatus::kWouldBlock);
  // The blocking read always answers.
  std::string value;
  EXPECT_EQ(Lookup("cold:17", nullptr, &value), LookupStatus::kFound);
  EXPECT_EQ(value, std::string(100, 'v'));
}

TEST_F(RocksDbStoreTest, EveryDurabilityModeKeepsDataAcrossCleanClose) {
  for (Durability durability : {Durability::kNone, Durability::kWal, Durability::kSync}) {
    SCOPED_TRACE(std::string(DurabilityName(durability)));
    RocksDbStore::Options options = DefaultOptions();
    options.db_path = dir_.path() + "/" + std::string(DurabilityName(durability));
    options.durability = durability;
    Reopen(options);
    EXPECT_EQ(store_->durability(), durability);
    for (int i = 0; i < 100; ++i) {
      PC_ASSERT_OK(store_->Put("k" + std::to_string(i), Header(), "v" + std::to_string(i)));
    }
    PC_ASSERT_OK(store_->Delete("k7"));
    PC_ASSERT_OK(store_->Close());
    PC_EXPECT_OK(store_->Close());  // idempotent
    Reopen(options);
    std::string value;
    EXPECT_EQ(Lookup("k99", nullptr, &value), LookupStatus::kFound);
    EXPECT_EQ(value, "v99");
    EXPECT_EQ(Lookup("k7"), LookupStatus::kNotFound);
    EXPECT_EQ(Records(), 99u);
  }
}

// Runs storage_crash_helper (which SIGKILLs itself after writing) and returns the CAS it
// printed last.
uint64_t RunCrashHelper(const std::string& db_path, Durability durability, int count) {
  const char* helper = std::getenv("STORAGE_CRASH_HELPER");
  if (helper == nullptr) {
    ADD_FAILURE() << "STORAGE_CRASH_HELPER is not set";
    return 0;
  }
  const std::string out_path = db_path + ".out";
  std::string durability_name(DurabilityName(durability));
  std::string count_text = std::to_string(count);
  std::string db = db_path;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  char* argv[] = {const_cast<char*>(helper), db.data(), durability_name.data(), count_text.data(),
                  nullptr};
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, helper, &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << helper << " failed: " << rc;
    return 0;
  }
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  EXPECT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
      << "helper did not die by SIGKILL, status " << wstatus;
  std::ifstream out(out_path);
  uint64_t last_cas = 0;
  out >> last_cas;
  EXPECT_GT(last_cas, 0u);
  return last_cas;
}

TEST_F(RocksDbStoreTest, KillNineKeepsWhatEachModePromises) {
  constexpr int kItems = 500;
  for (Durability durability : {Durability::kNone, Durability::kWal, Durability::kSync}) {
    SCOPED_TRACE(std::string(DurabilityName(durability)));
    RocksDbStore::Options options = DefaultOptions();
    options.db_path = dir_.path() + "/crash-" + std::string(DurabilityName(durability));
    options.durability = durability;
    const uint64_t last_cas = RunCrashHelper(options.db_path, durability, kItems);
    Reopen(options);
    // Meta writes are synced in every mode.
    EXPECT_EQ(store_->GetFlushState(), (FlushState{.oldest_live = 77, .oldest_cas = 88}));
    EXPECT_GT(Cas(), last_cas);
    if (durability == Durability::kNone) continue;  // items may be lost: nothing to check
    EXPECT_EQ(Records(), static_cast<uint64_t>(kItems));
    ItemHeader header;
    std::string value;
    ASSERT_EQ(Lookup("key123", &header, &value), LookupStatus::kFound);
    EXPECT_EQ(header.flags, 123u);
    EXPECT_EQ(value, "value123");
  }
}

TEST_F(RocksDbStoreTest, CommitsDoNotWriteALogLineEach) {
  // RocksDB's default log level in Debian's build is DEBUG, which logs every WAL flush: the
  // LOG then grows by a line per event-loop iteration that wrote.
  RocksDbStore::Options options = DefaultOptions();
  options.db_path = dir_.path() + "/quiet-log";
  options.durability = Durability::kWal;
  Reopen(options);
  ItemHeader header{.flags = 0, .exptime = 0, .cas = 1, .write_time = 0};
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(store_->Put("k" + std::to_string(i), header, "v").ok());
    ASSERT_TRUE(store_->Commit(store_->CommitMark()).ok());
  }
  store_.reset();  // closes, so the LOG is complete
  std::ifstream log(options.db_path + "/LOG");
  ASSERT_TRUE(log.good());
  std::string line;
  int flush_lines = 0;
  int lines = 0;
  while (std::getline(log, line)) {
    ++lines;
    if (line.find("FlushWAL") != std::string::npos) ++flush_lines;
  }
  EXPECT_GT(lines, 0);
  EXPECT_EQ(flush_lines, 0);
}

TEST_F(RocksDbStoreTest, GroupCommitMakesWritesDurable) {
  for (Durability durability : {Durability::kWal, Durability::kSync}) {
    SCOPED_TRACE(std::string(DurabilityName(durability)));
    RocksDbStore::Options options = DefaultOptions();
    options.db_path = dir_.path() + "/commit-" + std::string(DurabilityName(durability));
    options.durability = durability;
    Reopen(options);
    EXPECT_EQ(store_->CommitWaitsForDevice(), durability == Durability::kSync);
    EXPECT_TRUE(store_->Committed(store_->CommitMark()));
    const uint64_t commits_before = Property("group_commits");
    ItemHeader header{.flags = 1, .exptime = 0, .cas = 1, .write_time = 0};
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(store_->Put("k" + std::to_string(i), header, "v").ok());
    }
    // Visible at once, durable only once committed, and one commit covers all ten.
    EXPECT_EQ(Lookup("k9"), LookupStatus::kFound);
    const uint64_t mark = store_->CommitMark();
    EXPECT_FALSE(store_->Committed(mark));
    ASSERT_TRUE(store_->Commit(mark).ok());
    EXPECT_TRUE(store_->Committed(mark));
    ASSERT_TRUE(store_->Commit(mark).ok());  // already covered: no second WAL write
    EXPECT_EQ(Property("group_commits"), commits_before + 1);
  }
  // Without a WAL there is nothing to commit.
  RocksDbStore::Options options = DefaultOptions();
  options.db_path = dir_.path() + "/commit-none";
  options.durability = Durability::kNone;
  Reopen(options);
  ASSERT_TRUE(store_->Put("k", ItemHeader{}, "v").ok());
  EXPECT_TRUE(store_->Committed(store_->CommitMark()));
}

TEST_F(RocksDbStoreTest, LongWriteStallIsRefusedNotWaitedOut) {
  RocksDbStore::Options options = DefaultOptions();
  options.write_buffer_size = 64 << 10;
  options.max_write_buffer_number = 2;
  options.write_stall_timeout_ms = 100;
  Reopen(options);
  // No flush can run: once the memtables are full RocksDB stops writes.
  ASSERT_TRUE(store_->PauseBackgroundWorkForTesting(true).ok());
  const std::string value(4096, 'v');
  absl::Status status;
  int written = 0;
  for (; written < 10000 && status.ok(); ++written) {
    status = store_->Put("k" + std::to_string(written), ItemHeader{}, value);
  }
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "stalled")) << status;
  // While the stall lasts, later writes are refused too (without waiting again), and a write
  // that must not wait reports the stall.
  EXPECT_TRUE(absl::IsUnavailable(store_->Put("late", ItemHeader{}, "v")));
  EXPECT_TRUE(absl::IsUnavailable(store_->Put("late", ItemHeader{}, "v", {.no_stall = true})));
  EXPECT_GE(Property("stall_rejections"), 2u);
  // Once RocksDB has flushed again, writes go through.
  ASSERT_TRUE(store_->PauseBackgroundWorkForTesting(false).ok());
  status = absl::UnavailableError("not tried");
  for (int attempt = 0; attempt < 1000 && absl::IsUnavailable(status); ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    status = store_->Put("after", ItemHeader{}, "v");
  }
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(Lookup("after"), LookupStatus::kFound);
}

TEST_F(RocksDbStoreTest, SecondOpenOfSamePathFailsClearly) {
  Reopen();
  auto second = RocksDbStore::Open(DefaultOptions());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(second.status().message(), DefaultOptions().db_path))
      << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), "another process")) << second.status();
  // The first store is unaffected.
  PC_EXPECT_OK(store_->Put("k", Header(), "v"));
}

TEST_F(RocksDbStoreTest, OpenCreatesParentDirectories) {
  RocksDbStore::Options options = DefaultOptions();
  options.db_path = dir_.path() + "/a/b/c/db";
  Reopen(options);
  PC_EXPECT_OK(store_->Put("k", Header(), "v"));
  EXPECT_EQ(store_->db_path(), options.db_path);
}

TEST_F(RocksDbStoreTest, OpenFailsClearlyWhenPathIsUnusable) {
  const std::string file = dir_.path() + "/plain-file";
  std::ofstream(file) << "not a directory";
  RocksDbStore::Options options = DefaultOptions();
  options.db_path = file + "/sub/db";
  auto store = RocksDbStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(absl::StrContains(store.status().message(), options.db_path)) << store.status();

  options.db_path = file;  // the path itself is a regular file
  store = RocksDbStore::Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_TRUE(absl::StrContains(store.status().message(), file)) << store.status();
}

TEST_F(RocksDbStoreTest, OpenReportsCorruption) {
  Reopen();
  PC_ASSERT_OK(store_->Put("k", Header(), "v"));
  store_.reset();
  std::ofstream(DefaultOptions().db_path + "/CURRENT", std::ios::trunc) << "garbage";
  auto store = RocksDbStore::Open(DefaultOptions());
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), "corrupt")) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), DefaultOptions().db_path));
}

TEST_F(RocksDbStoreTest, InvalidOptionsAreRejected) {
  RocksDbStore::Options options = DefaultOptions();
  options.block_cache_size = 0;
  EXPECT_EQ(RocksDbStore::Open(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = DefaultOptions();
  options.db_path = "";
  EXPECT_EQ(RocksDbStore::Open(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(RocksDbStoreTest, CorruptRecordIsAnErrorNotACrash) {
  Reopen();
  PC_ASSERT_OK(store_->PutRawRecordForTesting("short", "abc"));
  std::string bad_format(kRecordHeaderSize + 3, '\0');
  bad_format[0] = 9;
  PC_ASSERT_OK(store_->PutRawRecordForTesting("future", bad_format));
  ItemHeader header;
  std::string value;
  for (const char* key : {"short", "future"}) {
    auto result = store_->Get(key, ReadOptions{}, &header, &value);
    ASSERT_FALSE(result.ok()) << key;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  }
  // The compaction filter keeps what it cannot read.
  PC_ASSERT_OK(store_->Flush());
  PC_ASSERT_OK(store_->CompactAll());
  EXPECT_EQ(Records(), 2u);
}

TEST_F(RocksDbStoreTest, PropertiesReportHealthValues) {
  Reopen();
  for (int i = 0; i < 100; ++i) {
    PC_ASSERT_OK(store_->Put("k" + std::to_string(i), Header(), "v"));
  }
  PC_ASSERT_OK(store_->Flush());
  EXPECT_EQ(Lookup("k1"), LookupStatus::kFound);
  std::map<std::string, uint64_t> props;
  for (const auto& [name, value] : store_->Properties()) props[name] = value;
  for (const char* name :
       {"block_cache_usage", "block_cache_capacity", "block_cache_hits", "block_cache_misses",
        "memtable_bytes", "estimate_num_keys", "live_sst_bytes", "pending_compaction_bytes",
        "stall_micros", "background_errors", "wal_syncs", "group_commits",
        "stall_rejections", "inplace_updates"}) {
    EXPECT_TRUE(props.contains(name)) << name;
  }
  EXPECT_EQ(props["block_cache_capacity"], 8u << 20);
  EXPECT_GT(props["live_sst_bytes"], 0u);
  EXPECT_GT(props["estimate_num_keys"], 0u);
  EXPECT_GT(props["block_cache_hits"] + props["block_cache_misses"], 0u);
  EXPECT_EQ(props["background_errors"], 0u);
}

TEST_F(RocksDbStoreTest, TickersCountWhatPropertiesReport) {
  // RocksDB's statistics are reduced to the reported tickers (ReportedTickers): each must
  // still count.
  RocksDbStore::Options options = DefaultOptions();
  options.durability = Durability::kSync;
  Reopen(options);
  PC_ASSERT_OK(store_->Put("k", Header(), "v"));
  PC_ASSERT_OK(store_->Commit(store_->CommitMark()));
  EXPECT_GE(Property("wal_syncs"), 1u);
  PC_ASSERT_OK(store_->Put("k", Header(), "w"));  // same length: in place
  EXPECT_EQ(Property("inplace_updates"), 1u);
  PC_ASSERT_OK(store_->Flush());
  const uint64_t misses = Property("block_cache_misses");
  EXPECT_EQ(Lookup("k"), LookupStatus::kFound);
  EXPECT_GT(Property("block_cache_misses"), misses);
  const uint64_t hits = Property("block_cache_hits");
  EXPECT_EQ(Lookup("k"), LookupStatus::kFound);
  EXPECT_GT(Property("block_cache_hits"), hits);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Lookup("absent" + std::to_string(i)), LookupStatus::kNotFound);
  }
  EXPECT_GT(Property("bloom_filter_useful"), 0u);
  // Counts from other threads add up.
  const uint64_t before = Property("block_cache_hits");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        EXPECT_EQ(Lookup("k"), LookupStatus::kFound) << t;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_GE(Property("block_cache_hits"), before + 200);
}

}  // namespace
}  // namespace petracache::storage
