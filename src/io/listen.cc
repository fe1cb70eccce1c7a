// Listening sockets: address parsing, resolution and SO_REUSEPORT binding.
#include "io/listen.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace petracache::io {
namespace {

// absl here is built with its own string_view type.
absl::string_view AV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

struct HostPort {
  std::string host;  // without brackets
  int port = kDefaultPort;
};

absl::StatusOr<HostPort> ParseAddress(std::string_view addr) {
  auto invalid = [addr](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid listen address \"", AV(addr), "\": ", AV(why)));
  };
  HostPort out;
  std::string_view port_text;
  if (!addr.empty() && addr.front() == '[') {
    size_t close = addr.find(']');
    if (close == std::string_view::npos) return invalid("missing ']'");
    out.host = std::string(addr.substr(1, close - 1));
    std::string_view rest = addr.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return invalid("expected ':' after ']'");
      port_text = rest.substr(1);
      if (port_text.empty()) return invalid("empty port");
    }
  } else {
    size_t colon = addr.rfind(':');
    if (colon == std::string_view::npos || addr.find(':') != colon) {
      // "host", or a bare IPv6 address with several colons and no port.
      out.host = std::string(addr);
    } else {
      out.host = std::string(addr.substr(0, colon));
      port_text = addr.substr(colon + 1);
      if (port_text.empty()) return invalid("empty port");
    }
  }
  if (out.host == "*") out.host.clear();
  if (!port_text.empty()) {
    uint32_t port = 0;
    if (!absl::SimpleAtoi(AV(port_text), &port) || port > 65535 ||
        port_text.find_first_not_of("0123456789") != std::string_view::npos) {
      return invalid("port must be a number from 0 to 65535");
    }
    out.port = static_cast<int>(port);
  }
  return out;
}

std::string FormatAddress(const HostPort& hp) {
  std::string host = hp.host.empty() ? "0.0.0.0" : hp.host;
  if (host.find(':') != std::string::npos) return absl::StrCat("[", host, "]:", hp.port);
  return absl::StrCat(host, ":", hp.port);
}

absl::Status BindError(int err, const std::string& where) {
  switch (err) {
    case EADDRINUSE:
      return absl::AlreadyExistsError(absl::StrCat("address ", where, " already in use"));
    case EACCES:
      return absl::PermissionDeniedError(
          absl::StrCat("cannot bind ", where,
                       ": permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"));
    case EADDRNOTAVAIL:
      return absl::InvalidArgumentError(
          absl::StrCat("address ", where, " is not an address of this host"));
    default:
      return absl::InternalError(absl::StrCat("cannot bind ", where, ": ", std::strerror(err)));
  }
}

// Binds a socket to `ss` with or without SO_REUSEPORT; listens when `listen_after`.
absl::StatusOr<UniqueFd> BindOne(const sockaddr_storage& ss, socklen_t len, bool reuse_port,
                                 bool listen_after, const std::string& where) {
  UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    return absl::InternalError(
        absl::StrCat("cannot create a socket for ", where, ": ", std::strerror(errno)));
  }
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot set SO_REUSEPORT for ", where, ": ", std::strerror(errno)));
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    return BindError(errno, where);
  }
  if (listen_after && ::listen(fd.get(), kListenBacklog) != 0) {
    return BindError(errno, where);
  }
  return fd;
}

void SetPort(sockaddr_storage* ss, int port) {
  if (ss->ss_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(ss)->sin6_port = htons(static_cast<uint16_t>(port));
  } else {
    reinterpret_cast<sockaddr_in*>(ss)->sin_port = htons(static_cast<uint16_t>(port));
  }
}

}  // namespace

absl::StatusOr<std::vector<UniqueFd>> ListenReusePort(std::string_view addr, int count) {
  if (count < 1) return absl::InvalidArgumentError("ListenReusePort: count must be at least 1");
  absl::StatusOr<HostPort> hp = ParseAddress(addr);
  if (!hp.ok()) return hp.status();

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(hp->port);
  int rc = ::getaddrinfo(hp->host.empty() ? "0.0.0.0" : hp->host.c_str(), port_str.c_str(), &hints,
                         &res);
  if (rc != 0 || res == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot resolve listen address \"", AV(addr), "\": ", ::gai_strerror(rc)));
  }
  sockaddr_storage ss{};
  socklen_t len = static_cast<socklen_t>(res->ai_addrlen);
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  std::string where = FormatAddress(*hp);

  if (hp->port != 0) {
    // A plain bind (no SO_REUSEPORT) fails if anyone listens on the port, including another
    // server's SO_REUSEPORT group that our sockets could otherwise join.
    absl::StatusOr<UniqueFd> check = BindOne(ss, len, /*reuse_port=*/false, false, where);
    if (!check.ok()) return check.status();
  }

  std::vector<UniqueFd> fds;
  fds.reserve(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    absl::StatusOr<UniqueFd> fd = BindOne(ss, len, /*reuse_port=*/true, true, where);
    if (!fd.ok()) return fd.status();
    if (i == 0 && hp->port == 0) {
      int port = LocalPort(fd->get());
      if (port <= 0) return absl::InternalError(absl::StrCat("cannot read the port of ", where));
      SetPort(&ss, port);
      hp->port = port;
      where = FormatAddress(*hp);
    }
    fds.push_back(std::move(*fd));
  }
  return fds;
}

int LocalPort(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return -1;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return -1;
}

}  // namespace petracache::io
