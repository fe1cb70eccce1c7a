// EventLoop behaviour over real loopback TCP, run against every backend and io_uring level.
#include "io/event_loop.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "io/uring_probe.h"
#include "test_util.h"

namespace petracache::io {
namespace {

using testing::Connect;
using testing::Deadline;
using testing::EchoHandler;
using testing::Exchange;
using testing::GateHandler;
using testing::LineHandler;
using testing::Pattern;
using testing::PausingHandler;
using testing::Recv;
using testing::RecvToEof;
using testing::ResetAndClose;
using testing::SendAll;
using testing::TestServer;
using testing::WaitUntil;

struct BackendParam {
  Backend backend;
  UringLevel level;
  const char* name;
};

class EventLoopTest : public ::testing::TestWithParam<BackendParam> {
 protected:
  void SetUp() override {
    if (GetParam().backend == Backend::kIoUring && !ProbeIoUring().usable) {
      GTEST_SKIP() << ProbeIoUring().ToString();
    }
  }

  LoopOptions Options() const {
    LoopOptions o;
    o.backend = GetParam().backend;
    o.uring_level = GetParam().level;
    return o;
  }

  std::unique_ptr<TestServer> Start(Handler* handler, const LoopOptions& options,
                                    std::string_view addr = "127.0.0.1:0", int count = 1) {
    auto server = TestServer::Start(handler, options, addr, count);
    EXPECT_TRUE(server.ok()) << server.status();
    if (!server.ok()) return nullptr;
    EXPECT_EQ((*server)->loop().backend(), GetParam().backend);
    return std::move(*server);
  }
};

TEST_P(EventLoopTest, DescriptionNamesBackendAndLevel) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  std::string d = server->loop().Description();
  const UringProbe& probe = ProbeIoUring();
  if (GetParam().backend == Backend::kEpoll) {
    EXPECT_EQ(d, "epoll");
  } else if (GetParam().level == UringLevel::kBasic) {
    EXPECT_NE(d.find("io_uring (accept, recv into per-connection 16KiB buffers"), std::string::npos)
        << d;
  } else {
    EXPECT_NE(d.find("io_uring ("), std::string::npos) << d;
    if (probe.multishot_accept) {
      EXPECT_NE(d.find("multishot accept"), std::string::npos) << d;
    }
    if (probe.multishot_recv) {
      EXPECT_NE(d.find("multishot recv, buffer ring 256x16KiB"), std::string::npos) << d;
    }
    if (probe.defer_taskrun) {
      EXPECT_NE(d.find("DEFER_TASKRUN"), std::string::npos) << d;
    }
  }
  RecordProperty("description", d);
}

TEST_P(EventLoopTest, EchoesAndCountsStats) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  EXPECT_EQ(Exchange(fd.get(), "hello", 5), "hello");
  const LoopStats& stats = server->loop().stats();
  EXPECT_TRUE(WaitUntil([&] { return stats.bytes_written.load() == 5; }));
  EXPECT_EQ(stats.bytes_read.load(), 5u);
  EXPECT_EQ(stats.curr_connections.load(), 1u);
  EXPECT_EQ(stats.total_connections.load(), 1u);
  fd.reset();
  EXPECT_TRUE(WaitUntil([&] { return stats.curr_connections.load() == 0; }));
  EXPECT_TRUE(WaitUntil([&] { return handler.closes.load() == 1; }));
  EXPECT_EQ(handler.opens.load(), 1);
}

