// ProbeIoUring: what io_uring offers in this kernel / container, found by trying it.
#pragma once

#include <string>

namespace petracache::io {

struct UringProbe {
  bool usable = false;     // io_uring_setup works and has the opcodes the loop needs
  std::string reason;      // why not usable, e.g. "io_uring_setup: Operation not permitted (...)"
  std::string kernel;      // uname release, for logs
  bool fast_poll = false;  // IORING_FEAT_FAST_POLL (5.7)
  bool ext_arg = false;    // IORING_FEAT_EXT_ARG (5.11)
  bool multishot_accept = false;  // IORING_ACCEPT_MULTISHOT (5.19)
  bool multishot_recv = false;    // IORING_RECV_MULTISHOT (6.0)
  bool buf_ring = false;          // IORING_REGISTER_PBUF_RING (5.19)
  bool coop_taskrun = false;      // IORING_SETUP_COOP_TASKRUN (5.19)
  bool single_issuer = false;     // IORING_SETUP_SINGLE_ISSUER (6.0)
  bool defer_taskrun = false;     // IORING_SETUP_DEFER_TASKRUN (6.1)

  // One line for logs: "usable: multishot accept, multishot recv, ..." or "unusable: <reason>".
  std::string ToString() const;
};

// Probes once per process (later calls return the cached result). Each feature is tried on a
// private ring, socketpair or loopback listener that the probe closes again, so nothing outside
// it changes. Without liburing at build time the answer is "unusable".
const UringProbe& ProbeIoUring();

}  // namespace petracache::io
