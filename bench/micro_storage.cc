// Micro-benchmarks of RocksDbStore: a get served by the block cache, a get of an absent key
// (bloom filter), and a put per durability mode, on databases in temporary directories.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "micro_fixtures.h"
#include "storage/item.h"
#include "storage/rocksdb_store.h"

namespace petracache::bench {
namespace {

constexpr int kKeys = 100000;

struct TempStore {
  std::string dir;
  std::unique_ptr<storage::RocksDbStore> store;
  bool filled = false;
};
std::map<std::string, TempStore>& Stores() {
  static auto* stores = new std::map<std::string, TempStore>;
  return *stores;
}

}  // namespace

SharedStore GetSharedStore(const std::string& name, storage::Durability durability) {
  TempStore& t = Stores()[name];
  if (t.store == nullptr) {
    std::string dir_template =
        (std::filesystem::temp_directory_path() / "petracache-micro-XXXXXX").string();
    if (mkdtemp(dir_template.data()) == nullptr) return {};
    t.dir = dir_template;
    storage::RocksDbStore::Options options;
    options.db_path = t.dir + "/db";
    options.durability = durability;
    auto store = storage::RocksDbStore::Open(options);
    if (!store.ok()) return {};
    t.store = std::move(*store);
  }
  return SharedStore{t.store.get(), &t.filled};
}

void CloseSharedStores() {
  for (auto& [name, t] : Stores()) {
    if (t.store != nullptr) (void)t.store->Close();
    t.store.reset();
    std::error_code ec;
    if (!t.dir.empty()) std::filesystem::remove_all(t.dir, ec);
  }
  Stores().clear();
}

namespace {

void BM_RocksDbGet(benchmark::State& state) {
  const bool hit = state.range(0) != 0;
  SharedStore shared = GetSharedStore("get", storage::Durability::kNone);
  storage::RocksDbStore* store = shared.store;
  if (store == nullptr) {
    state.SkipWithError("cannot open RocksDB");
    return;
  }
  static const std::vector<std::string> keys = MicroKeys(kKeys);
  storage::ItemHeader header;
  if (!*shared.filled) {
    const std::string value(1000, 'v');
    for (const std::string& key : keys) {
      if (!store->Put(key, header, value).ok()) {
        state.SkipWithError("put failed");
        return;
      }
    }
    // Reads then come from SST files through the block cache, not from the memtable.
    if (!store->Flush().ok()) state.SkipWithError("flush failed");
    *shared.filled = true;
  }
  std::string out;
  const storage::LookupStatus want =
      hit ? storage::LookupStatus::kFound : storage::LookupStatus::kNotFound;
  const std::string miss_prefix = "absent";
  size_t i = 0;
  for (auto _ : state) {
    const std::string& key = keys[i++ % kKeys];
    auto r =
        hit ? store->Get(key, {}, &header, &out) : store->Get(miss_prefix + key, {}, &header, &out);
    if (!r.ok() || *r != want) {
      state.SkipWithError("unexpected lookup result");
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_RocksDbGet)->ArgName("hit")->Arg(1)->Arg(0);

void BM_RocksDbPut(benchmark::State& state) {
  const auto durability = static_cast<storage::Durability>(state.range(0));
  state.SetLabel(std::string(storage::DurabilityName(durability)));
  SharedStore shared =
      GetSharedStore("put-" + std::string(storage::DurabilityName(durability)), durability);
  storage::RocksDbStore* store = shared.store;
  if (store == nullptr) {
    state.SkipWithError("cannot open RocksDB");
    return;
  }
  static const std::vector<std::string> keys = MicroKeys(kKeys);
  const std::string value(static_cast<size_t>(state.range(1)), 'v');
  storage::ItemHeader header;
  size_t i = 0;
  for (auto _ : state) {
    if (!store->Put(keys[i++ % kKeys], header, value).ok()) {
      state.SkipWithError("put failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * value.size()));
}
BENCHMARK(BM_RocksDbPut)
    ->ArgNames({"durability", "value"})
    ->Args({static_cast<int>(storage::Durability::kNone), 100})
    ->Args({static_cast<int>(storage::Durability::kWal), 100})
    ->Args({static_cast<int>(storage::Durability::kWal), 1000})
    ->Args({static_cast<int>(storage::Durability::kSync), 100});

}  // namespace
}  // namespace petracache::bench
