// ListenReusePort: address forms, shared ephemeral ports, and the errors operators see.
#include "io/listen.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace petracache::io {
namespace {

TEST(ListenTest, PortZeroGivesEverySocketOnePort) {
  auto fds = ListenReusePort("127.0.0.1:0", 4);
  ASSERT_TRUE(fds.ok()) << fds.status();
  ASSERT_EQ(fds->size(), 4u);
  int port = LocalPort((*fds)[0].get());
  EXPECT_GT(port, 0);
  for (const UniqueFd& fd : *fds) EXPECT_EQ(LocalPort(fd.get()), port);
}

TEST(ListenTest, SocketsAreNonBlockingListeners) {
  auto fds = ListenReusePort("127.0.0.1:0", 1);
  ASSERT_TRUE(fds.ok()) << fds.status();
  int fd = (*fds)[0].get();
  EXPECT_TRUE(::fcntl(fd, F_GETFL) & O_NONBLOCK);
  int listening = 0;
  socklen_t len = sizeof(listening);
  ASSERT_EQ(::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len), 0);
  EXPECT_EQ(listening, 1);
}

TEST(ListenTest, AddressInUseNamesTheAddress) {
  auto first = ListenReusePort("127.0.0.1:0", 1);
  ASSERT_TRUE(first.ok()) << first.status();
  int port = LocalPort((*first)[0].get());
  std::string addr = absl::StrCat("127.0.0.1:", port);
  // Even though both would use SO_REUSEPORT, a second server must not join the first's group.
  auto second = ListenReusePort(addr, 2);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(second.status().message(), absl::StrCat("address ", addr, " already in use"));
}

TEST(ListenTest, BracketedIPv6) {
  auto fds = ListenReusePort("[::1]:0", 2);
  if (!fds.ok()) GTEST_SKIP() << "no IPv6 loopback: " << fds.status();
  int port = LocalPort((*fds)[0].get());
  EXPECT_GT(port, 0);
  EXPECT_EQ(LocalPort((*fds)[1].get()), port);
}

TEST(ListenTest, HostWithoutPortUsesDefaultPort) {
  auto fds = ListenReusePort("127.0.0.1", 1);
  if (fds.ok()) {
    EXPECT_EQ(LocalPort((*fds)[0].get()), kDefaultPort);
  } else {
    // Something on this machine already serves memcached's port.
    EXPECT_NE(std::string(fds.status().message()).find("127.0.0.1:11211"), std::string::npos)
        << fds.status();
  }
}

TEST(ListenTest, RejectsMalformedAddresses) {
  for (const char* bad :
       {"127.0.0.1:99999", "127.0.0.1:", "127.0.0.1:http", "[::1", "[::1]x", "[::1]:"}) {
    auto fds = ListenReusePort(bad, 1);
    ASSERT_FALSE(fds.ok()) << bad;
    EXPECT_EQ(fds.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(std::string(fds.status().message()).find(bad), std::string::npos) << fds.status();
  }
  EXPECT_FALSE(ListenReusePort("127.0.0.1:0", 0).ok());
}

TEST(ListenTest, UnresolvableHost) {
  auto fds = ListenReusePort("no-such-host.invalid:0", 1);
  ASSERT_FALSE(fds.ok());
  EXPECT_NE(std::string(fds.status().message()).find("no-such-host.invalid"), std::string::npos);
}

TEST(ListenTest, LocalPortOfNonSocket) { EXPECT_EQ(LocalPort(-1), -1); }

}  // namespace
}  // namespace petracache::io
