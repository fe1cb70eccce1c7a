// Tests for engine/engine: memcached semantics over a MemoryStore, driven by request bytes
// through the real parser, and per-key linearizability under concurrent threads.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "protocol/parser.h"
#include "storage/memory_store.h"
#include "tests/unit/storage/forwarding_store.h"

namespace petracache::engine {
namespace {

// Wraps a store so that cache-only reads of chosen keys report kWouldBlock, non-stalling
// writes can be made to report a stall, and a hook runs inside every Get.
class ColdStore final : public storage::ForwardingStore {
 public:
  explicit ColdStore(storage::Store* inner) : ForwardingStore(inner) {}
  std::string cold_key;
  bool stall_writes = false;
  bool overloaded = false;  // writes that may wait give up too (the store's stall timeout)
  std::function<void()> on_get;
  absl::StatusOr<storage::LookupStatus> Get(std::string_view key,
                                            const storage::ReadOptions& options,
                                            storage::ItemHeader* header,
                                            std::string* value) override {
    if (on_get) on_get();
    if (options.cache_only && key == cold_key) return storage::LookupStatus::kWouldBlock;
    return ForwardingStore::Get(key, options, header, value);
  }
  using Store::Delete;
  using Store::Put;
  absl::Status Put(std::string_view key, const storage::ItemHeader& header, std::string_view value,
                   const storage::WriteOptions& options) override {
    if (Stalled(options)) return absl::UnavailableError("write stall");
    return ForwardingStore::Put(key, header, value, options);
  }
  absl::Status Delete(std::string_view key, const storage::WriteOptions& options) override {
    if (Stalled(options)) return absl::UnavailableError("write stall");
    return ForwardingStore::Delete(key, options);
  }

 private:
  bool Stalled(const storage::WriteOptions& options) const {
    return stall_writes && (options.no_stall || overloaded);
  }
};

class EngineTest : public ::testing::Test {
 protected:
  EngineTest() : store_(&clock_), engine_(&store_, &clock_, Options()) {
    stats_ = engine_.RegisterStats();
  }

  static EngineOptions Options() {
    EngineOptions o;
    o.version = "1.6.18 petracache-test";
    return o;
  }

  // Parses and executes every request in `input`; returns the replies.
  std::string Run(std::string_view input, Engine* engine = nullptr) {
    if (engine == nullptr) engine = &engine_;
    protocol::Parser parser;
    Command cmd;
    std::string out;
    ExecContext ctx{&out, stats_, true};
    while (!input.empty()) {
      protocol::ParseResult r = parser.Parse(input, &cmd);
      if (r.status != protocol::ParseStatus::kCommand) {
        if (r.status == protocol::ParseStatus::kClose) out += "<close>";
        break;
      }
      Outcome o = engine->Execute(cmd, ctx);
      input.remove_prefix(r.consumed);
      if (o == Outcome::kClose) {
        out += "<close>";
        break;
      }
    }
    return out;
  }

