// UringLoop: io_uring backend. Each iteration handles every completion, runs the shared
// end-of-iteration pass (which prepares sends, recv re-arms and cancels), and submits all new
// SQEs with a single io_uring_submit_and_wait.
#include "io/uring_loop.h"

#if PETRACACHE_HAVE_IO_URING

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"

namespace petracache::io::internal {
namespace {

constexpr unsigned kSqEntries = 1024;
constexpr unsigned kCqEntries = 8192;  // multishot operations post many completions per SQE
constexpr unsigned kMaxBufEntries = 256;
constexpr size_t kMaxBufRingBytes = 8 << 20;
constexpr int kBufGroup = 0;
constexpr size_t kMaxSendBytes = 1 << 30;  // an SQE length is 32 bits
constexpr int kMaxCompletionsPerIteration = 4096;

// The generation half of a connection id (see LoopCore::AcceptedSocket).
uint32_t GenOf(const Connection& c) { return static_cast<uint32_t>(c.id() >> 24); }

std::string FormatSize(size_t bytes) {
  if (bytes % (1 << 20) == 0) return absl::StrCat(bytes >> 20, "MiB");
  if (bytes % (1 << 10) == 0) return absl::StrCat(bytes >> 10, "KiB");
  return absl::StrCat(bytes, "B");
}

[[noreturn]] void Fatal(const char* what, int err) {
  PC_LOG(kError, "%s: %s", what, std::strerror(err));
  std::abort();
}

}  // namespace

absl::StatusOr<std::unique_ptr<UringLoop>> UringLoop::Create(const LoopOptions& options,
                                                             Handler* handler) {
  const UringProbe& probe = ProbeIoUring();
  if (!probe.usable) return absl::UnavailableError(probe.reason);
  std::unique_ptr<UringLoop> loop(new UringLoop(options, handler));
  absl::Status status = loop->Init(probe);
  if (!status.ok()) return status;
  return loop;
}

absl::Status UringLoop::Init(const UringProbe& probe) {
  const bool best = options_.uring_level == UringLevel::kBest;
  // Setup flags from most to least capable; a kernel that lacks one answers EINVAL.
  // SINGLE_ISSUER binds the ring to the thread that enables it, so the ring starts disabled
  // and Run() enables it on the loop thread.
  std::vector<unsigned> candidates;
  if (best && probe.defer_taskrun) {
    candidates.push_back(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                         IORING_SETUP_R_DISABLED);
  }
  if (best && probe.coop_taskrun) candidates.push_back(IORING_SETUP_COOP_TASKRUN);
  candidates.push_back(0);
  int ret = -EINVAL;
  for (unsigned flags : candidates) {
    io_uring_params params{};
    params.flags = flags | IORING_SETUP_CQSIZE;
    params.cq_entries = kCqEntries;
    ret = io_uring_queue_init_params(kSqEntries, &ring_, &params);
    if (ret == 0) {
      setup_flags_ = flags;
      break;
    }
  }
  if (ret < 0) {
    return absl::UnavailableError(absl::StrCat("io_uring_queue_init: ", std::strerror(-ret)));
  }
  ring_ready_ = true;

  wake_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!wake_fd_) return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));

  // A registered ring fd spares io_uring_enter the fd lookup on every call (Linux 5.18+). The
  // registration is per thread: try it here, and again on the loop thread in Run().
  if (best && io_uring_register_ring_fd(&ring_) == 1) {
    register_ring_fd_ = true;
    (void)io_uring_unregister_ring_fd(&ring_);
  }

  // Sockets in the registered file table: a sparse table (Linux 5.19+), else one of -1s.
  if (const uint32_t n = FixedFileTableSize(); n > 0) {
    if (io_uring_register_files_sparse(&ring_, n) == 0) {
      fixed_files_ = n;
    } else {
      std::vector<int> empty(n, -1);
      if (io_uring_register_files(&ring_, empty.data(), n) == 0) fixed_files_ = n;
    }
  }

  multishot_accept_ = best && probe.multishot_accept;
  multishot_recv_ = best && probe.multishot_recv && probe.buf_ring && SetUpBufferRing();

  std::vector<std::string> parts;
  parts.push_back(multishot_accept_ ? "multishot accept" : "accept");
  if (multishot_recv_) {
    parts.push_back("multishot recv");
    parts.push_back(
        absl::StrCat("buffer ring ", buf_entries_, "x", FormatSize(options_.read_buffer_size)));
  } else {
    parts.push_back(absl::StrCat("recv into per-connection ", FormatSize(options_.read_buffer_size),
                                 " buffers"));
  }
  if (setup_flags_ & IORING_SETUP_DEFER_TASKRUN) {
    parts.push_back("SINGLE_ISSUER|DEFER_TASKRUN");
  } else if (setup_flags_ & IORING_SETUP_COOP_TASKRUN) {
    parts.push_back("COOP_TASKRUN");
  }
  if (register_ring_fd_) parts.push_back("registered ring fd");
  if (fixed_files_ > 0) parts.push_back(absl::StrCat("registered sockets (", fixed_files_, ")"));
  if (!best) parts.push_back("basic level");
  description_ = absl::StrCat("io_uring (", absl::StrJoin(parts, ", "), ")");
  return absl::OkStatus();
}

