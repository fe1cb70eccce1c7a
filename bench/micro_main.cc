// petracache-micro: google-benchmark entry point for the micro_*.cc benchmarks. Shared
// fixtures (databases in temporary directories) are closed and removed before exit.
#include <benchmark/benchmark.h>

#include "common/logging.h"
#include "micro_fixtures.h"

int main(int argc, char** argv) {
  petracache::SetLogLevel(petracache::LogLevel::kWarning);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  petracache::bench::CloseSharedStores();
  return 0;
}