TEST_P(EventLoopTest, ManyConnections) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  constexpr int kConns = 200;
  std::vector<UniqueFd> fds;
  for (int i = 0; i < kConns; ++i) {
    fds.push_back(Connect(server->port()));
    ASSERT_TRUE(fds.back()) << i;
  }
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kConns; ++i) {
      ASSERT_TRUE(SendAll(fds[i].get(),
                          "conn " + std::to_string(i) + " round " + std::to_string(round) + "\n"));
    }
    for (int i = 0; i < kConns; ++i) {
      std::string want = "conn " + std::to_string(i) + " round " + std::to_string(round) + "\n";
      EXPECT_EQ(Recv(fds[i].get(), want.size()).data, want);
    }
  }
  EXPECT_EQ(server->loop().stats().curr_connections.load(), static_cast<uint64_t>(kConns));
  fds.clear();
  EXPECT_TRUE(WaitUntil([&] { return handler.closes.load() == kConns; }));
  // OnClose runs just before the loop releases the socket and counts it closed.
  EXPECT_TRUE(WaitUntil([&] { return server->loop().stats().curr_connections.load() == 0; }));
}

TEST_P(EventLoopTest, MegabyteBothWays) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  std::string payload = Pattern(1 << 20, 3);
  std::string got = Exchange(fd.get(), payload, payload.size());
  ASSERT_EQ(got.size(), payload.size());
  EXPECT_TRUE(got == payload);
  // Each OnInput sees at most one read's worth of new bytes.
  EXPECT_LE(handler.max_input_seen.load(), Options().read_buffer_size);
}

TEST_P(EventLoopTest, OneByteSends) {
  LineHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  std::string request = "hello world\nsplit across many segments\n";
  for (char ch : request) ASSERT_TRUE(SendAll(fd.get(), std::string_view(&ch, 1)));
  std::string want = "HELLO WORLD\nSPLIT ACROSS MANY SEGMENTS\n";
  EXPECT_EQ(Recv(fd.get(), want.size()).data, want);
}

TEST_P(EventLoopTest, PipelinedRequestsAnswerInOrder) {
  LineHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  std::string request, want;
  for (int i = 0; i < 5000; ++i) {
    request += "request " + std::to_string(i) + "\n";
    want += "REQUEST " + std::to_string(i) + "\n";
  }
  EXPECT_EQ(Exchange(fd.get(), request, want.size()), want);
}

TEST_P(EventLoopTest, PausedHandlerResumesThroughPostToConnection) {
  PausingHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  handler.set_loop(&server->loop());
  std::vector<UniqueFd> fds;
  for (int c = 0; c < 4; ++c) {
    fds.push_back(Connect(server->port()));
    ASSERT_TRUE(fds.back());
  }
  std::vector<std::string> wants(fds.size());
  for (size_t c = 0; c < fds.size(); ++c) {
    std::string request;
    for (int i = 0; i < 200; ++i) {
      std::string line = "c" + std::to_string(c) + " line " + std::to_string(i);
      request += line + "\n";
      for (char ch : line) wants[c].push_back(static_cast<char>(std::toupper(ch)));
      wants[c] += "\n";
    }
    ASSERT_TRUE(SendAll(fds[c].get(), request));  // all pipelined in one write
  }
  for (size_t c = 0; c < fds.size(); ++c) {
    EXPECT_EQ(Recv(fds[c].get(), wants[c].size()).data, wants[c]);
  }
  EXPECT_EQ(handler.wrong_state.load(), 0);
  EXPECT_TRUE(server->ShutdownAndWait());
  handler.StopWorker();  // after the loop stopped calling OnInput, before the loop goes away
}

TEST_P(EventLoopTest, BackPressureBoundsBufferedOutput) {
  EchoHandler handler;
  LoopOptions options = Options();
  options.max_pending_output = 64 << 10;
  options.read_buffer_size = 4096;
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  // Send without reading until the connection stops taking data (socket buffers on both sides
  // full and the loop no longer reading), or 64 MiB went through.
  const std::string chunk = Pattern(64 << 10, 5);
  std::string sent;
  while (sent.size() < (64u << 20)) {
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, 500) <= 0) break;
    ssize_t n = ::send(fd.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n > 0) sent.append(chunk, 0, static_cast<size_t>(n));
  }
  EXPECT_LT(sent.size(), 64u << 20) << "the loop never stopped reading";
  EXPECT_LE(handler.max_pending_output.load(),
            options.max_pending_output + options.read_buffer_size);
  // Draining resumes everything: every byte comes back, in order.
  std::string got = Exchange(fd.get(), "", sent.size());
  ASSERT_EQ(got.size(), sent.size());
  EXPECT_TRUE(got == sent);
  EXPECT_LE(handler.max_pending_output.load(),
            options.max_pending_output + options.read_buffer_size);
}

