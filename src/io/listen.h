// Listening sockets: one SO_REUSEPORT socket per event loop, all bound to the same address.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "io/unique_fd.h"

namespace petracache::io {

inline constexpr int kDefaultPort = 11211;
inline constexpr int kListenBacklog = 1024;

// Creates `count` (>= 1) listening sockets bound to the same address with SO_REUSEPORT, so the
// kernel spreads incoming connections across them. The sockets are non-blocking, close-on-exec,
// and listen with a backlog of kListenBacklog.
//
// `addr` is "host:port", "[v6]:port", "host" or "[v6]" (port kDefaultPort). An empty host or
// "*" means every IPv4 address ("0.0.0.0"). Port 0 gives the first socket an ephemeral port and
// binds the rest to that same port.
//
// A fixed port that anything already listens on is refused, even when the other listener also
// set SO_REUSEPORT (a second server would otherwise silently share the port). Errors name the
// address: "address 127.0.0.1:11211 already in use".
[[nodiscard]] absl::StatusOr<std::vector<UniqueFd>> ListenReusePort(std::string_view addr,
                                                                    int count);

// The local port `fd` is bound to, or -1 if it is not a bound IPv4/IPv6 socket.
int LocalPort(int fd);

}  // namespace petracache::io
