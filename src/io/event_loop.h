// EventLoop: one thread's network loop (io_uring or epoll) that moves bytes between sockets and
// per-connection buffers and hands them to a protocol-agnostic Handler.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"

namespace petracache::io {

namespace internal {
class LoopCore;
class EpollLoop;
class UringLoop;
}  // namespace internal

enum class Backend { kAuto, kIoUring, kEpoll };

// How much of io_uring to use. kBest takes everything this kernel offers: multishot accept,
// multishot recv into a shared provided-buffer ring, and SINGLE_ISSUER|DEFER_TASKRUN (else
// COOP_TASKRUN) setup flags; each missing piece degrades to its kBasic form, so kBest never
// fails where kBasic works. kBasic is what Linux 5.10 offers: single-shot accept, single-shot
// recv into a per-connection buffer, plain setup flags. Tests force kBasic to cover fallbacks.
enum class UringLevel { kBest, kBasic };

struct LoopOptions {
  Backend backend = Backend::kAuto;
  UringLevel uring_level = UringLevel::kBest;
  // A bound, listening socket this loop accepts on (one per loop, see ListenReusePort), or -1
  // for a loop without a listener. EventLoop::Create takes ownership only when it succeeds; the
  // loop closes it in StopAccepting() or on destruction.
  int listen_fd = -1;
  // Cap on open connections across every loop sharing `open_connections`. A connection
  // accepted over the cap gets `reject_message` (best effort, non-blocking) and is closed.
  size_t max_connections = 10000;
  std::atomic<int64_t>* open_connections = nullptr;  // nullptr: the loop counts on its own
  std::string reject_message;
  // Bytes per recv; also the size of each buffer in the io_uring provided-buffer ring. The
  // handler sees at most this many new bytes per OnInput call.
  size_t read_buffer_size = 16384;
  // Back-pressure (see Connection): stop reading a connection while its unsent output is at
  // least this large, and resume once it drains below.
  size_t max_pending_output = 4 << 20;
  // Stop reading while this much received input waits for a paused or output-blocked handler.
  size_t max_pending_input = 4 << 20;
  // Close connections that neither received nor sent a byte for this long. 0 disables it.
  int idle_timeout_seconds = 0;
  // How long Shutdown() waits for pending output to drain before closing connections anyway.
  int shutdown_timeout_ms = 2000;
};

// One client connection. Owned by its loop and only touched on the loop thread (inside Handler
// callbacks and PostToConnection functions). A Connection reference is valid until OnClose
// returns; keep id() rather than a pointer to reach it later.
class Connection {
 public:
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Unique within the loop for its whole lifetime, never reused, never 0. It encodes the
  // connection's slot and that slot's generation.
  uint64_t id() const { return id_; }

  // Received bytes not yet consumed. Views into it stay valid until the current callback
  // returns: between callbacks the loop appends and may move the bytes.
  std::string_view input() const {
    return std::string_view(in_).substr(in_begin_, in_visible_ - in_begin_);
  }
  // Drops the first `n` (<= input().size()) bytes of input(). O(1); the loop compacts later.
  void Consume(size_t n);

  // Replies go here. The loop sends everything appended during an iteration in one send after
  // the callbacks of that iteration return.
  std::string& output();
  // Output not yet written to the socket: output() plus what is being sent. Handlers that
  // produce much more output than input should stop consuming input while OutputFull() and
  // return; the loop calls OnInput again once the output drains.
  size_t pending_output() const { return out_.size() + (sending_.size() - sending_off_); }
  bool OutputFull() const { return pending_output() >= max_pending_output_; }

  // Queues the connection for the end-of-iteration pass, so output appended outside its own
  // callbacks (in Handler::OnBatchEnd or a Post()ed function) is sent.
  void Wake();

  // Asks for one Handler::OnDrained call once pending output is below the back-pressure
  // limit (possibly right after the current callback), paused or not, input or not.
  void NotifyWhenDrained();

  // Sends the remaining output, then closes the connection. No OnInput calls follow.
  void CloseAfterWrite();

  // While paused the loop does not call OnInput (the handler waits for asynchronous work) but
  // keeps receiving up to LoopOptions::max_pending_input. Unpausing calls OnInput again after
  // the current callback if input is not empty.
  void SetPaused(bool paused);
  bool paused() const { return paused_; }

  // The socket, for getpeername/getsockopt only: the loop does all reads, writes and close.
  int fd() const { return fd_; }

  void* user_data = nullptr;  // the handler's per-connection state

 private:
  friend class internal::LoopCore;
  friend class internal::EpollLoop;
  friend class internal::UringLoop;

  Connection(internal::LoopCore* loop, int fd, uint64_t id, uint32_t slot,
             size_t max_pending_output);