bool UringLoop::SetUpBufferRing() {
  const size_t size = options_.read_buffer_size;
  unsigned entries = kMaxBufEntries;
  while (entries > 16 && entries * size > kMaxBufRingBytes) entries /= 2;
  size_t ring_bytes = entries * sizeof(io_uring_buf);
  void* mem =
      ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) return false;
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(mem);
  reg.ring_entries = entries;
  reg.bgid = kBufGroup;
  int ret = io_uring_register_buf_ring(&ring_, &reg, 0);
  if (ret != 0) {
    PC_LOG(kInfo, "io_uring_register_buf_ring: %s; using per-connection buffers",
           std::strerror(-ret));
    ::munmap(mem, ring_bytes);
    return false;
  }
  buf_ring_ = static_cast<io_uring_buf_ring*>(mem);
  buf_ring_bytes_ = ring_bytes;
  buf_entries_ = entries;
  buf_base_ = std::make_unique_for_overwrite<char[]>(entries * size);
  io_uring_buf_ring_init(buf_ring_);
  const int mask = io_uring_buf_ring_mask(entries);
  for (unsigned i = 0; i < entries; ++i) {
    io_uring_buf_ring_add(buf_ring_, buf_base_.get() + i * size, static_cast<unsigned>(size),
                          static_cast<unsigned short>(i), mask, static_cast<int>(i));
  }
  io_uring_buf_ring_advance(buf_ring_, static_cast<int>(entries));
  return true;
}

UringLoop::~UringLoop() {
  // Run() returns only after every operation that names loop or connection memory completed,
  // so tearing the ring down cannot race with the kernel writing into our buffers.
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (buf_ring_ != nullptr) ::munmap(buf_ring_, buf_ring_bytes_);
}

// ---- The loop ----

void UringLoop::Run() {
  if (setup_flags_ & IORING_SETUP_R_DISABLED) {
    // liburing 2.3 declares io_uring_enable_rings() but does not export it: register directly.
    if (::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS, nullptr,
                  0) != 0) {
      Fatal("IORING_REGISTER_ENABLE_RINGS", errno);
    }
  }
  if (register_ring_fd_ && io_uring_register_ring_fd(&ring_) != 1) {
    PC_LOG(kDebug, "io_uring: ring fd registration failed on the loop thread");
  }
  UpdateNow();
  ArmWake();
  ArmAccept();
  while (true) {
    if (ShutdownComplete()) {
      if (!wake_armed_ && !accept_armed_ && !accept_poll_armed_) break;
      if (wake_armed_ && !wake_cancel_sent_) {
        wake_cancel_sent_ = true;
        Cancel(EncodeTag(Op::kWake), EncodeTag(Op::kCancel));
      }
    }
    int timeout_ms = WaitTimeoutMs();
    int ret;
    if (timeout_ms < 0) {
      ret = io_uring_submit_and_wait(&ring_, 1);
    } else {
      __kernel_timespec ts{};
      ts.tv_sec = timeout_ms / 1000;
      ts.tv_nsec = (timeout_ms % 1000) * 1000000L;
      io_uring_cqe* unused = nullptr;
      ret = io_uring_submit_and_wait_timeout(&ring_, &unused, 1, &ts, nullptr);
    }
    if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN) {
      Fatal("io_uring_submit_and_wait", -ret);
    }
    UpdateNow();
    io_uring_cqe* cqe = nullptr;
    for (int i = 0; i < kMaxCompletionsPerIteration && io_uring_peek_cqe(&ring_, &cqe) == 0; ++i) {
      io_uring_cqe copy = *cqe;
      io_uring_cqe_seen(&ring_, cqe);  // frees the CQ slot now: handlers may submit
      HandleCompletion(copy);
    }
    OnTimers();
    ProcessDirty();
  }
}

