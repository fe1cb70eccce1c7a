#!/usr/bin/env bash
# Checks the one-way layer dependencies of docs/architecture.md by looking at #include lines.
set -u
root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$root" || exit 2
fail=0

# forbid DIR PATTERN REASON: no file under DIR may include a header matching PATTERN.
forbid() {
  local hits
  hits=$(grep -rEn "^#include [<\"]($2)" "$1" 2>/dev/null)
  if [[ -n "$hits" ]]; then
    echo "layering: $3"
    echo "$hits" | sed 's/^/  /'
    fail=1
  fi
}

# RocksDB headers appear in one place: the RocksDB store (rocksdb_store.cc and its memtable,
# rocksdb_memtable.cc) and the memtable's test, which drives it through a RocksDB of its own.
rocksdb_store='^(src/storage/rocksdb_store\.cc|src/storage/rocksdb_memtable\.cc|tests/unit/storage/rocksdb_memtable_test\.cc)$'
hits=$(grep -rln '^#include [<"]rocksdb/' src include tests bench 2>/dev/null | grep -Ev "$rocksdb_store")
if [[ -n "$hits" ]]; then
  echo "layering: RocksDB headers outside the RocksDB store (src/storage/rocksdb_{store,memtable}.cc):"
  echo "$hits" | sed 's/^/  /'
  fail=1
fi
forbid src/common "protocol/|storage/|engine/|io/|server/" "common depends on nothing"
forbid src/protocol "storage/|engine/|io/|server/" "protocol depends only on common"
forbid src/storage "protocol/|engine/|io/|server/" "storage depends only on common"
forbid src/engine "io/|server/" "engine depends on protocol and storage only"
forbid src/io "protocol/|storage/|engine/|server/" "the event loop knows nothing of the protocol"
forbid src/protocol "sys/socket|sys/epoll|liburing|unistd" "the parser does no I/O"

if [[ $fail -eq 0 ]]; then
  echo "layering: ok"
fi
exit $fail