  FakeClock clock_;
  storage::MemoryStore store_;
  Engine engine_;
  EngineStats* stats_;
};

TEST_F(EngineTest, SetGetDelete) {
  EXPECT_EQ(Run("set k 5 0 3\r\nabc\r\nget k\r\n"), "STORED\r\nVALUE k 5 3\r\nabc\r\nEND\r\n");
  EXPECT_EQ(Run("get k nope k\r\n"), "VALUE k 5 3\r\nabc\r\nVALUE k 5 3\r\nabc\r\nEND\r\n");
  EXPECT_EQ(Run("delete k\r\ndelete k\r\nget k\r\n"), "DELETED\r\nNOT_FOUND\r\nEND\r\n");
}

TEST_F(EngineTest, AddReplaceAppendPrepend) {
  EXPECT_EQ(Run("append k 0 0 1\r\nx\r\nprepend k 0 0 1\r\nx\r\nreplace k 0 0 1\r\nx\r\n"),
            "NOT_STORED\r\nNOT_STORED\r\nNOT_STORED\r\n");
  EXPECT_EQ(Run("add k 7 0 1\r\nb\r\nadd k 0 0 1\r\nz\r\n"), "STORED\r\nNOT_STORED\r\n");
  // append/prepend keep the item's flags and ignore their own.
  EXPECT_EQ(Run("append k 9 0 1\r\nc\r\nprepend k 9 0 1\r\na\r\nget k\r\n"),
            "STORED\r\nSTORED\r\nVALUE k 7 3\r\nabc\r\nEND\r\n");
  EXPECT_EQ(Run("replace k 1 0 2\r\nxy\r\nget k\r\n"), "STORED\r\nVALUE k 1 2\r\nxy\r\nEND\r\n");
}

TEST_F(EngineTest, AppendBeyondItemLimitIsNotStored) {
  std::string big(kDefaultItemSizeMax - 100, 'x');
  EXPECT_EQ(Run(absl::StrCat("set k 0 0 ", big.size(), "\r\n", big, "\r\n")), "STORED\r\n");
  EXPECT_EQ(Run("append k 0 0 100\r\n" + std::string(100, 'y') + "\r\n"), "NOT_STORED\r\n");
}

TEST_F(EngineTest, CasOutcomes) {
  EXPECT_EQ(Run("cas k 0 0 1 1\r\nx\r\n"), "NOT_FOUND\r\n");
  Run("set k 0 0 1\r\nx\r\n");
  std::string gets = Run("gets k\r\n");
  // "VALUE k 0 1 <cas>\r\n..."
  std::string cas = gets.substr(12, gets.find("\r\n") - 12);
  EXPECT_EQ(Run("cas k 0 0 1 " + cas + "\r\ny\r\n"), "STORED\r\n");
  EXPECT_EQ(Run("cas k 0 0 1 " + cas + "\r\nz\r\n"), "EXISTS\r\n");
  EXPECT_EQ(Run("cas k 0 0 1 0\r\nz\r\n"), "EXISTS\r\n");
  EXPECT_EQ(Run("get k\r\n"), "VALUE k 0 1\r\ny\r\nEND\r\n");
  EngineTotals t = engine_.Totals();
  EXPECT_EQ(t.cas_misses, 1u);
  EXPECT_EQ(t.cas_hits, 1u);
  EXPECT_EQ(t.cas_badval, 2u);
}

TEST_F(EngineTest, EveryMutationChangesCas) {
  Run("set k 0 0 1\r\n1\r\n");
  std::string a = Run("gets k\r\n");
  Run("incr k 1\r\n");
  std::string b = Run("gets k\r\n");
  Run("append k 0 0 1\r\n0\r\n");
  std::string c = Run("gets k\r\n");
  EXPECT_NE(a.substr(12), b.substr(12));
  EXPECT_NE(b.substr(12), c.substr(12));
  // touch keeps the CAS.
  std::string before = Run("gets k\r\n");
  Run("touch k 100\r\n");
  EXPECT_EQ(Run("gets k\r\n"), before);
}

TEST_F(EngineTest, IncrDecr) {
  EXPECT_EQ(Run("incr k 1\r\n"), "NOT_FOUND\r\n");
  EXPECT_EQ(Run("set k 3 0 3\r\n100\r\ndecr k 1\r\nget k\r\n"),
            "STORED\r\n99\r\nVALUE k 3 3\r\n99 \r\nEND\r\n");
  EXPECT_EQ(Run("incr k 1\r\nget k\r\n"), "100\r\nVALUE k 3 3\r\n100\r\nEND\r\n");
  EXPECT_EQ(Run("decr k 1000\r\n"), "0\r\n");
  EXPECT_EQ(Run("set m 0 0 20\r\n18446744073709551615\r\nincr m 1\r\nget m\r\n"),
            "STORED\r\n0\r\nVALUE m 0 20\r\n0                   \r\nEND\r\n");
  EXPECT_EQ(Run("set n 0 0 3\r\n 12\r\nincr n 1\r\n"), "STORED\r\n13\r\n");
  EXPECT_EQ(Run("set n 0 0 2\r\n99\r\nincr n 1\r\nget n\r\n"),
            "STORED\r\n100\r\nVALUE n 0 3\r\n100\r\nEND\r\n");
  for (std::string_view bad : {"-12", "abc", "12abc"}) {
    EXPECT_EQ(Run(absl::StrCat("set b 0 0 ", bad.size(), "\r\n", std::string(bad), "\r\n",
                               "incr b 1\r\n")),
              "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
  }
  EXPECT_EQ(Run("set e 0 0 0\r\n\r\nincr e 1\r\n"),
            "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
  EXPECT_EQ(Run("incr k abc\r\n"), "CLIENT_ERROR invalid numeric delta argument\r\n");
}

TEST_F(EngineTest, NoreplySuppressesRepliesAndErrors) {
  EXPECT_EQ(Run("set k 0 0 1 noreply\r\n1\r\nincr k 1 noreply\r\nincr k x noreply\r\n"
                "delete j noreply\r\ntouch k 1 noreply\r\nflush_all noreply\r\n"
                "verbosity 1 noreply\r\nget k\r\n"),
            "END\r\n");
}

TEST_F(EngineTest, ExpiryRules) {
  EXPECT_EQ(Run("set a 0 10 1\r\na\r\nset n 0 -1 1\r\nn\r\nget a n\r\n"),
            "STORED\r\nSTORED\r\nVALUE a 0 1\r\na\r\nEND\r\n");
  clock_.Advance(9);
  EXPECT_EQ(Run("get a\r\n"), "VALUE a 0 1\r\na\r\nEND\r\n");
  clock_.Advance(1);
  EXPECT_EQ(Run("get a\r\n"), "END\r\n");
  EXPECT_GE(engine_.Totals().get_expired, 1u);
  // Absolute times: in the past is already expired, in the future lives until then.
  int64_t now = clock_.Now();
  EXPECT_EQ(Run(absl::StrCat("set p 0 ", now - 5, " 1\r\np\r\nset f 0 ", now + 100,
                             " 1\r\nf\r\nget p f\r\n")),
            "STORED\r\nSTORED\r\nVALUE f 0 1\r\nf\r\nEND\r\n");
  clock_.Advance(100);
  EXPECT_EQ(Run("get f\r\n"), "END\r\n");
}

TEST_F(EngineTest, TouchAndGat) {
  EXPECT_EQ(Run("touch k 10\r\n"), "NOT_FOUND\r\n");
  Run("set k 2 5 1\r\nx\r\n");
  EXPECT_EQ(Run("touch k 100\r\n"), "TOUCHED\r\n");
  clock_.Advance(50);
  EXPECT_EQ(Run("gat 10 k nope\r\n"), "VALUE k 2 1\r\nx\r\nEND\r\n");
  clock_.Advance(11);
  EXPECT_EQ(Run("gats 10 k\r\n"), "END\r\n");
  EngineTotals t = engine_.Totals();
  EXPECT_EQ(t.touch_hits, 2u);
  EXPECT_EQ(t.touch_misses, 3u);
}

TEST_F(EngineTest, OverLongKeyInMultiGetRepliesOnlyTheErrorButTouches) {
  Run("set a 0 100 1\r\na\r\n");
  EXPECT_EQ(Run("gat 1000 a " + std::string(251, 'k') + "\r\n"),
            "CLIENT_ERROR bad command line format\r\n");
  clock_.Advance(500);
  EXPECT_EQ(Run("get a\r\n"), "VALUE a 0 1\r\na\r\nEND\r\n");
}

TEST_F(EngineTest, TooLargeSetRemovesTheOldValue) {
  Run("set k 0 0 1\r\nx\r\nadd j 0 0 1\r\ny\r\n");
  std::string big(kDefaultItemSizeMax, 'b');
  std::string too_big = absl::StrCat(big.size(), "\r\n", big, "\r\n");
  EXPECT_EQ(Run("set k 0 0 " + too_big + "get k\r\n"),
            "SERVER_ERROR object too large for cache\r\nEND\r\n");
  // Only set does that; add/replace/append leave the old value.
  EXPECT_EQ(Run("replace j 0 0 " + too_big + "get j\r\n"),
            "SERVER_ERROR object too large for cache\r\nVALUE j 0 1\r\ny\r\nEND\r\n");
}

TEST_F(EngineTest, FlushAllImmediateAndDelayed) {
  Run("set a 0 0 1\r\na\r\n");
  EXPECT_EQ(Run("flush_all\r\nget a\r\n"), "OK\r\nEND\r\n");
  EXPECT_EQ(Run("set b 0 0 1\r\nb\r\nget b\r\n"), "STORED\r\nVALUE b 0 1\r\nb\r\nEND\r\n");
  EXPECT_EQ(engine_.Totals().get_flushed, 1u);

  // Delayed: items written before the deadline die when it comes.
  clock_.Advance(10);
  EXPECT_EQ(Run("flush_all 10\r\nget b\r\n"), "OK\r\nVALUE b 0 1\r\nb\r\nEND\r\n");
  clock_.Advance(5);
  Run("set c 0 0 1\r\nc\r\n");  // written before the deadline: flushed too
  EXPECT_EQ(Run("get b c\r\n"), "VALUE b 0 1\r\nb\r\nVALUE c 0 1\r\nc\r\nEND\r\n");
  clock_.Advance(5);
  EXPECT_EQ(Run("get b c\r\n"), "END\r\n");
  Run("set d 0 0 1\r\nd\r\n");  // written after the deadline
  clock_.Advance(1);
  EXPECT_EQ(Run("get d\r\n"), "VALUE d 0 1\r\nd\r\nEND\r\n");

  // A later flush_all replaces a pending deadline; a negative delay flushes now.
  EXPECT_EQ(Run("flush_all 100\r\nflush_all -1\r\nget d\r\n"), "OK\r\nOK\r\nEND\r\n");
  Run("set e 0 0 1\r\ne\r\n");
  clock_.Advance(200);
  EXPECT_EQ(Run("get e\r\n"), "VALUE e 0 1\r\ne\r\nEND\r\n");
  EXPECT_EQ(Run("flush_all abc\r\n"), "CLIENT_ERROR invalid exptime argument\r\n");
}

TEST_F(EngineTest, ServerCommands) {
  EXPECT_EQ(Run("version\r\n"), "VERSION 1.6.18 petracache-test\r\n");
  EXPECT_EQ(Run("verbosity 1\r\nverbosity\r\n"), "OK\r\nERROR\r\n");
  EXPECT_EQ(Run("shutdown\r\nshutdown graceful\r\n"),
            "ERROR: shutdown not enabled\r\nERROR: shutdown not enabled\r\n");
  EXPECT_EQ(Run("stats foo\r\nstats noreply\r\nstats reset\r\n"), "ERROR\r\nERROR\r\nRESET\r\n");
  EXPECT_EQ(Run("stats slabs\r\n"), "END\r\n");
  EXPECT_EQ(Run("quit\r\nget k\r\n"), "<close>");
  EXPECT_EQ(Run("lease-get k\r\nmetaget k\r\n"),
            "SERVER_ERROR unsupported command\r\nSERVER_ERROR unsupported command\r\n");
  EXPECT_EQ(Run("lease-set k 1 0 0 1\r\nx\r\nget k\r\n"), "STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n");
}

TEST_F(EngineTest, ShutdownAndFlushSwitches) {
  EngineOptions o = Options();
  o.enable_shutdown = true;
  o.disable_flush_all = true;
  Engine engine(&store_, &clock_, o);
  protocol::Parser parser;
  Command cmd;
  std::string out;
  EngineStats* stats = engine.RegisterStats();
  ExecContext ctx{&out, stats, true};
  std::string_view req = "shutdown\r\n";
  ASSERT_EQ(parser.Parse(req, &cmd).status, protocol::ParseStatus::kCommand);
  EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kShutdown);
  EXPECT_EQ(Run("shutdown now\r\nflush_all\r\nflush_all abc\r\n", &engine),
            "CLIENT_ERROR invalid shutdown mode\r\nCLIENT_ERROR flush_all not allowed\r\n"
            "CLIENT_ERROR flush_all not allowed\r\n");
}

TEST_F(EngineTest, StatsCountAndReset) {
  Run("set a 0 0 1\r\na\r\nget a b\r\ndelete a\r\ndelete a\r\n");
  std::string stats = Run("stats\r\n");
  for (std::string_view line :
       {"STAT cmd_get 2\r\n", "STAT get_hits 1\r\n", "STAT get_misses 1\r\n", "STAT cmd_set 1\r\n",
        "STAT delete_hits 1\r\n", "STAT delete_misses 1\r\n", "STAT version 1.6.18\r\n"}) {
    EXPECT_NE(stats.find(line), std::string::npos) << line << " in\n" << stats;
  }
  EXPECT_EQ(stats.substr(stats.size() - 5), "END\r\n");
  Run("stats reset\r\n");
  EXPECT_NE(Run("stats\r\n").find("STAT cmd_get 0\r\n"), std::string::npos);
  // /metrics reads lifetime counters, which a reset must not rewind.
  EXPECT_EQ(engine_.LifetimeTotals().cmd_get, 2u);
}

TEST_F(EngineTest, WouldBlockLeavesNoTrace) {
  ColdStore cold(&store_);
  Engine engine(&cold, &clock_, Options());
  EngineStats* stats = engine.RegisterStats();
  Run("set hot 0 0 1\r\nh\r\nset cold 0 0 1\r\nc\r\n", &engine);
  cold.cold_key = "cold";
  protocol::Parser parser;
  Command cmd;
  for (std::string_view req : {"get hot cold\r\n", "incr cold 1\r\n", "append cold 0 0 1\r\nx\r\n",
                               "delete cold\r\n", "gat 0 hot cold\r\n"}) {
    ASSERT_EQ(parser.Parse(req, &cmd).status, protocol::ParseStatus::kCommand);
    std::string out = "prefix";
    uint64_t gets_before = engine.Totals().cmd_get;
    ExecContext ctx{&out, stats, false};
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kWouldBlock) << req;
    EXPECT_EQ(out, "prefix") << req;
    EXPECT_EQ(engine.Totals().cmd_get, gets_before) << req;
    ctx.allow_disk = true;
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kDone) << req;
    EXPECT_NE(out, "prefix") << req;
  }
}

TEST_F(EngineTest, MetaCommandsThatWouldBlockLeaveNoTrace) {
  ColdStore cold(&store_);
  Engine engine(&cold, &clock_, Options());
  EngineStats* stats = engine.RegisterStats();
  Run("set cold 0 0 1\r\n7\r\n", &engine);
  cold.cold_key = "cold";
  protocol::Parser parser;
  Command cmd;
  // Each request changes the item or reads it; on an event loop (no disk) it must give up
  // before changing anything, and the retry with disk access does the whole command once.
  const std::pair<std::string_view, std::string_view> requests[] = {
      {"mg cold v\r\n", "VA 1\r\n7\r\n"},
      {"mg cold T0 t\r\n", "HD t-1\r\n"},
      {"ma cold v\r\n", "VA 1\r\n8\r\n"},
      {"md cold I\r\n", "HD\r\n"},
      {"mg cold\r\n", "HD X W\r\n"},
      {"ms cold 1 MA\r\n9\r\n", "HD\r\n"},
      {"me cold\r\n", "ME cold exp=-1 la=0 cas="},
      {"md cold\r\n", "HD\r\n"},
      {"mg cold N0 s\r\n", "HD s0 W\r\n"},
  };
  for (const auto& [req, want] : requests) {
    ASSERT_EQ(parser.Parse(req, &cmd).status, protocol::ParseStatus::kCommand) << req;
    std::string out = "prefix";
    ExecContext ctx{&out, stats, false};
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kWouldBlock) << req;
    EXPECT_EQ(out, "prefix") << req;
    ctx.allow_disk = true;
    out.clear();
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kDone) << req;
    EXPECT_EQ(out.substr(0, want.size()), want) << req;
  }
  EXPECT_EQ(Run("get cold\r\n", &engine), "VALUE cold 0 0\r\n\r\nEND\r\n");
}

