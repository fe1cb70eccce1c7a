// LoopCore: the backend-independent half of an event loop.
#include "io/loop_core.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <utility>

#include "common/logging.h"

namespace petracache::io {

// ---- Connection ----

Connection::Connection(internal::LoopCore* loop, int fd, uint64_t id, uint32_t slot,
                       size_t max_pending_output)
    : loop_(loop), fd_(fd), id_(id), slot_(slot), max_pending_output_(max_pending_output) {}

Connection::~Connection() = default;

void Connection::Consume(size_t n) {
  assert(n <= in_visible_ - in_begin_);
  in_begin_ += std::min(n, in_visible_ - in_begin_);
}

std::string& Connection::output() {
  loop_->MarkDirty(*this);
  return out_;
}

void Connection::CloseAfterWrite() {
  close_after_write_ = true;
  loop_->MarkDirty(*this);
}

void Connection::Wake() { loop_->MarkDirty(*this); }

void Connection::NotifyWhenDrained() {
  drain_call_ = true;
  loop_->MarkDirty(*this);
}

void Connection::SetPaused(bool paused) {
  if (paused_ == paused) return;
  paused_ = paused;
  if (!paused) {
    needs_call_ = in_visible_ > in_begin_;
    loop_->MarkDirty(*this);
  }
}

namespace internal {
namespace {

// Resource errors from accept: back off instead of spinning on a listener that stays readable.
constexpr int64_t kAcceptBackoffMs = 100;
constexpr int64_t kIdleSweepMs = 1000;
// Buffers larger than this are released when they empty, so one big request or reply does not
// pin memory on an idle connection.
constexpr size_t kKeepCapacity = 256 << 10;
// Bytes of unread input read and dropped before a graceful close.
constexpr size_t kMaxDrainBytes = 256 << 10;

int64_t MonotonicMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

LoopCore::LoopCore(const LoopOptions& options, Handler* handler)
    : options_(options),
      handler_(handler),
      listen_fd_(options.listen_fd),
      scratch_(std::make_unique_for_overwrite<char[]>(options.read_buffer_size)),
      open_(options.open_connections != nullptr ? options.open_connections : &local_open_),
      accepting_(options.listen_fd >= 0) {
  UpdateNow();
  next_idle_sweep_ms_ = now_ms_ + kIdleSweepMs;
}

LoopCore::~LoopCore() {
  // Only reached with connections left if Run() never finished; close them quietly.
  for (Slot& slot : slots_) {
    if (slot.conn == nullptr) continue;
    if (!slot.conn->closing_) handler_->OnClose(*slot.conn);
    ::close(slot.conn->fd_);
    open_->fetch_sub(1, std::memory_order_relaxed);
  }
  CloseListener();
}

void LoopCore::UpdateNow() { now_ms_ = MonotonicMs(); }

// ---- Thread-safe entry points ----

void LoopCore::Post(absl::AnyInvocable<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    posted_.push_back(std::move(fn));
  }
  // seq_cst pairs with the store in RunPosted: either the loop sees this function in its next
  // batch or this call sees the flag cleared and wakes it.
  if (!wake_pending_.exchange(true)) WakeUp();
}

void LoopCore::PostToConnection(uint64_t conn_id, absl::AnyInvocable<void(Connection&)> fn) {
  Post([this, conn_id, fn = std::move(fn)]() mutable {
    Connection* c = FindOpen(conn_id);
    if (c == nullptr) return;
    fn(*c);
    MarkDirty(*c);
  });
}

void LoopCore::StopAccepting() {
  Post([this] { StopAcceptingNow(); });
}

void LoopCore::Shutdown() {
  Post([this] { BeginShutdown(); });
}

void LoopCore::RunPosted() {
  wake_pending_.store(false);
  std::vector<absl::AnyInvocable<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(post_mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

// ---- Connection table ----

Connection* LoopCore::FindBySlot(uint32_t slot, uint32_t gen) const {
  if (slot >= slots_.size()) return nullptr;
  const Slot& s = slots_[slot];
  return s.gen == gen ? s.conn.get() : nullptr;
}

Connection* LoopCore::FindOpen(uint64_t id) const {
  Connection* c =
      FindBySlot(static_cast<uint32_t>(id & (kMaxSlots - 1)), static_cast<uint32_t>(id >> 24));
  return c != nullptr && !c->closing_ ? c : nullptr;
}

void LoopCore::AcceptedSocket(int fd) {
  if (!accepting_ || shutting_down_) {
    ::close(fd);
    return;
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int64_t before = open_->fetch_add(1, std::memory_order_relaxed);
  if (before >= static_cast<int64_t>(options_.max_connections) ||
      (free_slots_.empty() && slots_.size() >= kMaxSlots)) {
    open_->fetch_sub(1, std::memory_order_relaxed);
    Reject(fd);
    return;
  }
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = static_cast<uint32_t>(slots_.size());
    slots_.emplace_back();
  }
  Slot& s = slots_[slot];
  uint64_t id = (uint64_t{s.gen} << 24) | slot;
  s.conn.reset(new Connection(this, fd, id, slot, options_.max_pending_output));
  Connection& c = *s.conn;
  c.last_active_ms_ = now_ms_;
  ++live_;
  stats_.curr_connections.fetch_add(1, std::memory_order_relaxed);
  stats_.total_connections.fetch_add(1, std::memory_order_relaxed);
  if (!AttachConnection(c)) {
    PC_LOG(kWarning, "cannot register connection %d with the event loop", fd);
    c.closing_ = true;  // never opened: no OnClose
    FreeConnection(c);
    return;
  }
  handler_->OnOpen(c);
  MarkDirty(c);
}

void LoopCore::AcceptFailed(int err) {
  switch (err) {
    case EAGAIN:
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM:  // refused by a firewall rule
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case ETIMEDOUT:
      return;
    default:
      break;
  }
  if (accept_retry_at_ms_ != 0 || !accepting_) return;
  PC_LOG(kWarning, "accept failed: %s; pausing accepts for %d ms", std::strerror(err),
         static_cast<int>(kAcceptBackoffMs));
  accept_retry_at_ms_ = now_ms_ + kAcceptBackoffMs;
  SetAcceptPaused(true);
}

void LoopCore::Reject(int fd) {
  stats_.rejected_connections.fetch_add(1, std::memory_order_relaxed);
  if (!options_.reject_message.empty()) {
    // A fresh socket's send buffer is empty, so this small write does not block.
    ssize_t n = ::send(fd, options_.reject_message.data(), options_.reject_message.size(),
                       MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) stats_.bytes_written.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }
  DrainAndClose(fd);
}

void LoopCore::DrainAndClose(int fd) {
  ::shutdown(fd, SHUT_WR);
  size_t drained = 0;
  while (drained < kMaxDrainBytes) {
    ssize_t n = ::recv(fd, scratch_.get(), options_.read_buffer_size, MSG_DONTWAIT);
    if (n <= 0) break;
    drained += static_cast<size_t>(n);
  }
  ::close(fd);
}

void LoopCore::CloseConnection(Connection& c, bool graceful) {
  if (c.closing_) return;
  c.closing_ = true;
  c.graceful_ = graceful;
  handler_->OnClose(c);
  ReleaseConnection(c);
}

void LoopCore::Abort(Connection& c, int err, const char* what) {
  PC_LOG(kDebug, "connection %d: %s: %s", c.fd_, what, std::strerror(err));
  CloseConnection(c, /*graceful=*/false);
}

void LoopCore::FreeConnection(Connection& c) {
  if (c.graceful_) {
    DrainAndClose(c.fd_);
  } else {
    ::close(c.fd_);
  }
  uint32_t slot = c.slot_;
  Slot& s = slots_[slot];
  s.conn.reset();
  if (++s.gen == 0) s.gen = 1;
  free_slots_.push_back(slot);
  --live_;
  open_->fetch_sub(1, std::memory_order_relaxed);
  stats_.curr_connections.fetch_sub(1, std::memory_order_relaxed);
}

void LoopCore::CloseListener() {
  if (owns_listener_ && !listener_closed_ && listen_fd_ >= 0) ::close(listen_fd_);
  listener_closed_ = true;
}

// ---- Data path ----

void LoopCore::OnBytesRead(Connection& c, const char* data, size_t n) {
  CompactInput(c);
  c.in_.append(data, n);
  c.last_active_ms_ = now_ms_;
  stats_.bytes_read.fetch_add(n, std::memory_order_relaxed);
  MarkDirty(c);
}

void LoopCore::OnPeerEof(Connection& c) {
  c.peer_eof_ = true;
  MarkDirty(c);
}

void LoopCore::OnBytesSent(Connection& c, size_t n) {
  c.sending_off_ += n;
  c.last_active_ms_ = now_ms_;
  stats_.bytes_written.fetch_add(n, std::memory_order_relaxed);
}

void LoopCore::MarkDirty(Connection& c) {
  if (c.dirty_ || c.closing_) return;
  c.dirty_ = true;
  dirty_.push_back(c.id_);
}

void LoopCore::CompactInput(Connection& c) {
  if (c.in_begin_ == c.in_.size()) {
    c.in_.clear();
    c.in_begin_ = c.in_visible_ = 0;
    if (c.in_.capacity() > kKeepCapacity) c.in_.shrink_to_fit();
  } else if (c.in_begin_ > 0 && c.in_begin_ >= c.in_.size() / 2) {
    // Moves at most as many bytes as were consumed since the last move: amortised O(1).
    c.in_.erase(0, c.in_begin_);
    c.in_visible_ -= c.in_begin_;
    c.in_begin_ = 0;
  }
}

bool LoopCore::Dispatch(Connection& c) {
  // Also while shutting down: requests that already arrived are answered (nothing new is read,
  // and the shutdown deadline bounds it), so a reply produced in pieces is finished.
  bool called = false;
  while (!c.closing_ && !c.close_after_write_ && !c.paused_ && !c.OutputFull()) {
    bool hidden = c.in_visible_ < c.in_.size();
    if (!hidden && (!c.needs_call_ || c.in_visible_ == c.in_begin_)) {
      c.needs_call_ = false;
      return called;
    }
    c.in_visible_ = std::min(c.in_.size(), c.in_visible_ + options_.read_buffer_size);
    c.needs_call_ = false;
    handler_->OnInput(c);
    called = true;
    // A handler that stopped early because the output is full gets called again after it
    // drains.
    if (c.OutputFull() && c.in_visible_ > c.in_begin_) c.needs_call_ = true;
  }
  return called;
}

bool LoopCore::DispatchPending(const Connection& c) const {
  return !c.closing_ && !c.close_after_write_ && !c.paused_ && !c.OutputFull() &&
         (c.in_visible_ < c.in_.size() || (c.needs_call_ && c.in_visible_ > c.in_begin_));
}

bool LoopCore::RotateOutput(Connection& c) {
  if (c.sending_off_ == c.sending_.size() && !c.sending_.empty()) {
    c.sending_.clear();
    c.sending_off_ = 0;
    if (c.sending_.capacity() > kKeepCapacity) c.sending_.shrink_to_fit();
  }
  if (c.sending_.empty()) {
    if (c.out_.empty()) return false;
    std::swap(c.out_, c.sending_);
  }
  return true;
}

void LoopCore::FlushOutput(Connection& c) {
  if (!c.send_busy_ && RotateOutput(c)) StartSend(c);
}

bool LoopCore::ReadyToClose(const Connection& c) const {
  if (c.pending_output() > 0 || c.send_busy_) return false;
  if (c.close_after_write_) return true;
  if (shutting_down_) {
    // Close once everything that arrived has been answered (and the answers sent).
    return !c.paused_ && c.in_visible_ == c.in_.size() && !c.needs_call_;
  }
  if (c.peer_eof_) {
    // The peer sends nothing more: close once the handler has seen everything and answered.
    return !c.paused_ && c.in_visible_ == c.in_.size() && !c.needs_call_;
  }
  return false;
}

bool LoopCore::WantRead(const Connection& c) const {
  if (c.closing_ || c.peer_eof_ || c.close_after_write_ || shutting_down_) return false;
  if (c.OutputFull()) return false;
  size_t buffered = c.in_.size() - c.in_begin_;
  if (buffered < options_.max_pending_input) return true;
  // Over the input limit, keep reading only when the handler has seen every byte and is
  // waiting for the rest of a request (request size limits are the handler's business).
  return !c.paused_ && c.in_visible_ == c.in_.size() && !c.needs_call_;
}

void LoopCore::ProcessDirty() {
  while (!dirty_.empty()) {
    dirty_batch_.swap(dirty_);
    // dirty_ stays set during both passes: whatever the handler does meanwhile (output(),
    // SetPaused, CloseAfterWrite, Wake) is handled by the second pass without queueing the
    // connection again.
    bool dispatched = false;
    for (uint64_t id : dirty_batch_) {
      Connection* c = FindOpen(id);
      if (c == nullptr) continue;
      if (c->drain_call_ && !c->OutputFull() && !c->close_after_write_) {
        c->drain_call_ = false;
        handler_->OnDrained(*c);
        dispatched = true;
      }
      dispatched |= Dispatch(*c);
    }
    // Every reply of the batch exists now; none has been sent.
    if (dispatched) handler_->OnBatchEnd();
    for (uint64_t id : dirty_batch_) {
      // Steps that can close the connection may also free it: look it up again after each.
      Connection* c = FindOpen(id);
      if (c == nullptr) continue;
      CompactInput(*c);
      FlushOutput(*c);  // epoll writes synchronously and closes on a send error
      if ((c = FindOpen(id)) == nullptr) continue;
      if (ReadyToClose(*c)) {
        CloseConnection(*c, /*graceful=*/true);
        continue;
      }
      SetReadInterest(*c, WantRead(*c));
      if ((c = FindOpen(id)) == nullptr) continue;
      c->dirty_ = false;
      // The send above drained output that held back dispatch: go round once more.
      if (DispatchPending(*c) ||
          (c->drain_call_ && !c->OutputFull() && !c->close_after_write_)) {
        MarkDirty(*c);
      }
    }
    dirty_batch_.clear();
  }
}

// ---- Timers and shutdown ----

int LoopCore::WaitTimeoutMs() const {
  int64_t next = INT64_MAX;
  if (options_.idle_timeout_seconds > 0 && live_ > 0) next = next_idle_sweep_ms_;
  if (shutting_down_ && live_ > 0) next = std::min(next, shutdown_deadline_ms_);
  if (accept_retry_at_ms_ != 0) next = std::min(next, accept_retry_at_ms_);
  if (next == INT64_MAX) return -1;
  return static_cast<int>(std::clamp<int64_t>(next - now_ms_, 0, INT_MAX));
}

void LoopCore::OnTimers() {
  if (accept_retry_at_ms_ != 0 && now_ms_ >= accept_retry_at_ms_) {
    accept_retry_at_ms_ = 0;
    if (accepting_) SetAcceptPaused(false);
  }
  if (shutting_down_ && now_ms_ >= shutdown_deadline_ms_) {
    for (Slot& s : slots_) {
      if (s.conn != nullptr && !s.conn->closing_) {
        Abort(*s.conn, ETIMEDOUT, "shutdown deadline passed with output pending");
      }
    }
  }
  if (options_.idle_timeout_seconds > 0 && now_ms_ >= next_idle_sweep_ms_) {
    next_idle_sweep_ms_ = now_ms_ + kIdleSweepMs;
    int64_t limit_ms = int64_t{options_.idle_timeout_seconds} * 1000;
    for (Slot& s : slots_) {
      Connection* c = s.conn.get();
      // A paused connection waits for the server, not for the client.
      if (c == nullptr || c->closing_ || c->paused_) continue;
      if (now_ms_ - c->last_active_ms_ >= limit_ms) Abort(*c, ETIMEDOUT, "idle timeout");
    }
  }
}

void LoopCore::StopAcceptingNow() {
  if (!accepting_) return;
  accepting_ = false;
  accept_retry_at_ms_ = 0;
  StopListener();
}

void LoopCore::BeginShutdown() {
  if (shutting_down_) return;
  StopAcceptingNow();
  shutting_down_ = true;
  shutdown_deadline_ms_ = now_ms_ + options_.shutdown_timeout_ms;
  for (Slot& s : slots_) {
    if (s.conn != nullptr) MarkDirty(*s.conn);
  }
}

}  // namespace internal
}  // namespace petracache::io
