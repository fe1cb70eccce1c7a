// Tests for server/session: request loop, disk hand-off, back-pressure, close and shutdown.
#include "server/session.h"

#include <gtest/gtest.h>

#include "storage/memory_store.h"
#include "tests/unit/storage/forwarding_store.h"

namespace petracache::server {
namespace {

// Reports every cache-only read of "cold" as needing disk.
class ColdKeyStore final : public storage::ForwardingStore {
 public:
  explicit ColdKeyStore(Clock* clock) : ForwardingStore(&memory_), memory_(clock) {}
  absl::StatusOr<storage::LookupStatus> Get(std::string_view key,
                                            const storage::ReadOptions& options,
                                            storage::ItemHeader* header,
                                            std::string* value) override {
    if (options.cache_only && key == "cold") return storage::LookupStatus::kWouldBlock;
    return ForwardingStore::Get(key, options, header, value);
  }

 private:
  storage::MemoryStore memory_;
};

// A store with a write-ahead log in the group-commit sense: every write raises the mark, and
// only Commit() (which can be made to fail) makes writes committed.
class CommitStore final : public storage::ForwardingStore {
 public:
  explicit CommitStore(Clock* clock) : ForwardingStore(&memory_), memory_(clock) {}
  using Store::Delete;
  using Store::Put;
  absl::Status Put(std::string_view key, const storage::ItemHeader& header, std::string_view value,
                   const storage::WriteOptions& options) override {
    ++written_;
    return ForwardingStore::Put(key, header, value, options);
  }
  absl::Status Delete(std::string_view key, const storage::WriteOptions& options) override {
    ++written_;
    return ForwardingStore::Delete(key, options);
  }
  uint64_t CommitMark() const override { return written_; }
  bool Committed(uint64_t mark) const override { return mark <= committed_; }
  absl::Status Commit(uint64_t mark) override {
    ++commits;
    if (!fail.ok()) return fail;
    committed_ = written_;
    return absl::OkStatus();
  }

  absl::Status fail;
  int commits = 0;

 private:
  storage::MemoryStore memory_;
  uint64_t written_ = 0;
  uint64_t committed_ = 0;
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

class GroupCommitTest : public ::testing::Test {
 protected:
  GroupCommitTest() : store_(&clock_), engine_(&store_, &clock_, engine::EngineOptions{}) {
    stats_ = engine_.RegisterStats();
  }
  FakeClock clock_;
  CommitStore store_;
  engine::Engine engine_;
  engine::EngineStats* stats_;
};

TEST_F(GroupCommitTest, WriteAcknowledgementWaitsForTheCommit) {
  Session session(&engine_, stats_, {});
  std::string out;
  SessionResult r = session.Process("set a 0 0 1\r\n1\r\n", &out);
  EXPECT_EQ(r.action, SessionAction::kContinue);
  EXPECT_EQ(out, "");
  ASSERT_TRUE(session.holding());
  EXPECT_FALSE(store_.Committed(session.held_mark()));
  ASSERT_TRUE(store_.Commit(session.held_mark()).ok());
  EXPECT_TRUE(store_.Committed(session.held_mark()));
  session.ReleaseHeld(absl::OkStatus(), &out);
  EXPECT_EQ(out, "STORED\r\n");
  EXPECT_FALSE(session.holding());
}

TEST_F(GroupCommitTest, LaterRepliesQueueBehindHeldOnes) {
  Session session(&engine_, stats_, {});
  std::string out;
  session.Process("set a 0 0 1\r\n1\r\n", &out);
  ASSERT_TRUE(session.holding());
  // Neither a read nor a command that never touches the store may overtake the held reply.
  session.Process("get a\r\nversion\r\n", &out);
  session.AppendReply("END\r\n", &out);  // as a disk request's reply would be
  EXPECT_EQ(out, "");
  ASSERT_TRUE(store_.Commit(session.held_mark()).ok());
  session.ReleaseHeld(absl::OkStatus(), &out);
  EXPECT_EQ(out, "STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nVERSION \r\nEND\r\n");
}

TEST_F(GroupCommitTest, ReadsOfUncommittedDataWaitButOthersDoNot) {
  Session writer(&engine_, stats_, {});
  Session reader(&engine_, stats_, {});
  std::string out;
  writer.Process("set a 0 0 1 noreply\r\n1\r\n", &out);
  EXPECT_FALSE(writer.holding());  // nothing acknowledged
  reader.Process("version\r\n", &out);
  EXPECT_FALSE(reader.holding());
  EXPECT_EQ(out, "VERSION \r\n");
  out.clear();
  // Another client's uncommitted write is visible, so the reply showing it waits.
  reader.Process("get a\r\n", &out);
  EXPECT_TRUE(reader.holding());
  EXPECT_EQ(out, "");
  ASSERT_TRUE(store_.Commit(store_.CommitMark()).ok());
  reader.ReleaseHeld(absl::OkStatus(), &out);
  EXPECT_EQ(out, "VALUE a 0 1\r\n1\r\nEND\r\n");
  out.clear();
  // Everything committed: replies go straight out.
  reader.Process("get a\r\n", &out);
  EXPECT_FALSE(reader.holding());
  EXPECT_EQ(out, "VALUE a 0 1\r\n1\r\nEND\r\n");
}

TEST_F(GroupCommitTest, FailedCommitTurnsAcknowledgementsIntoServerErrors) {
  Session session(&engine_, stats_, {});
  std::string out = "earlier\r\n";
  session.Process(
      "set a 0 0 1\r\n1\r\nget a\r\nadd a 0 0 1\r\n2\r\nincr n 1\r\n"
      "delete a\r\nset b 0 0 1 noreply\r\n2\r\n",
      &out);
  ASSERT_TRUE(session.holding());
  session.ReleaseHeld(absl::InternalError("disk full"), &out);
  // A write that may or may not have happened is never reported as done: every reply of a
  // command that writes (NOT_STORED and NOT_FOUND too: they were decided on uncommitted
  // data) becomes SERVER_ERROR. The value read stands.
  EXPECT_EQ(out,
            "earlier\r\nSERVER_ERROR storage failure\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
            "SERVER_ERROR storage failure\r\nSERVER_ERROR storage failure\r\n"
            "SERVER_ERROR storage failure\r\n");
  EXPECT_EQ(engine_.Totals().storage_errors, 4u);
}

TEST_F(GroupCommitTest, BlockingRequestsCommitBeforeAnswering) {
  std::string out;
  EXPECT_EQ(Session::RunBlocking(&engine_, stats_, {}, "set a 0 0 1\r\n1\r\n", 0, &out),
            SessionAction::kContinue);
  EXPECT_EQ(out, "STORED\r\n");
  EXPECT_EQ(store_.commits, 1);
  EXPECT_TRUE(store_.Committed(store_.CommitMark()));

  store_.fail = absl::InternalError("disk full");
  out.clear();
  Session::RunBlocking(&engine_, stats_, {}, "set a 0 0 1\r\n2\r\n", 0, &out);
  EXPECT_EQ(out, "SERVER_ERROR storage failure\r\n");
}

}  // namespace
}  // namespace petracache::server