TEST_F(EngineTest, MetaGetCountsLikeMemcached) {
  Run("ms k 1\r\nx\r\nmg k v\r\nmg k T30\r\nmg nope\r\nms e 1 T-1\r\nx\r\nmg e\r\n");
  EngineTotals t = engine_.Totals();
  EXPECT_EQ(t.cmd_set, 2u);
  EXPECT_EQ(t.cmd_get, 3u);  // mg k v, mg nope, mg e; the T request counts as a touch
  EXPECT_EQ(t.get_hits, 1u);
  EXPECT_EQ(t.get_misses, 2u);
  EXPECT_EQ(t.get_expired, 1u);
  EXPECT_EQ(t.cmd_touch, 1u);
  EXPECT_EQ(t.touch_hits, 1u);
}

TEST_F(EngineTest, StalledWritesOnALoopAreRetriedWithDiskAccess) {
  ColdStore cold(&store_);
  Engine engine(&cold, &clock_, Options());
  EngineStats* stats = engine.RegisterStats();
  Run("set k 0 0 1\r\n1\r\nset t 0 0 1\r\nt\r\n", &engine);
  cold.stall_writes = true;
  protocol::Parser parser;
  Command cmd;
  for (std::string_view req : {"set k 0 0 1\r\n2\r\n", "incr k 1\r\n", "delete t\r\n",
                               "touch k 100\r\n", "gat 100 k\r\n", "append k 0 0 1\r\nx\r\n"}) {
    ASSERT_EQ(parser.Parse(req, &cmd).status, protocol::ParseStatus::kCommand);
    std::string out = "prefix";
    ExecContext ctx{&out, stats, false};
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kWouldBlock) << req;
    EXPECT_EQ(out, "prefix") << req;
    ctx.allow_disk = true;  // the blocking pool: writes may wait
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kDone) << req;
  }
  EXPECT_EQ(engine.Totals().storage_errors, 0u);
  EXPECT_EQ(Run("get k t\r\n", &engine), "VALUE k 0 2\r\n3x\r\nEND\r\n");
}

