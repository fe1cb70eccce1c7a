// Shared pieces of the micro-benchmarks: the load generator's key naming ("key:" + 10 digits,
// so micro numbers are for the same key sizes as end-to-end runs) and RocksDB stores in
// temporary directories that live until CloseSharedStores() (google-benchmark calls each
// benchmark function several times; the store and its data are built once).
#pragma once

#include <string>
#include <vector>

#include "storage/rocksdb_store.h"

namespace petracache::bench {

inline std::string MicroKey(int i) {
  std::string key = "key:0000000000";
  for (size_t pos = key.size(); i > 0 && pos > 4; i /= 10) {
    key[--pos] = static_cast<char>('0' + i % 10);
  }
  return key;
}

inline std::vector<std::string> MicroKeys(int n) {
  std::vector<std::string> keys;
  keys.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) keys.push_back(MicroKey(i));
  return keys;
}

// The store for `name`, opened with `durability` in a fresh temporary directory on first use
// (nullptr if it cannot be opened). `filled` tells whether a caller already loaded it.
struct SharedStore {
  storage::RocksDbStore* store = nullptr;
  bool* filled = nullptr;
};
SharedStore GetSharedStore(const std::string& name, storage::Durability durability);
// Closes every shared store and removes its directory.
void CloseSharedStores();

}  // namespace petracache::bench
