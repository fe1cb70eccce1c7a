// Tests for server/session: request loop, disk hand-off, back-pressure, close and shutdown.
#include "server/session.h"

#include <gtest/gtest.h>

#include "storage/memory_store.h"

namespace petracache::server {
namespace {

// Reports every cache-only read of "cold" as needing disk.
class ColdKeyStore final : public storage::Store {
 public:
  explicit ColdKeyStore(Clock* clock) : inner_(clock) {}
  absl::StatusOr<storage::LookupStatus> Get(std::string_view key,
                                            const storage::ReadOptions& options,
                                            storage::ItemHeader* header,
                                            std::string* value) override {
    if (options.cache_only && key == "cold") return storage::LookupStatus::kWouldBlock;
    return inner_.Get(key, options, header, value);
  }
  using Store::Delete;
  using Store::Put;
  absl::Status Put(std::string_view key, const storage::ItemHeader& header, std::string_view value,
                   const storage::WriteOptions& options) override {
    return inner_.Put(key, header, value, options);
  }
  absl::Status Delete(std::string_view key, const storage::WriteOptions& options) override {
    return inner_.Delete(key, options);
  }
  absl::StatusOr<uint64_t> NextCas() override { return inner_.NextCas(); }
  absl::Status SetFlushState(const storage::FlushState& s) override {
    return inner_.SetFlushState(s);
  }
  storage::FlushState GetFlushState() const override { return inner_.GetFlushState(); }
  storage::StoreStats GetStats() const override { return inner_.GetStats(); }

 private:
  storage::MemoryStore inner_;
};

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() : store_(&clock_), engine_(&store_, &clock_, Options()) {
    stats_ = engine_.RegisterStats();
  }

  static engine::EngineOptions Options() {
    engine::EngineOptions o;
    o.version = "1.6.18 petracache-test";
    return o;
  }