TEST_F(EngineTest, WritesTheStoreGivesUpOnAreAnsweredBusy) {
  ColdStore cold(&store_);
  Engine engine(&cold, &clock_, Options());
  EngineStats* stats = engine.RegisterStats();
  Run("set k 0 0 1\r\n1\r\nset t 0 0 1\r\nt\r\n", &engine);
  cold.stall_writes = true;
  cold.overloaded = true;
  protocol::Parser parser;
  Command cmd;
  for (std::string_view req : {"set k 0 0 1\r\n2\r\n", "incr k 1\r\n", "delete t\r\n",
                               "touch k 100\r\n", "append k 0 0 1\r\nx\r\n"}) {
    ASSERT_EQ(parser.Parse(req, &cmd).status, protocol::ParseStatus::kCommand);
    std::string out;
    ExecContext ctx{&out, stats, true};
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kDone) << req;
    // mcrouter's busy code: it fails over without marking the server down.
    EXPECT_EQ(out, "SERVER_ERROR 307 busy\r\n") << req;
  }
  EXPECT_EQ(engine.Totals().storage_errors, 5u);
  cold.stall_writes = false;
  EXPECT_EQ(Run("get k t\r\n", &engine), "VALUE k 0 1\r\n1\r\nVALUE t 0 1\r\nt\r\nEND\r\n");
}

