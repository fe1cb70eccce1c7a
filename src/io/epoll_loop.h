// EpollLoop: the portable backend — level-triggered epoll, non-blocking sockets, send/recv.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "io/loop_core.h"
#include "io/unique_fd.h"

namespace petracache::io::internal {

class EpollLoop final : public LoopCore {
 public:
  // `why_not_uring` (may be empty) is appended to Description(), e.g. "io_uring unavailable:
  // io_uring_setup: Operation not permitted".
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EpollLoop>> Create(
      const LoopOptions& options, Handler* handler, const std::string& why_not_uring);

  void Run() override;
  Backend backend() const override { return Backend::kEpoll; }

 private:
  EpollLoop(const LoopOptions& options, Handler* handler) : LoopCore(options, handler) {}

  void WakeUp() override;
  void StopListener() override;
  void SetAcceptPaused(bool paused) override;
  bool AttachConnection(Connection& c) override;
  void StartSend(Connection& c) override;
  void SetReadInterest(Connection& c, bool want) override;
  void ReleaseConnection(Connection& c) override;

  void AcceptSome();
  void HandleConnection(Connection& c, uint32_t events);
  void ReadSome(Connection& c);
  // Makes the registered events of `c` match read_armed_ / send_busy_.
  void UpdateEvents(Connection& c);

  UniqueFd epoll_fd_;
  UniqueFd wake_fd_;  // eventfd, non-blocking
  bool listen_registered_ = false;
};

}  // namespace petracache::io::internal
