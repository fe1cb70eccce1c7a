// Micro-benchmarks of the engine over MemoryStore: the cost of command semantics (parse
// excluded, reply encoding included) without RocksDB.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "common/clock.h"
#include "engine/engine.h"
#include "micro_fixtures.h"
#include "petracache/command.h"
#include "storage/memory_store.h"

namespace petracache::bench {
namespace {

constexpr int kKeys = 100000;

struct EngineFixture {
  EngineFixture() : store(&clock), engine(&store, &clock, engine::EngineOptions{}) {
    stats = engine.RegisterStats();
    ctx.out = &out;
    ctx.stats = stats;
    keys = MicroKeys(kKeys);
  }

  void Fill(size_t value_size) {
    const std::string value(value_size, 'v');
    Command cmd;
    cmd.type = CommandType::kSet;
    cmd.data = value;
    for (const std::string& key : keys) {
      cmd.key = key;
      out.clear();
      engine.Execute(cmd, ctx);
    }
  }

  FakeClock clock;
  storage::MemoryStore store;
  engine::Engine engine;
  engine::EngineStats* stats;
  engine::ExecContext ctx;
  std::string out;
  std::vector<std::string> keys;
};

void BM_EngineGet(benchmark::State& state) {
  const bool hit = state.range(0) != 0;
  EngineFixture f;
  if (hit) f.Fill(static_cast<size_t>(state.range(1)));
  Command cmd;
  cmd.type = CommandType::kGet;
  cmd.keys.resize(1);
  size_t i = 0;
  for (auto _ : state) {
    cmd.keys[0] = f.keys[i++ % kKeys];
    f.out.clear();
    benchmark::DoNotOptimize(f.engine.Execute(cmd, f.ctx));
  }
  if (f.out.size() < (hit ? 6u + static_cast<size_t>(state.range(1)) : 5u)) {
    state.SkipWithError("unexpected reply");
  }
}
BENCHMARK(BM_EngineGet)->ArgNames({"hit", "value"})->Args({1, 100})->Args({1, 1000})->Args({0, 0});

void BM_EngineSet(benchmark::State& state) {
  EngineFixture f;
  const std::string value(static_cast<size_t>(state.range(0)), 'v');
  Command cmd;
  cmd.type = CommandType::kSet;
  cmd.data = value;
  size_t i = 0;
  for (auto _ : state) {
    cmd.key = f.keys[i++ % kKeys];
    f.out.clear();
    benchmark::DoNotOptimize(f.engine.Execute(cmd, f.ctx));
  }
  if (f.out != "STORED\r\n") state.SkipWithError("set was not stored");
}
BENCHMARK(BM_EngineSet)->ArgName("value")->Arg(100)->Arg(1000);

}  // namespace
}  // namespace petracache::bench
