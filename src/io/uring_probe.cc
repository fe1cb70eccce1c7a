// ProbeIoUring: feature detection by trying each feature on private rings and sockets.
#include "io/uring_probe.h"

#include <sys/utsname.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "petracache_config.h"

#if PETRACACHE_HAVE_IO_URING
#include <liburing.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/unique_fd.h"
#endif

namespace petracache::io {
namespace {

#if PETRACACHE_HAVE_IO_URING

constexpr uint64_t kProbeTag = 1;
constexpr uint64_t kCancelTag = 2;

std::string SetupError(int err) {
  std::string why = absl::StrCat("io_uring_setup: ", std::strerror(err));
  switch (err) {
    case EPERM:
      absl::StrAppend(&why,
                      " (blocked by a seccomp profile such as a container runtime's default, or "
                      "by sysctl kernel.io_uring_disabled)");
      break;
    case ENOSYS:
      absl::StrAppend(&why, " (kernel built without io_uring, or blocked by seccomp)");
      break;
    case ENOMEM:
      absl::StrAppend(&why, " (RLIMIT_MEMLOCK too low for ring memory on kernels before 5.12)");
      break;
    default:
      break;
  }
  return why;
}

// Sets up and tears down a ring with `flags`; returns 0 or -errno.
int TrySetup(unsigned flags) {
  io_uring ring;
  io_uring_params params{};
  params.flags = flags;
  int ret = io_uring_queue_init_params(4, &ring, &params);
  if (ret == 0) io_uring_queue_exit(&ring);
  return ret;
}

// Waits up to `ms` for a completion tagged `tag`; copies it out.
bool WaitFor(io_uring* ring, uint64_t tag, int ms, io_uring_cqe* out) {
  __kernel_timespec ts{};
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  for (int i = 0; i < 8; ++i) {
    io_uring_cqe* cqe = nullptr;
    int ret = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
    if (ret < 0 || cqe == nullptr) return false;
    io_uring_cqe copy = *cqe;
    io_uring_cqe_seen(ring, cqe);
    if (copy.user_data == tag) {
      *out = copy;
      return true;
    }
  }
  return false;
}

// Static storage: a probe recv that outlives its ring can only ever write here.
constexpr unsigned kProbeBufs = 2;
constexpr unsigned kProbeBufSize = 64;
char g_probe_bufs[kProbeBufs][kProbeBufSize];

// A page for a buffer ring (the kernel wants it page-aligned); unmap after the ring is gone.
class RingPage {
 public:
  RingPage()
      : mem_(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0)) {}
  ~RingPage() {
    if (mem_ != MAP_FAILED) ::munmap(mem_, kSize);
  }
  void* get() const { return mem_ == MAP_FAILED ? nullptr : mem_; }

