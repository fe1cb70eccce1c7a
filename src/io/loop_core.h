// LoopCore: what both backends share — the connection table, completion tags, handler
// dispatch, back-pressure, close rules, timers, Post() and graceful shutdown.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "io/event_loop.h"

namespace petracache::io::internal {

// What an io_uring user_data / epoll_event.data names. One tag type for every backend.
enum class Op : uint8_t {
  kNone = 0,
  kWake,        // eventfd read (io_uring) or readiness (epoll): run posted functions
  kListen,      // epoll: the listener is readable
  kAccept,      // io_uring: accept (single-shot or multishot)
  kAcceptPoll,  // io_uring: the listener returned EAGAIN; wait for readability
  kRecv,        // io_uring: recv on a connection (single-shot or multishot)
  kSend,        // io_uring: send on a connection
  kCancelRecv,  // io_uring: cancel of a connection's multishot recv (back-pressure)
  kCancel,      // io_uring: any other cancel; its completion needs no action
  kConn,        // epoll: a connection socket is ready
};

// Layout: op (8 bits) | connection slot (24 bits) | slot generation (32 bits). A slot's
// generation changes when the slot is freed, and a slot is freed only after every operation
// naming it has completed, so a tag never reaches a later occupant of its slot.
struct Tag {
  Op op = Op::kNone;
  uint32_t slot = 0;
  uint32_t gen = 0;
};
inline constexpr uint32_t kMaxSlots = 1u << 24;
inline uint64_t EncodeTag(Op op, uint32_t slot = 0, uint32_t gen = 0) {
  return (uint64_t{static_cast<uint8_t>(op)} << 56) | (uint64_t{slot & (kMaxSlots - 1)} << 32) |
         gen;
}
inline Tag DecodeTag(uint64_t v) {
  return Tag{static_cast<Op>(v >> 56), static_cast<uint32_t>(v >> 32) & (kMaxSlots - 1),
             static_cast<uint32_t>(v)};
}

class LoopCore : public EventLoop {
 public:
  ~LoopCore() override;

  void Post(absl::AnyInvocable<void()> fn) final;
  void PostToConnection(uint64_t conn_id, absl::AnyInvocable<void(Connection&)> fn) final;
  void StopAccepting() final;
  void Shutdown() final;
  std::string Description() const final { return description_; }
  const LoopStats& stats() const final { return stats_; }

  // Queues `c` for the end-of-iteration pass (dispatch, send, close, read interest).
  void MarkDirty(Connection& c);
  // The loop now owns options.listen_fd (called by EventLoop::Create on success).
  void AdoptListener() { owns_listener_ = true; }

 protected:
  LoopCore(const LoopOptions& options, Handler* handler);

  // ---- Backend hooks, called on the loop thread unless noted. ----
  // Any thread: make the loop thread call RunPosted() soon.
  virtual void WakeUp() = 0;
  // Stop accepting for good; close the listener (CloseListener) once no operation uses it.
  virtual void StopListener() = 0;
  // Temporarily stop / restart accepting (back-off after EMFILE and similar).
  virtual void SetAcceptPaused(bool paused) = 0;
  // Register a new connection with the backend; false closes it before OnOpen.
  virtual bool AttachConnection(Connection& c) = 0;
  // c.sending_ has unsent bytes and nothing is being sent: start writing them.
  virtual void StartSend(Connection& c) = 0;
  // Start or stop reading `c` (called after every pass over a dirty connection).
  virtual void SetReadInterest(Connection& c, bool want) = 0;
  // OnClose has run: stop all I/O on `c` and call FreeConnection(c) once the kernel no longer
  // uses any of its buffers (possibly right away).
  virtual void ReleaseConnection(Connection& c) = 0;

  // ---- Shared machinery for the backends. ----
  // A socket returned by accept: applies the cap and TCP_NODELAY, opens a connection.
  void AcceptedSocket(int fd);
  // accept failed with `err`: transient errors are ignored, resource errors pause accepting.
  void AcceptFailed(int err);
  // The connection in `slot` if it has generation `gen` (closing connections included).
  Connection* FindBySlot(uint32_t slot, uint32_t gen) const;
  // An open (not closing) connection, or nullptr.
  Connection* FindOpen(uint64_t id) const;
  void OnBytesRead(Connection& c, const char* data, size_t n);
  void OnPeerEof(Connection& c);
  void OnBytesSent(Connection& c, size_t n);
  // Closes `c` abortively after an I/O error (logged at debug level).
  void Abort(Connection& c, int err, const char* what);
  // Runs OnClose (once) and hands the socket to ReleaseConnection.
  void CloseConnection(Connection& c, bool graceful);
  // Closes the socket (after draining unread input when graceful, so the close sends FIN
  // rather than RST) and frees the slot. `c` is gone afterwards.
  void FreeConnection(Connection& c);
  // Prepares c.sending_ for the next write: releases a fully sent batch and swaps in out_.
  // Returns whether there is anything to send. Only when !c.send_busy_.
  bool RotateOutput(Connection& c);
  // Closes the listener if this loop owns it.
  void CloseListener();

  void RunPosted();
  // The end-of-iteration pass over dirty connections.
  void ProcessDirty();
  // Idle sweep, shutdown deadline, accept back-off.
  void OnTimers();
  // How long the backend may block: -1 = until an event.
  int WaitTimeoutMs() const;
  void UpdateNow();
  bool WantRead(const Connection& c) const;
  bool accepting() const { return accepting_; }
  // The listener, or -1 once closed (or if there never was one).
  int listener_fd() const { return listener_closed_ ? -1 : listen_fd_; }
  // Shutdown() was processed and every connection is gone.
  bool ShutdownComplete() const { return shutting_down_ && live_ == 0; }

  const LoopOptions options_;
  Handler* const handler_;
  const int listen_fd_;
  std::string description_;
  LoopStats stats_;
  std::unique_ptr<char[]> scratch_;  // read_buffer_size bytes for synchronous reads
  int64_t now_ms_ = 0;

 private:
  struct Slot {
    uint32_t gen = 1;
    std::unique_ptr<Connection> conn;
  };

  // Calls OnInput while there is input to show; returns whether it called at all.
  bool Dispatch(Connection& c);
  void CompactInput(Connection& c);
  void FlushOutput(Connection& c);
  bool ReadyToClose(const Connection& c) const;
  bool DispatchPending(const Connection& c) const;
  void StopAcceptingNow();
  void BeginShutdown();
  void Reject(int fd);
  void DrainAndClose(int fd);

  std::vector<Slot> slots_;
  std::vector<uint32_t> free_slots_;
  size_t live_ = 0;  // connections with a slot, closing ones included

  std::vector<uint64_t> dirty_;  // ids; a freed connection's id simply no longer resolves
  std::vector<uint64_t> dirty_batch_;

  std::atomic<int64_t> local_open_{0};
  std::atomic<int64_t>* const open_;

  bool owns_listener_ = false;
  bool listener_closed_ = false;
  bool accepting_;
  int64_t accept_retry_at_ms_ = 0;  // 0: not backing off
  bool shutting_down_ = false;
  int64_t shutdown_deadline_ms_ = 0;
  int64_t next_idle_sweep_ms_ = 0;

  // std::mutex rather than absl::Mutex: ThreadSanitizer sees it (absl is an uninstrumented
  // system library here), and the critical sections are a vector push / swap.
  std::mutex post_mu_;
  std::vector<absl::AnyInvocable<void()>> posted_;  // guarded by post_mu_
  std::atomic<bool> wake_pending_{false};
};

}  // namespace petracache::io::internal