io_uring_sqe* UringLoop::GetSqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  for (int tries = 0; sqe == nullptr; ++tries) {
    int ret = io_uring_submit(&ring_);
    if (ret < 0 && ret != -EBUSY && ret != -EAGAIN && ret != -EINTR) Fatal("io_uring_submit", -ret);
    if (tries > 10000) Fatal("io_uring_submit made no progress", -ret);
    sqe = io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void UringLoop::Cancel(uint64_t target_tag, uint64_t own_tag) {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_cancel64(sqe, target_tag, 0);
  io_uring_sqe_set_data64(sqe, own_tag);
}

void UringLoop::HandleCompletion(const io_uring_cqe& cqe) {
  if (cqe.user_data == LIBURING_UDATA_TIMEOUT) return;  // liburing's wait timeout (pre-5.11)
  Tag tag = DecodeTag(cqe.user_data);
  switch (tag.op) {
    case Op::kWake:
      OnWake(cqe.res);
      break;
    case Op::kAccept:
      OnAccept(cqe.res, cqe.flags);
      break;
    case Op::kAcceptPoll:
      OnAcceptPoll(cqe.res);
      break;
    case Op::kRecv:
      OnRecv(tag, cqe.res, cqe.flags);
      break;
    case Op::kSend:
      OnSend(tag, cqe.res);
      break;
    case Op::kCancelRecv:
      OnCancelRecv(tag, cqe.res);
      break;
    case Op::kCancel:
      break;
    default:
      PC_LOG(kDebug, "unexpected io_uring completion tag %#llx",
             static_cast<unsigned long long>(cqe.user_data));
      break;
  }
}

// ---- Wakeups ----

void UringLoop::WakeUp() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
}

void UringLoop::ArmWake() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_read(sqe, wake_fd_.get(), &wake_value_, sizeof(wake_value_), 0);
  io_uring_sqe_set_data64(sqe, EncodeTag(Op::kWake));
  wake_armed_ = true;
}

void UringLoop::OnWake(int res) {
  wake_armed_ = false;
  RunPosted();
  if (wake_cancel_sent_) return;
  if (res < 0 && res != -EINTR && res != -EAGAIN && res != -ECANCELED) {
    Fatal("eventfd read", -res);
  }
  ArmWake();
}

// ---- Accepting ----

void UringLoop::ArmAccept() {
  int fd = listener_fd();
  if (accept_armed_ || accept_poll_armed_ || accept_paused_ || !accepting() || fd < 0) return;
  io_uring_sqe* sqe = GetSqe();
  // No SOCK_NONBLOCK: io_uring gives blocking sockets their waiting semantics (it polls
  // internally) whereas a non-blocking socket can surface -EAGAIN from a recv or send.
  if (multishot_accept_) {
    io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, fd, nullptr, nullptr, SOCK_CLOEXEC);
  }
  io_uring_sqe_set_data64(sqe, EncodeTag(Op::kAccept));
  accept_armed_ = true;
}

void UringLoop::ArmAcceptPoll() {
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_poll_add(sqe, listener_fd(), POLLIN);
  io_uring_sqe_set_data64(sqe, EncodeTag(Op::kAcceptPoll));
  accept_poll_armed_ = true;
}

void UringLoop::OnAccept(int res, uint32_t flags) {
  if (!(flags & IORING_CQE_F_MORE)) accept_armed_ = false;
  if (res >= 0) {
    AcceptedSocket(res);
  } else if (res == -EAGAIN) {
    // The listener is non-blocking and some kernels then answer EAGAIN instead of waiting.
    if (!accept_armed_ && accepting()) ArmAcceptPoll();
  } else if (res != -ECANCELED && accepting()) {
    AcceptFailed(-res);
  }
  if (!accepting()) {
    if (!accept_armed_ && !accept_poll_armed_) CloseListener();
    return;
  }
  ArmAccept();
}

void UringLoop::OnAcceptPoll(int res) {
  accept_poll_armed_ = false;
  if (!accepting()) {
    if (!accept_armed_) CloseListener();
    return;
  }
  ArmAccept();
}