 private:
  static constexpr size_t kSize = 4096;
  void* const mem_;
};

bool RegisterProbeBufRing(io_uring* ring, const RingPage& page) {
  if (page.get() == nullptr) return false;
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(page.get());
  reg.ring_entries = kProbeBufs;
  reg.bgid = 0;
  if (io_uring_register_buf_ring(ring, &reg, 0) != 0) return false;
  auto* br = static_cast<io_uring_buf_ring*>(page.get());
  io_uring_buf_ring_init(br);
  for (unsigned i = 0; i < kProbeBufs; ++i) {
    io_uring_buf_ring_add(br, g_probe_bufs[i], kProbeBufSize, static_cast<unsigned short>(i),
                          io_uring_buf_ring_mask(kProbeBufs), static_cast<int>(i));
  }
  io_uring_buf_ring_advance(br, kProbeBufs);
  return true;
}

bool ProbeBufRing() {
  RingPage page;  // outlives the ring
  io_uring ring;
  if (io_uring_queue_init(4, &ring, 0) != 0) return false;
  bool ok = RegisterProbeBufRing(&ring, page);
  io_uring_queue_exit(&ring);
  return ok;
}

// A multishot recv with a byte already queued: supported iff the first completion carries the
// byte and IORING_CQE_F_MORE. (Kernels that ignore the flag complete once without F_MORE.)
bool ProbeMultishotRecv() {
  RingPage page;  // outlives the ring
  io_uring ring;
  if (io_uring_queue_init(8, &ring, 0) != 0) return false;
  bool ok = false;
  int sv[2];
  if (RegisterProbeBufRing(&ring, page) &&
      ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
    UniqueFd a(sv[0]), b(sv[1]);
    char byte = 'x';
    if (::write(b.get(), &byte, 1) == 1) {
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      io_uring_prep_recv_multishot(sqe, a.get(), nullptr, 0, 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = 0;
      io_uring_sqe_set_data64(sqe, kProbeTag);
      io_uring_submit(&ring);
      io_uring_cqe cqe{};
      if (WaitFor(&ring, kProbeTag, 1000, &cqe)) {
        ok = cqe.res == 1 && (cqe.flags & IORING_CQE_F_MORE) != 0;
        if (cqe.flags & IORING_CQE_F_MORE) {
          sqe = io_uring_get_sqe(&ring);
          io_uring_prep_cancel64(sqe, kProbeTag, 0);
          io_uring_sqe_set_data64(sqe, kCancelTag);
          io_uring_submit(&ring);
          io_uring_cqe final_cqe{};
          WaitFor(&ring, kProbeTag, 1000, &final_cqe);
        }
      }
    }
  }
  io_uring_queue_exit(&ring);
  return ok;
}

// A multishot accept on a private loopback listener: old kernels reject the flag at once
// (-EINVAL); new ones accept a connection and keep IORING_CQE_F_MORE.
bool ProbeMultishotAccept() {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::listen(listener.get(), 4) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return false;
  }
  io_uring ring;
  if (io_uring_queue_init(8, &ring, 0) != 0) return false;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_multishot_accept(sqe, listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, kProbeTag);
  io_uring_submit(&ring);
  bool ok = false;
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (client && ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0) {
    io_uring_cqe cqe{};
    if (WaitFor(&ring, kProbeTag, 1000, &cqe)) {
      if (cqe.res >= 0) ::close(cqe.res);
      ok = cqe.res >= 0 && (cqe.flags & IORING_CQE_F_MORE) != 0;
    }
  }
  io_uring_queue_exit(&ring);  // cancels the accept; it references no user memory
  return ok;
}

UringProbe RunProbe() {
  UringProbe p;
  utsname uts{};
  if (::uname(&uts) == 0) p.kernel = uts.release;

  io_uring ring;
  io_uring_params params{};
  int ret = io_uring_queue_init_params(4, &ring, &params);
  if (ret < 0) {
    p.reason = SetupError(-ret);
    return p;
  }
  p.fast_poll = (params.features & IORING_FEAT_FAST_POLL) != 0;
  p.ext_arg = (params.features & IORING_FEAT_EXT_ARG) != 0;
  io_uring_probe* ops = io_uring_get_probe_ring(&ring);
  io_uring_queue_exit(&ring);
  if (ops == nullptr) {
    p.reason = "io_uring has no opcode probe (kernel before 5.6)";
    return p;
  }
  std::vector<std::string> missing;
  const std::pair<int, const char*> kNeeded[] = {
      {IORING_OP_ACCEPT, "ACCEPT"},     {IORING_OP_RECV, "RECV"},
      {IORING_OP_SEND, "SEND"},         {IORING_OP_READ, "READ"},
      {IORING_OP_POLL_ADD, "POLL_ADD"}, {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
      {IORING_OP_TIMEOUT, "TIMEOUT"},
  };
  for (const auto& [op, name] : kNeeded) {
    if (!io_uring_opcode_supported(ops, op)) missing.push_back(absl::StrCat("IORING_OP_", name));
  }
  io_uring_free_probe(ops);
  if (!missing.empty()) {
    p.reason = absl::StrCat("kernel lacks ", absl::StrJoin(missing, ", "));
    return p;
  }
  if (!p.fast_poll) {
    // Without it every idle socket read parks a kernel worker thread.
    p.reason = "kernel lacks IORING_FEAT_FAST_POLL (5.7)";
    return p;
  }
  p.usable = true;
  p.coop_taskrun = TrySetup(IORING_SETUP_COOP_TASKRUN) == 0;
  p.single_issuer = TrySetup(IORING_SETUP_SINGLE_ISSUER) == 0;
  p.defer_taskrun = TrySetup(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN) == 0;
  p.buf_ring = ProbeBufRing();
  p.multishot_recv = p.buf_ring && ProbeMultishotRecv();
  p.multishot_accept = ProbeMultishotAccept();
  return p;
}

#else  // !PETRACACHE_HAVE_IO_URING

UringProbe RunProbe() {
  UringProbe p;
  utsname uts{};
  if (::uname(&uts) == 0) p.kernel = uts.release;
  p.reason = "built without liburing";
  return p;
}

#endif

}  // namespace

std::string UringProbe::ToString() const {
  if (!usable) return absl::StrCat("io_uring unusable on kernel ", kernel, ": ", reason);
  std::vector<std::string> have;
  if (multishot_accept) have.push_back("multishot accept");
  if (multishot_recv) have.push_back("multishot recv");
  if (buf_ring) have.push_back("buffer rings");
  if (single_issuer) have.push_back("SINGLE_ISSUER");
  if (defer_taskrun) have.push_back("DEFER_TASKRUN");
  if (coop_taskrun) have.push_back("COOP_TASKRUN");
  if (ext_arg) have.push_back("EXT_ARG");
  return absl::StrCat("io_uring usable on kernel ", kernel, ": ",
                      have.empty() ? "basic operations only" : absl::StrJoin(have, ", "));
}

const UringProbe& ProbeIoUring() {
  static const UringProbe* const probe = new UringProbe(RunProbe());
  return *probe;
}

}  // namespace petracache::io