TEST_P(EventLoopTest, PausedHandlerBoundsBufferedInput) {
  GateHandler handler;
  LoopOptions options = Options();
  options.read_buffer_size = 4096;
  options.max_pending_input = 64 << 10;
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  const std::string chunk = Pattern(64 << 10, 9);
  std::string sent;
  while (sent.size() < (64u << 20)) {
    pollfd p{fd.get(), POLLOUT, 0};
    if (::poll(&p, 1, 500) <= 0) break;
    ssize_t n = ::send(fd.get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n > 0) sent.append(chunk, 0, static_cast<size_t>(n));
  }
  ASSERT_TRUE(handler.paused.load());
  EXPECT_LT(sent.size(), 64u << 20) << "the loop never stopped reading";
  // The limit, plus what a multishot recv may already have taken from the socket before it is
  // cancelled: at most the whole buffer ring (256 buffers).
  EXPECT_LE(server->loop().stats().bytes_read.load(),
            options.max_pending_input + 257 * options.read_buffer_size);
  // Unpause from another thread: everything buffered and everything still queued comes back.
  uint64_t id = handler.last_id.load();
  server->loop().PostToConnection(id, [&handler](Connection& c) {
    handler.Open();
    c.SetPaused(false);
  });
  std::string got = Exchange(fd.get(), "", sent.size());
  ASSERT_EQ(got.size(), sent.size());
  EXPECT_TRUE(got == sent);
}

TEST_P(EventLoopTest, RequestLargerThanInputLimitStillArrives) {
  LineHandler handler;
  LoopOptions options = Options();
  options.max_pending_input = 16 << 10;
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  // One 1 MiB line: the handler has seen every byte and waits for the newline, so the input
  // limit does not stop reading (request size limits are the handler's business).
  std::string line = Pattern(1 << 20, 4);
  std::string want;
  for (char ch : line) want.push_back(static_cast<char>(std::toupper(ch)));
  EXPECT_TRUE(Exchange(fd.get(), line + "\n", want.size() + 1) == want + "\n");
}

TEST_P(EventLoopTest, TinyReadBuffers) {
  // 64-byte reads: many recv completions per request, and with io_uring kBest a 16 KiB buffer
  // ring that a fast sender exhausts (ENOBUFS, then re-armed).
  EchoHandler handler;
  LoopOptions options = Options();
  options.read_buffer_size = 64;
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 4; ++i) {
    fds.push_back(Connect(server->port()));
    ASSERT_TRUE(fds.back());
  }
  std::vector<std::string> payloads;
  for (size_t i = 0; i < fds.size(); ++i) {
    payloads.push_back(Pattern(256 << 10, i));
    ASSERT_TRUE(SendAll(fds[i].get(), payloads[i]));  // socket buffers hold 256 KiB each way
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    auto r = Recv(fds[i].get(), payloads[i].size());
    ASSERT_EQ(r.data.size(), payloads[i].size());
    EXPECT_TRUE(r.data == payloads[i]);
  }
  EXPECT_LE(handler.max_input_seen.load(), 64u);
}

TEST_P(EventLoopTest, ConnectionCapRejectsWithMessage) {
  EchoHandler handler;
  LoopOptions options = Options();
  options.max_connections = 2;
  options.reject_message = "ERROR Too many open connections\r\n";
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  auto a = Connect(server->port());
  auto b = Connect(server->port());
  ASSERT_TRUE(a && b);
  EXPECT_EQ(Exchange(a.get(), "a", 1), "a");
  EXPECT_EQ(Exchange(b.get(), "b", 1), "b");
  auto c = Connect(server->port());
  ASSERT_TRUE(c);
  auto r = RecvToEof(c.get());
  EXPECT_EQ(r.data, options.reject_message);
  EXPECT_TRUE(r.eof);
  EXPECT_EQ(server->loop().stats().rejected_connections.load(), 1u);
  EXPECT_EQ(handler.opens.load(), 2);
  // A slot frees up when a connection closes.
  a.reset();
  ASSERT_TRUE(WaitUntil([&] { return handler.closes.load() == 1; }));
  auto d = Connect(server->port());
  ASSERT_TRUE(d);
  EXPECT_EQ(Exchange(d.get(), "d", 1), "d");
}