  FakeClock clock_;
  ColdKeyStore store_;
  engine::Engine engine_;
  engine::EngineStats* stats_;
};

TEST_F(SessionTest, PipelinedRequestsAnswerInOrder) {
  Session session(&engine_, stats_, {});
  std::string out;
  std::string_view in = "set a 0 0 1\r\n1\r\nget a\r\ndelete a\r\nget";
  SessionResult r = session.Process(in, &out);
  EXPECT_EQ(r.action, SessionAction::kContinue);
  EXPECT_EQ(r.consumed, in.size() - 3);  // "get" is incomplete
  EXPECT_EQ(out, "STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nDELETED\r\n");
}

TEST_F(SessionTest, DiskBoundRequestIsHandedOverAndAnsweredInOrder) {
  Session session(&engine_, stats_, {});
  std::string out;
  std::string_view in = "add cold 0 0 1\r\nc\r\nget a\r\nget cold\r\nget a\r\n";
  // add reads the old item first (it stores only over a missing one), so a cold key sends it
  // to disk too.
  SessionResult r = session.Process(in, &out);
  ASSERT_EQ(r.action, SessionAction::kNeedDisk);
  EXPECT_EQ(session.disk_request(), "add cold 0 0 1\r\nc\r\n");
  EXPECT_EQ(Session::RunBlocking(&engine_, stats_, {}, session.disk_request(),
                                 session.disk_first_key(), &out),
            SessionAction::kContinue);
  in.remove_prefix(r.consumed);
  r = session.Process(in, &out);
  ASSERT_EQ(r.action, SessionAction::kNeedDisk);
  EXPECT_EQ(session.disk_request(), "get cold\r\n");
  Session::RunBlocking(&engine_, stats_, {}, session.disk_request(), session.disk_first_key(),
                       &out);
  in.remove_prefix(r.consumed);
  r = session.Process(in, &out);
  EXPECT_EQ(r.action, SessionAction::kContinue);
  EXPECT_EQ(out, "STORED\r\nEND\r\nVALUE cold 0 1\r\nc\r\nEND\r\nEND\r\n");
}

TEST_F(SessionTest, SetNeedsNoReadSoAColdKeyStaysOnTheLoop) {
  Session session(&engine_, stats_, {});
  std::string out;
  SessionResult r = session.Process("set cold 0 0 1\r\nc\r\n", &out);
  EXPECT_EQ(r.action, SessionAction::kContinue);
  EXPECT_EQ(out, "STORED\r\n");
}

TEST_F(SessionTest, DiskRequestAfterASwallowedBlockIsOnlyTheRequest) {
  SessionOptions options;
  options.parser.item_size_max = 100;
  Session session(&engine_, stats_, options);
  std::string out;
  std::string big(200, 'x');
  std::string in = "set big 0 0 200\r\n" + big + "\r\nget cold\r\n";
  SessionResult r = session.Process(in, &out);
  ASSERT_EQ(r.action, SessionAction::kNeedDisk);
  EXPECT_EQ(r.consumed, in.size());
  EXPECT_EQ(session.disk_request(), "get cold\r\n");
  EXPECT_EQ(out, "SERVER_ERROR object too large for cache\r\n");
}

TEST_F(SessionTest, HugeMultiGetIsAnsweredInOutputSizedPieces) {
  SessionOptions options;
  options.max_output = 3000;
  Session session(&engine_, stats_, options);
  std::string out;
  ASSERT_EQ(session.Process("set big 0 0 1000\r\n" + std::string(1000, 'b') + "\r\n", &out).action,
            SessionAction::kContinue);
  out.clear();
  std::string get = "get";
  for (int i = 0; i < 10; ++i) get += " big";
  get += "\r\nversion\r\n";
  std::string input = get;
  std::string all;
  int calls = 0;
  while (!input.empty() && calls < 50) {
    ++calls;
    SessionResult r = session.Process(input, &out);
    ASSERT_EQ(r.action, SessionAction::kContinue);
    EXPECT_LE(out.size(), options.max_output + 1100) << "one piece stays near the budget";
    input.erase(0, r.consumed);
    all += out;  // the client reads everything
    out.clear();
  }
  std::string want;
  for (int i = 0; i < 10; ++i) want += "VALUE big 0 1000\r\n" + std::string(1000, 'b') + "\r\n";
  want += "END\r\nVERSION 1.6.18 petracache-test\r\n";
  EXPECT_GT(calls, 3);
  EXPECT_EQ(all.size(), want.size());
  EXPECT_TRUE(all == want);
  EXPECT_EQ(engine_.Totals().get_hits, 10u);
}

TEST_F(SessionTest, StopsProducingWhenOutputIsFull) {
  SessionOptions options;
  options.max_output = 10;
  Session session(&engine_, stats_, options);
  std::string out;
  std::string_view in = "version\r\nversion\r\nversion\r\n";
  SessionResult r = session.Process(in, &out);
  EXPECT_EQ(r.action, SessionAction::kContinue);
  EXPECT_EQ(r.consumed, 9u);  // one request answered, the rest waits for the client to read
}

TEST_F(SessionTest, QuitAndProtocolClose) {
  Session session(&engine_, stats_, {});
  std::string out;
  EXPECT_EQ(session.Process("version\r\nquit\r\nversion\r\n", &out).action, SessionAction::kClose);
  Session http(&engine_, stats_, {});
  EXPECT_EQ(http.Process("GET / HTTP/1.1\r\n", &out).action, SessionAction::kClose);
}

TEST_F(SessionTest, ShutdownWhenEnabled) {
  engine::EngineOptions o;
  o.enable_shutdown = true;
  engine::Engine engine(&store_, &clock_, o);
  Session session(&engine, engine.RegisterStats(), {});
  std::string out;
  EXPECT_EQ(session.Process("shutdown\r\n", &out).action, SessionAction::kShutdown);
}

}  // namespace
}  // namespace petracache::server
