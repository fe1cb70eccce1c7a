// Test helper: opens a RocksDbStore, writes items and flush state, then SIGKILLs itself
// without closing, so rocksdb_store_test can check what each durability mode keeps.
//   storage_crash_helper DB_PATH DURABILITY COUNT
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "common/clock.h"
#include "storage/rocksdb_store.h"

int main(int argc, char** argv) {
  using petracache::storage::Durability;
  using petracache::storage::RocksDbStore;
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s DB_PATH DURABILITY COUNT\n", argv[0]);
    return 2;
  }
  RocksDbStore::Options options;
  options.db_path = argv[1];
  if (!petracache::storage::ParseDurability(argv[2], &options.durability)) return 2;
  const int count = std::atoi(argv[3]);
  petracache::FakeClock clock;
  options.clock = &clock;
  options.block_cache_size = 1 << 20;
  auto store = RocksDbStore::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  if (!(*store)->SetFlushState({.oldest_live = 77, .oldest_cas = 88}).ok()) return 1;
  for (int i = 0; i < count; ++i) {
    auto cas = (*store)->NextCas();
    if (!cas.ok()) return 1;
    petracache::storage::ItemHeader header{
        .flags = static_cast<uint32_t>(i), .exptime = 0, .cas = *cas, .write_time = clock.Now()};
    if (!(*store)->Put("key" + std::to_string(i), header, "value" + std::to_string(i)).ok()) {
      return 1;
    }
  }
  // What the server does before acknowledging: commit (a no-op without a WAL).
  if (!(*store)->Commit((*store)->CommitMark()).ok()) return 1;
  // Report the last CAS so the test can check the next run starts above it.
  auto cas = (*store)->NextCas();
  if (!cas.ok()) return 1;
  std::printf("%llu\n", static_cast<unsigned long long>(*cas));
  std::fflush(stdout);
  raise(SIGKILL);
  return 1;
}
