// Micro-benchmarks of the protocol layer: parsing each request kind the load generator sends,
// and encoding the VALUE reply. Bytes per second are request (or reply) bytes.
#include <benchmark/benchmark.h>

#include <string>
#include <string_view>

#include "micro_fixtures.h"
#include "petracache/command.h"
#include "protocol/encoder.h"
#include "protocol/parser.h"

namespace petracache::bench {
namespace {

void ParseLoop(benchmark::State& state, const std::string& request) {
  protocol::Parser parser;
  Command cmd;
  for (auto _ : state) {
    cmd.Clear();
    protocol::ParseResult r = parser.Parse(request, &cmd);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(cmd);
    if (r.status != protocol::ParseStatus::kCommand || r.consumed != request.size()) {
      state.SkipWithError("request did not parse");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * request.size()));
}

void BM_ParseGet(benchmark::State& state) {
  std::string request = "get ";
  request += MicroKey(12345);
  request += "\r\n";
  ParseLoop(state, request);
}
BENCHMARK(BM_ParseGet);

void BM_ParseMultiGet(benchmark::State& state) {
  std::string request = "get";
  for (int i = 0; i < state.range(0); ++i) {
    request += ' ';
    request += MicroKey(i * 7919);
  }
  request += "\r\n";
  ParseLoop(state, request);
}
BENCHMARK(BM_ParseMultiGet)->Arg(10)->Arg(100);

void BM_ParseSet(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  std::string request = "set ";
  request += MicroKey(12345);
  request += " 0 0 ";
  request += std::to_string(size);
  request += "\r\n";
  request.append(size, 'v');
  request += "\r\n";
  ParseLoop(state, request);
}
BENCHMARK(BM_ParseSet)->Arg(100)->Arg(1000);

void BM_EncodeValue(benchmark::State& state) {
  const std::string key = MicroKey(12345);
  const std::string data(static_cast<size_t>(state.range(0)), 'v');
  std::string out;
  out.reserve(64 * 1024);
  for (auto _ : state) {
    out.clear();
    protocol::AppendValue(&out, key, 0, data, nullptr);
    protocol::AppendReply(&out, protocol::Reply::kEnd);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * out.size()));
}
BENCHMARK(BM_EncodeValue)->Arg(100)->Arg(1000);

}  // namespace
}  // namespace petracache::bench