TEST_F(EngineTest, ALoopNeverWaitsForAStripeHeldByABlockingThread) {
  ColdStore cold(&store_);
  Engine engine(&cold, &clock_, Options());
  Run("set k 0 0 1\r\n1\r\n", &engine);
  std::mutex mu;
  std::condition_variable cv;
  bool armed = true;  // only the first Get waits
  bool inside = false;
  bool release = false;
  cold.on_get = [&] {
    std::unique_lock lock(mu);
    if (!armed) return;
    armed = false;
    inside = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  };
  // A blocking-pool thread holds k's stripe while its read waits on "disk".
  std::thread pool([&] {
    protocol::Parser parser;
    Command cmd;
    std::string out;
    ExecContext ctx{&out, engine.RegisterStats(), true};
    ASSERT_EQ(parser.Parse("incr k 1\r\n", &cmd).status, protocol::ParseStatus::kCommand);
    EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kDone);
    EXPECT_EQ(out, "2\r\n");
  });
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return inside; });
  }
  protocol::Parser parser;
  Command cmd;
  std::string out;
  ExecContext ctx{&out, stats_, false};
  ASSERT_EQ(parser.Parse("incr k 1\r\n", &cmd).status, protocol::ParseStatus::kCommand);
  EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kWouldBlock);  // instead of waiting
  EXPECT_EQ(out, "");
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  pool.join();
  ctx.allow_disk = true;
  EXPECT_EQ(engine.Execute(cmd, ctx), Outcome::kDone);
  EXPECT_EQ(out, "3\r\n");
}