TEST_P(EventLoopTest, ConnectionCapIsSharedAcrossLoops) {
  EchoHandler handler;
  std::atomic<int64_t> open{0};
  LoopOptions options = Options();
  options.max_connections = 3;
  options.open_connections = &open;
  options.reject_message = "ERROR Too many open connections\r\n";
  auto server = Start(&handler, options, "127.0.0.1:0", 2);
  ASSERT_NE(server, nullptr);
  std::vector<UniqueFd> fds;
  int accepted = 0, rejected = 0;
  for (int i = 0; i < 8; ++i) {
    fds.push_back(Connect(server->port()));
    ASSERT_TRUE(fds.back());
    std::string got = Exchange(fds.back().get(), "x", 1);
    if (got == "x") {
      ++accepted;
    } else {
      EXPECT_EQ(got + RecvToEof(fds.back().get()).data, options.reject_message);
      ++rejected;
    }
  }
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(rejected, 5);
  EXPECT_EQ(open.load(), 3);
  EXPECT_EQ(server->loop(0).stats().rejected_connections.load() +
                server->loop(1).stats().rejected_connections.load(),
            5u);
}

TEST_P(EventLoopTest, IdleConnectionsAreClosed) {
  EchoHandler handler;
  LoopOptions options = Options();
  options.idle_timeout_seconds = 1;
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  EXPECT_EQ(Exchange(fd.get(), "ping", 4), "ping");
  auto r = RecvToEof(fd.get());
  EXPECT_TRUE(r.eof || r.error);
  EXPECT_TRUE(WaitUntil([&] { return handler.closes.load() == 1; }));
}

TEST_P(EventLoopTest, PeerResetWhileOutputPending) {
  LineHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  {
    auto fd = Connect(server->port());
    ASSERT_TRUE(fd);
    ASSERT_TRUE(SendAll(fd.get(), "big 33554432\n"));  // 32 MiB, more than socket buffers hold
    ASSERT_TRUE(WaitUntil([&] { return handler.big_replies.load() == 1; }));
    auto r = Recv(fd.get(), 1000);  // read a little so the send is surely under way
    EXPECT_EQ(r.data.size(), 1000u);
    ResetAndClose(fd);
  }
  EXPECT_TRUE(WaitUntil([&] { return handler.closes.load() == 1; }));
  // The loop carries on.
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  EXPECT_EQ(Exchange(fd.get(), "still alive\n", 12), "STILL ALIVE\n");
}

TEST_P(EventLoopTest, PeerClosesWhileOutputPending) {
  LineHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  {
    auto fd = Connect(server->port());
    ASSERT_TRUE(fd);
    ASSERT_TRUE(SendAll(fd.get(), "big 33554432\n"));
    ASSERT_TRUE(WaitUntil([&] { return handler.big_replies.load() == 1; }));
    // Orderly close with the reply unread: the loop sees EPIPE/ECONNRESET on a later send.
  }
  EXPECT_TRUE(WaitUntil([&] { return handler.closes.load() == 1; }));
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  EXPECT_EQ(Exchange(fd.get(), "ok\n", 3), "OK\n");
}

TEST_P(EventLoopTest, HalfClosedPeerGetsItsReplies) {
  LineHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  ASSERT_TRUE(SendAll(fd.get(), "one\ntwo\n"));
  ::shutdown(fd.get(), SHUT_WR);
  auto r = RecvToEof(fd.get());
  EXPECT_EQ(r.data, "ONE\nTWO\n");
  EXPECT_TRUE(r.eof);
  EXPECT_TRUE(WaitUntil([&] { return handler.closes.load() == 1; }));
}