  internal::LoopCore* const loop_;
  const int fd_;
  const uint64_t id_;
  const uint32_t slot_;
  const size_t max_pending_output_;

  // Input: in_[in_begin_, in_visible_) is input(); in_[in_visible_, end) has arrived but is
  // not shown yet, so each OnInput sees at most one read's worth of new bytes.
  std::string in_;
  size_t in_begin_ = 0;
  size_t in_visible_ = 0;
  // Output: the handler appends to out_. sending_[sending_off_, end) is being written; with
  // io_uring the kernel reads it until the send completes, so nothing may touch sending_ while
  // send_busy_. When sending_ is done the two are swapped.
  std::string out_;
  std::string sending_;
  size_t sending_off_ = 0;

  int64_t last_active_ms_ = 0;
  bool paused_ = false;
  bool needs_call_ = false;  // call OnInput even without new bytes (unpaused, or stopped early)
  bool close_after_write_ = false;
  bool peer_eof_ = false;
  bool closing_ = false;  // closing: OnClose is running or ran; the backend releases the socket
  bool graceful_ = false;
  bool dirty_ = false;  // queued for end-of-iteration processing
  bool drain_call_ = false;  // NotifyWhenDrained() is pending

  // Backend bookkeeping. io_uring: a recv / send is in flight (the kernel owns recv_buf_ /
  // sending_ until its completion). epoll: EPOLLIN / EPOLLOUT is registered.
  bool read_armed_ = false;
  bool send_busy_ = false;
  bool recv_cancel_sent_ = false;
  bool fixed_file_ = false;           // io_uring: registered at index slot_ of the file table
  uint32_t epoll_events_ = 0;         // epoll only: the registered event mask
  std::unique_ptr<char[]> recv_buf_;  // io_uring kBasic only
};

class Handler {
 public:
  virtual ~Handler() = default;
  // A connection was accepted. It may already write output (a banner) or CloseAfterWrite().
  virtual void OnOpen(Connection& c) {}
  // input() has new bytes, or the connection was unpaused / its output drained with input
  // left. Consume what was handled; leave an incomplete request in input().
  virtual void OnInput(Connection& c) = 0;
  // NotifyWhenDrained() was called and the output is below the limit now.
  virtual void OnDrained(Connection& c) {}
  // Called once per loop iteration that ran OnInput or OnDrained, after all of them and before
  // any of their output is sent: the place to finish work the replies depend on (e.g. commit
  // the writes they acknowledge, once for all of them).
  virtual void OnBatchEnd() {}
  // Called exactly once per opened connection, when it closes for any reason. No callbacks
  // for the connection follow; release user_data here.
  virtual void OnClose(Connection& c) {}
};

// Written by the loop thread (relaxed), readable from any thread.
struct LoopStats {
  std::atomic<uint64_t> curr_connections{0};
  std::atomic<uint64_t> total_connections{0};
  std::atomic<uint64_t> rejected_connections{0};
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> bytes_written{0};
};

class EventLoop {
 public:
  // Picks the backend. kAuto: io_uring at the best level that works, else epoll (Description()
  // says why). A forced backend that cannot work here is an error. `handler` must outlive the
  // loop. On success the loop owns options.listen_fd.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EventLoop>> Create(const LoopOptions& options,
                                                                         Handler* handler);

  virtual ~EventLoop() = default;

  // Runs the loop on the calling thread until Shutdown() has completed. Call it once.
  virtual void Run() = 0;

  // Thread-safe. `fn` runs on the loop thread soon (before Run() returns, unless Shutdown() has
  // completed; functions never run are destroyed with the loop). Like every method, it must
  // not race with the loop's destruction: stop posting threads before destroying the loop.
  virtual void Post(absl::AnyInvocable<void()> fn) = 0;
  // Thread-safe. Runs `fn` on the loop thread only if the connection is still open; afterwards
  // the loop sends its output and calls OnInput if it is unpaused with input.
  virtual void PostToConnection(uint64_t conn_id, absl::AnyInvocable<void(Connection&)> fn) = 0;

  // Thread-safe, asynchronous. Stops accepting and closes the listener (graceful shutdown,
  // step 1). Connections already open carry on.
  virtual void StopAccepting() = 0;
  // Thread-safe, asynchronous. Stops accepting and reading, waits up to
  // LoopOptions::shutdown_timeout_ms for pending output (and paused handlers) to finish, closes
  // every connection (OnClose each), and makes Run() return.
  virtual void Shutdown() = 0;

  // The backend and its features, e.g. "io_uring (multishot accept, multishot recv, buffer
  // ring 256x16KiB, SINGLE_ISSUER|DEFER_TASKRUN)" or "epoll (io_uring unavailable: ...)".
  virtual std::string Description() const = 0;
  virtual Backend backend() const = 0;
  virtual const LoopStats& stats() const = 0;
};

}  // namespace petracache::io
