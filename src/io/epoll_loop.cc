// EpollLoop: level-triggered readiness loop. Reads and writes happen synchronously on the loop
// thread, so the kernel never holds one of our buffers between calls.
#include "io/epoll_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace petracache::io::internal {
namespace {

constexpr int kMaxEvents = 256;
constexpr int kMaxAcceptsPerEvent = 64;
// Reads per readiness event: enough to drain a fast sender without starving other sockets.
constexpr int kMaxReadsPerEvent = 4;

}  // namespace

absl::StatusOr<std::unique_ptr<EpollLoop>> EpollLoop::Create(const LoopOptions& options,
                                                             Handler* handler,
                                                             const std::string& why_not_uring) {
  std::unique_ptr<EpollLoop> loop(new EpollLoop(options, handler));
  loop->epoll_fd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!loop->epoll_fd_) {
    return absl::InternalError(absl::StrCat("epoll_create1: ", std::strerror(errno)));
  }
  loop->wake_fd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!loop->wake_fd_) {
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = EncodeTag(Op::kWake);
  if (::epoll_ctl(loop->epoll_fd_.get(), EPOLL_CTL_ADD, loop->wake_fd_.get(), &ev) != 0) {
    return absl::InternalError(absl::StrCat("epoll_ctl(eventfd): ", std::strerror(errno)));
  }
  if (options.listen_fd >= 0) {
    ev.events = EPOLLIN;
    ev.data.u64 = EncodeTag(Op::kListen);
    if (::epoll_ctl(loop->epoll_fd_.get(), EPOLL_CTL_ADD, options.listen_fd, &ev) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("epoll_ctl(listen fd ", options.listen_fd, "): ", std::strerror(errno)));
    }
    loop->listen_registered_ = true;
  }
  loop->description_ =
      why_not_uring.empty() ? "epoll" : absl::StrCat("epoll (", why_not_uring, ")");
  return loop;
}

void EpollLoop::Run() {
  epoll_event events[kMaxEvents];
  UpdateNow();
  while (!ShutdownComplete()) {
    int n = ::epoll_wait(epoll_fd_.get(), events, kMaxEvents, WaitTimeoutMs());
    if (n < 0) {
      if (errno == EINTR) continue;
      PC_LOG(kError, "epoll_wait: %s", std::strerror(errno));
      return;
    }
    UpdateNow();
    for (int i = 0; i < n; ++i) {
      Tag tag = DecodeTag(events[i].data.u64);
      switch (tag.op) {
        case Op::kWake: {
          uint64_t value;
          while (::read(wake_fd_.get(), &value, sizeof(value)) > 0) {
          }
          RunPosted();
          break;
        }
        case Op::kListen:
          AcceptSome();
          break;
        case Op::kConn: {
          // A connection closed earlier in this batch no longer matches its tag.
          Connection* c = FindBySlot(tag.slot, tag.gen);
          if (c != nullptr && !c->closing_) HandleConnection(*c, events[i].events);
          break;
        }
        default:
          break;
      }
    }
    OnTimers();
    ProcessDirty();
  }
}

void EpollLoop::WakeUp() {
  uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the loop will wake anyway.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_.get(), &one, sizeof(one));
}

void EpollLoop::StopListener() {
  if (listen_registered_) {
    ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, listener_fd(), nullptr);
    listen_registered_ = false;
  }
  CloseListener();
}

void EpollLoop::SetAcceptPaused(bool paused) {
  if (!listen_registered_) return;
  epoll_event ev{};
  ev.events = paused ? 0u : uint32_t{EPOLLIN};
  ev.data.u64 = EncodeTag(Op::kListen);
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, listener_fd(), &ev);
}

void EpollLoop::AcceptSome() {
  for (int i = 0; i < kMaxAcceptsPerEvent && accepting(); ++i) {
    int fd = ::accept4(listener_fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      AcceptedSocket(fd);
      continue;
    }
    int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) return;
    AcceptFailed(err);
    if (err != EINTR && err != ECONNABORTED) return;
  }
}

bool EpollLoop::AttachConnection(Connection& c) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = EncodeTag(Op::kConn, c.slot_, static_cast<uint32_t>(c.id_ >> 24));
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_ADD, c.fd_, &ev) != 0) return false;
  c.epoll_events_ = EPOLLIN;
  c.read_armed_ = true;
  return true;
}

void EpollLoop::UpdateEvents(Connection& c) {
  uint32_t want = 0;
  if (c.read_armed_) want |= EPOLLIN;
  if (c.send_busy_) want |= EPOLLOUT;
  if (want == c.epoll_events_) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = EncodeTag(Op::kConn, c.slot_, static_cast<uint32_t>(c.id_ >> 24));
  if (::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_MOD, c.fd_, &ev) != 0) {
    Abort(c, errno, "epoll_ctl");
    return;
  }
  c.epoll_events_ = want;
}

void EpollLoop::HandleConnection(Connection& c, uint32_t events) {
  if (events & EPOLLERR) {
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(c.fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    Abort(c, err != 0 ? err : ECONNRESET, "socket error");
    return;
  }
  if (events & EPOLLOUT) {
    c.send_busy_ = false;  // writable again: ProcessDirty resumes the send
    MarkDirty(c);
  }
  if (events & (EPOLLIN | EPOLLHUP)) {
    if (c.read_armed_) {
      ReadSome(c);
    } else if ((events & EPOLLHUP) && !(events & EPOLLOUT)) {
      // Hung up while we are not reading (back-pressure, or half-closed by the peer):
      // level-triggered HUP would otherwise fire forever.
      Abort(c, ECONNRESET, "hangup");
    }
  }
}

void EpollLoop::ReadSome(Connection& c) {
  const size_t size = options_.read_buffer_size;
  for (int i = 0; i < kMaxReadsPerEvent; ++i) {
    ssize_t n = ::recv(c.fd_, scratch_.get(), size, 0);
    if (n > 0) {
      OnBytesRead(c, scratch_.get(), static_cast<size_t>(n));
      if (static_cast<size_t>(n) < size || !WantRead(c)) return;
      continue;
    }
    if (n == 0) {
      OnPeerEof(c);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    Abort(c, errno, "recv");
    return;
  }
}

void EpollLoop::StartSend(Connection& c) {
  do {
    ssize_t n = ::send(c.fd_, c.sending_.data() + c.sending_off_,
                       c.sending_.size() - c.sending_off_, MSG_NOSIGNAL);
    if (n > 0) {
      OnBytesSent(c, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c.send_busy_ = true;  // wait for EPOLLOUT
      break;
    } else {
      Abort(c, n < 0 ? errno : EPIPE, "send");
      return;
    }
  } while (RotateOutput(c));
  UpdateEvents(c);
}

void EpollLoop::SetReadInterest(Connection& c, bool want) {
  c.read_armed_ = want;
  UpdateEvents(c);
}

void EpollLoop::ReleaseConnection(Connection& c) {
  ::epoll_ctl(epoll_fd_.get(), EPOLL_CTL_DEL, c.fd_, nullptr);
  FreeConnection(c);
}

}  // namespace petracache::io::internal