TEST_P(EventLoopTest, CloseAfterWriteFlushesThenCloses) {
  LineHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  ASSERT_TRUE(SendAll(fd.get(), "hi\nquit\nignored\n"));
  auto r = RecvToEof(fd.get());
  EXPECT_EQ(r.data, "HI\nbye\n");
  EXPECT_TRUE(r.eof);
}

TEST_P(EventLoopTest, ShutdownFlushesPendingOutputThenCloses) {
  LineHandler handler;
  LoopOptions options = Options();
  options.shutdown_timeout_ms = 20000;  // the client reads right away; this only bounds a bug
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  auto idle = Connect(server->port());
  auto fd = Connect(server->port());
  ASSERT_TRUE(idle && fd);
  constexpr size_t kBig = 16 << 20;
  ASSERT_TRUE(SendAll(fd.get(), "big " + std::to_string(kBig) + "\n"));
  ASSERT_TRUE(WaitUntil([&] { return handler.big_replies.load() == 1; }));
  server->loop().Shutdown();
  auto r = RecvToEof(fd.get());
  EXPECT_EQ(r.data.size(), kBig);
  EXPECT_TRUE(r.data == Pattern(kBig));
  EXPECT_TRUE(r.eof);
  EXPECT_TRUE(RecvToEof(idle.get()).eof);
  EXPECT_TRUE(server->ShutdownAndWait());
  EXPECT_EQ(handler.closes.load(), 2);
  EXPECT_LT(Connect(server->port()).get(), 0);  // listener closed
}

TEST_P(EventLoopTest, ShutdownGivesUpOnStuckOutputAfterDeadline) {
  LineHandler handler;
  LoopOptions options = Options();
  options.shutdown_timeout_ms = 100;
  auto server = Start(&handler, options);
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  ASSERT_TRUE(SendAll(fd.get(), "big 33554432\n"));
  ASSERT_TRUE(WaitUntil([&] { return handler.big_replies.load() == 1; }));
  EXPECT_TRUE(server->ShutdownAndWait());  // the client never reads
  EXPECT_EQ(handler.closes.load(), 1);
}

TEST_P(EventLoopTest, ShutdownWithoutConnectionsReturns) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  EXPECT_TRUE(server->ShutdownAndWait());
}

TEST_P(EventLoopTest, PostRunsOnLoopThread) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  std::atomic<int> ran{0};
  std::atomic<bool> on_loop{true};
  std::vector<std::thread> posters;
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        server->loop().Post([&] {
          if (!server->IsLoopThread(std::this_thread::get_id())) on_loop = false;
          ran.fetch_add(1);
        });
      }
    });
  }
  for (auto& t : posters) t.join();
  EXPECT_TRUE(WaitUntil([&] { return ran.load() == 4000; }));
  EXPECT_TRUE(on_loop.load());
}

TEST_P(EventLoopTest, PostToConnectionSkipsClosedConnections) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  EXPECT_EQ(Exchange(fd.get(), "x", 1), "x");
  uint64_t id = handler.last_id.load();
  ASSERT_NE(id, 0u);
  // A live connection: the function runs and its output is sent.
  server->loop().PostToConnection(id, [](Connection& c) { c.output() += "pushed"; });
  EXPECT_EQ(Recv(fd.get(), 6).data, "pushed");
  fd.reset();
  ASSERT_TRUE(WaitUntil([&] { return handler.closes.load() == 1; }));
  // A new connection may reuse the slot, but never the id.
  auto fd2 = Connect(server->port());
  ASSERT_TRUE(fd2);
  EXPECT_EQ(Exchange(fd2.get(), "y", 1), "y");
  EXPECT_NE(handler.last_id.load(), id);
  std::atomic<bool> ran{false}, barrier{false};
  server->loop().PostToConnection(id, [&](Connection&) { ran = true; });
  server->loop().Post([&] { barrier = true; });
  ASSERT_TRUE(WaitUntil([&] { return barrier.load(); }));
  EXPECT_FALSE(ran.load());
}