// --- Linearizability across threads -------------------------------------------------------

class EngineConcurrencyTest : public EngineTest {
 protected:
  // Runs fn(thread_index, runner) on `threads` threads, each with its own stats block.
  template <typename Fn>
  void RunThreads(int threads, Fn fn) {
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) {
      pool.emplace_back([this, i, &fn] {
        EngineStats* stats = engine_.RegisterStats();
        protocol::Parser parser;
        Command cmd;
        auto exec = [&](std::string_view req) {
          std::string out;
          ExecContext ctx{&out, stats, true};
          protocol::ParseResult r = parser.Parse(req, &cmd);
          EXPECT_EQ(r.status, protocol::ParseStatus::kCommand);
          engine_.Execute(cmd, ctx);
          return out;
        };
        fn(i, exec);
      });
    }
    for (auto& t : pool) t.join();
  }
};

TEST_F(EngineConcurrencyTest, ConcurrentIncrLosesNothing) {
  Run("set counter 0 0 1\r\n0\r\n");
  RunThreads(8, [](int, auto& exec) {
    for (int i = 0; i < 10000; ++i) exec("incr counter 1\r\n");
  });
  EXPECT_EQ(Run("get counter\r\n"), "VALUE counter 0 5\r\n80000\r\nEND\r\n");
}