void UringLoop::StopListener() {
  int fd = listener_fd();
  if (fd < 0) return;
  // Takes the socket out of its SO_REUSEPORT group and wakes a pending accept even on kernels
  // where it sleeps in a worker thread; the cancels cover the rest.
  ::shutdown(fd, SHUT_RDWR);
  if (accept_armed_) Cancel(EncodeTag(Op::kAccept), EncodeTag(Op::kCancel));
  if (accept_poll_armed_) Cancel(EncodeTag(Op::kAcceptPoll), EncodeTag(Op::kCancel));
  if (!accept_armed_ && !accept_poll_armed_) CloseListener();
}

void UringLoop::SetAcceptPaused(bool paused) {
  accept_paused_ = paused;
  if (!paused) {
    ArmAccept();
  } else if (accept_armed_) {
    Cancel(EncodeTag(Op::kAccept), EncodeTag(Op::kCancel));
  }
}

// ---- Connections ----

uint32_t UringLoop::FixedFileTableSize() const {
  // One entry per connection slot this loop can use, within the process's open-file limit
  // (the kernel refuses a larger table) and a bound on the table's kernel memory.
  rlimit limit{};
  uint64_t n = std::min<uint64_t>(options_.max_connections, 65536);
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    n = std::min<uint64_t>(n, limit.rlim_cur);
  }
  return static_cast<uint32_t>(n);
}

bool UringLoop::AttachConnection(Connection& c) {
  if (!multishot_recv_) {
    c.recv_buf_ = std::make_unique_for_overwrite<char[]>(options_.read_buffer_size);
  }
  // Registered at the slot's index; a failure only means the plain fd is used.
  if (c.slot_ < fixed_files_) {
    c.fixed_file_ = io_uring_register_files_update(&ring_, c.slot_, &c.fd_, 1) == 1;
  }
  return true;
}

void UringLoop::SetFile(io_uring_sqe* sqe, const Connection& c) const {
  if (c.fixed_file_) {
    sqe->fd = static_cast<int>(c.slot_);
    sqe->flags |= IOSQE_FIXED_FILE;
  }
}

void UringLoop::ArmRecv(Connection& c) {
  io_uring_sqe* sqe = GetSqe();
  if (multishot_recv_) {
    // Buffers come from the ring as data arrives: idle connections hold no buffer.
    io_uring_prep_recv_multishot(sqe, c.fd_, nullptr, 0, 0);
    SetFile(sqe, c);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufGroup;
  } else {
    // The kernel owns c.recv_buf_ until this recv completes.
    io_uring_prep_recv(sqe, c.fd_, c.recv_buf_.get(), options_.read_buffer_size, 0);
    SetFile(sqe, c);
  }
  io_uring_sqe_set_data64(sqe, EncodeTag(Op::kRecv, c.slot_, GenOf(c)));
  c.read_armed_ = true;
}

void UringLoop::CancelRecv(Connection& c) {
  Cancel(EncodeTag(Op::kRecv, c.slot_, GenOf(c)), EncodeTag(Op::kCancelRecv, c.slot_, GenOf(c)));
  c.recv_cancel_sent_ = true;
}

void UringLoop::SetReadInterest(Connection& c, bool want) {
  if (want) {
    // A recv is re-armed only after the cancel of the previous one has completed, so the
    // cancel (which names the recv by tag) cannot hit its successor.
    if (!c.read_armed_ && !c.recv_cancel_sent_) ArmRecv(c);
  } else if (c.read_armed_ && multishot_recv_ && !c.recv_cancel_sent_) {
    // A single-shot recv finishes after at most one buffer; a multishot one must be stopped.
    CancelRecv(c);
  }
}

void UringLoop::RecycleBuffer(uint16_t bid) {
  const size_t size = options_.read_buffer_size;
  io_uring_buf_ring_add(buf_ring_, buf_base_.get() + bid * size, static_cast<unsigned>(size), bid,
                        io_uring_buf_ring_mask(buf_entries_), 0);
  io_uring_buf_ring_advance(buf_ring_, 1);
}