TEST_P(EventLoopTest, StopAcceptingKeepsExistingConnections) {
  EchoHandler handler;
  auto server = Start(&handler, Options());
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port());
  ASSERT_TRUE(fd);
  EXPECT_EQ(Exchange(fd.get(), "a", 1), "a");
  server->loop().StopAccepting();
  EXPECT_TRUE(WaitUntil([&] { return !Connect(server->port()); }));
  EXPECT_EQ(Exchange(fd.get(), "b", 1), "b");
}

TEST_P(EventLoopTest, IPv6Loopback) {
  EchoHandler handler;
  auto fds = ListenReusePort("[::1]:0", 1);
  if (!fds.ok()) GTEST_SKIP() << "no IPv6 loopback: " << fds.status();
  fds->clear();
  auto server = Start(&handler, Options(), "[::1]:0");
  ASSERT_NE(server, nullptr);
  auto fd = Connect(server->port(), "::1");
  ASSERT_TRUE(fd);
  EXPECT_EQ(Exchange(fd.get(), "over v6", 7), "over v6");
}

INSTANTIATE_TEST_SUITE_P(
    Backends, EventLoopTest,
    ::testing::Values(BackendParam{Backend::kEpoll, UringLevel::kBest, "epoll"},
                      BackendParam{Backend::kIoUring, UringLevel::kBasic, "uring_basic"},
                      BackendParam{Backend::kIoUring, UringLevel::kBest, "uring_best"}),
    [](const ::testing::TestParamInfo<BackendParam>& param) { return param.param.name; });

// ---- Backend selection ----

TEST(EventLoopCreateTest, AutoPrefersIoUringWhenUsable) {
  EchoHandler handler;
  auto loop = EventLoop::Create(LoopOptions{}, &handler);
  ASSERT_TRUE(loop.ok()) << loop.status();
  if (ProbeIoUring().usable) {
    EXPECT_EQ((*loop)->backend(), Backend::kIoUring);
  } else {
    EXPECT_EQ((*loop)->backend(), Backend::kEpoll);
    EXPECT_NE((*loop)->Description().find("io_uring unavailable"), std::string::npos);
  }
}

TEST(EventLoopCreateTest, ForcedIoUringFailsWhenUnusable) {
  EchoHandler handler;
  LoopOptions options;
  options.backend = Backend::kIoUring;
  auto loop = EventLoop::Create(options, &handler);
  EXPECT_EQ(loop.ok(), ProbeIoUring().usable) << loop.status();
}

TEST(EventLoopCreateTest, RejectsBadOptions) {
  EchoHandler handler;
  LoopOptions options;
  options.read_buffer_size = 0;
  EXPECT_EQ(EventLoop::Create(options, &handler).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EventLoop::Create(LoopOptions{}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(EventLoopCreateTest, LoopWithoutListenerShutsDown) {
  EchoHandler handler;
  auto loop = EventLoop::Create(LoopOptions{}, &handler);
  ASSERT_TRUE(loop.ok());
  (*loop)->Shutdown();  // posted before Run: Run sees it and returns
  std::atomic<bool> done{false};
  std::thread t([&] {
    (*loop)->Run();
    done = true;
  });
  EXPECT_TRUE(WaitUntil([&] { return done.load(); }));
  t.join();
}

TEST(UringProbeTest, DescribesItself) {
  const UringProbe& probe = ProbeIoUring();
  std::string s = probe.ToString();
  EXPECT_FALSE(s.empty());
  EXPECT_EQ(probe.usable, probe.reason.empty()) << s;
  if (probe.multishot_recv) {
    EXPECT_TRUE(probe.buf_ring);
  }
  if (probe.defer_taskrun) {
    EXPECT_TRUE(probe.single_issuer);
  }
  RecordProperty("probe", s);
  std::printf("%s\n", s.c_str());
}

}  // namespace
}  // namespace petracache::io