TEST_F(EngineConcurrencyTest, ExactlyOneAddWins) {
  for (int round = 0; round < 50; ++round) {
    std::string key = absl::StrCat("k", round);
    std::atomic<int> stored{0};
    RunThreads(8, [&](int t, auto& exec) {
      if (exec(absl::StrCat("add ", key, " 0 0 1\r\n", t, "\r\n")) == "STORED\r\n") stored++;
    });
    EXPECT_EQ(stored.load(), 1) << key;
  }
}

TEST_F(EngineConcurrencyTest, ExactlyOneCasWins) {
  for (int round = 0; round < 50; ++round) {
    Run("set c 0 0 1\r\nx\r\n");
    std::string gets = Run("gets c\r\n");
    std::string cas = gets.substr(12, gets.find("\r\n") - 12);
    std::atomic<int> stored{0};
    RunThreads(8, [&](int t, auto& exec) {
      if (exec(absl::StrCat("cas c 0 0 1 ", cas, "\r\n", t, "\r\n")) == "STORED\r\n") stored++;
    });
    EXPECT_EQ(stored.load(), 1) << "round " << round;
  }
}

TEST_F(EngineConcurrencyTest, AcknowledgedSetIsNeverOverwrittenByALaterIncr) {
  // Each thread owns a key: it sets it, then incrs it, and must see set+1 every time, while
  // other threads hammer incr on the same keys.
  for (int k = 0; k < 4; ++k) Run(absl::StrCat("set s", k, " 0 0 1\r\n0\r\n"));
  RunThreads(8, [](int t, auto& exec) {
    std::string key = absl::StrCat("s", t % 4);
    for (int i = 0; i < 2000; ++i) {
      if (t < 4) {
        ASSERT_EQ(exec(absl::StrCat("set ", key, " 0 0 7\r\n1000000\r\n")), "STORED\r\n");
        std::string r = exec(absl::StrCat("incr ", key, " 1\r\n"));
        // Other threads' incrs may land in between, but never below 1000001.
        ASSERT_GE(std::stoull(r), 1000001u) << r;
      } else {
        exec(absl::StrCat("incr ", key, " 1\r\n"));
      }
    }
  });
}

TEST_F(EngineConcurrencyTest, ConcurrentMetaArithmeticLosesNothing) {
  // ma vivifies the counter exactly once (N with J0); every other request increments it.
  RunThreads(8, [](int, auto& exec) {
    for (int i = 0; i < 5000; ++i) exec("ma up N0 J0 q\r\n");
  });
  // The vivifying request sets the value to J without applying the delta.
  EXPECT_EQ(Run("mg up v\r\n"), "VA 5\r\n39999\r\n");
}

TEST_F(EngineConcurrencyTest, ExactlyOneClientWinsEachRecacheToken) {
  for (int round = 0; round < 50; ++round) {
    // A miss with N, a TTL under R, and an invalidated item: each hands out one W.
    const std::string k = absl::StrCat("r", round);
    Run(absl::StrCat("ms ", k, "t 1 T10\r\nx\r\nms ", k, "s 1\r\nx\r\nmd ", k, "s I\r\n"));
    for (const std::string& req :
         {absl::StrCat("mg ", k, "n N30\r\n"), absl::StrCat("mg ", k, "t R30\r\n"),
          absl::StrCat("mg ", k, "s\r\n")}) {
      std::atomic<int> won{0};
      RunThreads(8, [&](int, auto& exec) {
        if (exec(req).find(" W") != std::string::npos) won++;
      });
      EXPECT_EQ(won.load(), 1) << req;
    }
  }
}

}  // namespace
}  // namespace petracache::engine
