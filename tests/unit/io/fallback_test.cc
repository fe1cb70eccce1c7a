// Falls back to epoll where io_uring is blocked (as by a container's seccomp profile): a child
// process installs a filter that fails io_uring_setup with EPERM, then probes and serves.
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <thread>

#include "io/event_loop.h"
#include "io/uring_probe.h"
#include "test_util.h"

namespace petracache::io {
namespace {

// Makes io_uring_setup(2) fail with EPERM in this process, like Docker's default profile.
bool BlockIoUringSetup() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof(filter) / sizeof(filter[0])), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

bool SeccompAvailable() {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(BlockIoUringSetup() ? 0 : 1);
  int status = 0;
  return pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

#define CHILD_CHECK(cond)                                                    \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "check failed: %s (line %d)\n", #cond, __LINE__); \
      std::_Exit(1);                                                         \
    }                                                                        \
  } while (0)

// Runs in the death-test child: a fresh process (threadsafe style re-executes the binary), so
// the cached probe result is computed under the filter.
void ServeWithIoUringBlocked() {
  CHILD_CHECK(BlockIoUringSetup());
  const UringProbe& probe = ProbeIoUring();
  CHILD_CHECK(!probe.usable);
  CHILD_CHECK(probe.reason.find("io_uring_setup: Operation not permitted") != std::string::npos);

  testing::EchoHandler handler;
  LoopOptions forced;
  forced.backend = Backend::kIoUring;
  auto refused = EventLoop::Create(forced, &handler);
  CHILD_CHECK(!refused.ok());
  CHILD_CHECK(refused.status().code() == absl::StatusCode::kUnavailable);

  auto server = testing::TestServer::Start(&handler, LoopOptions{});
  CHILD_CHECK(server.ok());
  EventLoop& loop = (*server)->loop();
  CHILD_CHECK(loop.backend() == Backend::kEpoll);
  std::string d = loop.Description();
  std::fprintf(stderr, "description: %s\n", d.c_str());
  CHILD_CHECK(d.rfind("epoll (io_uring unavailable: io_uring_setup: Operation not permitted", 0) ==
              0);
  auto fd = testing::Connect((*server)->port());
  CHILD_CHECK(fd.valid());
  CHILD_CHECK(testing::Exchange(fd.get(), "hello", 5) == "hello");
  CHILD_CHECK((*server)->ShutdownAndWait());
  std::fprintf(stderr, "fallback ok\n");
  std::_Exit(0);
}

TEST(FallbackTest, AutoUsesEpollWhenSeccompBlocksIoUring) {
  if (!SeccompAvailable()) GTEST_SKIP() << "cannot install seccomp filters here";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ServeWithIoUringBlocked(), ::testing::ExitedWithCode(0), "fallback ok");
}

}  // namespace
}  // namespace petracache::io