void UringLoop::OnRecv(const Tag& tag, int res, uint32_t flags) {
  const bool has_buffer = (flags & IORING_CQE_F_BUFFER) != 0;
  const uint16_t bid = static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT);
  Connection* c = FindBySlot(tag.slot, tag.gen);
  if (c == nullptr) {  // cannot happen: a slot outlives its operations
    if (has_buffer) RecycleBuffer(bid);
    return;
  }
  if (!(flags & IORING_CQE_F_MORE)) c->read_armed_ = false;
  if (res > 0) {
    const char* data =
        has_buffer ? buf_base_.get() + bid * options_.read_buffer_size : c->recv_buf_.get();
    if (!c->closing_) OnBytesRead(*c, data, static_cast<size_t>(res));
    if (has_buffer) RecycleBuffer(bid);
  } else {
    if (has_buffer) RecycleBuffer(bid);
    if (!c->closing_ && res == 0) {
      OnPeerEof(*c);
    } else if (!c->closing_ && res != -ENOBUFS && res != -ECANCELED && res != -EINTR &&
               res != -EAGAIN) {
      Abort(*c, -res, "recv");  // ECONNRESET and friends; may free c
      return;
    }
    // -ENOBUFS: the buffer ring ran dry (every buffer is back by the end of this iteration).
    // -ECANCELED: reading stopped for back-pressure. Either way the end-of-iteration pass
    // re-arms the recv if reading is wanted.
  }
  if (c->closing_) {
    FreeIfIdle(*c);
  } else if (!c->read_armed_) {
    MarkDirty(*c);
  }
}

void UringLoop::OnCancelRecv(const Tag& tag, int res) {
  Connection* c = FindBySlot(tag.slot, tag.gen);
  if (c == nullptr) return;
  c->recv_cancel_sent_ = false;
  // -EALREADY: the recv was running and may survive the cancel; try again if still needed.
  if (c->closing_) {
    if (res == -EALREADY && c->read_armed_) CancelRecv(*c);
    return;
  }
  MarkDirty(*c);
}

void UringLoop::StartSend(Connection& c) {
  // The kernel reads c.sending_[sending_off_, ...) until the completion; the loop leaves
  // sending_ alone while send_busy_ and the handler only ever appends to out_.
  size_t len = std::min(c.sending_.size() - c.sending_off_, kMaxSendBytes);
  io_uring_sqe* sqe = GetSqe();
  io_uring_prep_send(sqe, c.fd_, c.sending_.data() + c.sending_off_, len, MSG_NOSIGNAL);
  SetFile(sqe, c);
  io_uring_sqe_set_data64(sqe, EncodeTag(Op::kSend, c.slot_, GenOf(c)));
  c.send_busy_ = true;
}

void UringLoop::OnSend(const Tag& tag, int res) {
  Connection* c = FindBySlot(tag.slot, tag.gen);
  if (c == nullptr) return;
  c->send_busy_ = false;
  if (c->closing_) {
    FreeIfIdle(*c);
    return;
  }
  if (res <= 0) {
    Abort(*c, res < 0 ? -res : EPIPE, "send");  // EPIPE, ECONNRESET: the peer is gone
    return;
  }
  OnBytesSent(*c, static_cast<size_t>(res));
  MarkDirty(*c);  // continue a short send, send the next batch, resume reading or close
}

void UringLoop::ReleaseConnection(Connection& c) {
  // Graceful: all output was sent; half-close so the peer sees EOF after it. Abortive: also
  // shut down reading, which completes a pending recv or send on any kernel.
  ::shutdown(c.fd_, c.graceful_ ? SHUT_WR : SHUT_RDWR);
  if (c.read_armed_ && !c.recv_cancel_sent_) CancelRecv(c);
  if (c.send_busy_) {
    Cancel(EncodeTag(Op::kSend, c.slot_, GenOf(c)), EncodeTag(Op::kCancel));
  }
  FreeIfIdle(c);
}

void UringLoop::FreeIfIdle(Connection& c) {
  // The slot and its buffers stay until the kernel has returned every one of them.
  if (c.read_armed_ || c.send_busy_) return;
  if (c.fixed_file_) {
    // The table holds its own reference to the socket: drop it, or closing the fd would not
    // close the connection. No operation on the slot is in flight any more.
    const int none = -1;
    if (io_uring_register_files_update(&ring_, c.slot_, &none, 1) != 1) {
      PC_LOG(kWarning, "io_uring: unregistering socket %d failed", c.fd_);
    }
    c.fixed_file_ = false;
  }
  FreeConnection(c);
}

}  // namespace petracache::io::internal

#endif  // PETRACACHE_HAVE_IO_URING
