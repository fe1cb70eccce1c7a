// UringLoop: the io_uring backend — completion-driven accept/recv/send with one submit per
// iteration. Only built when liburing is available (PETRACACHE_HAVE_IO_URING).
#pragma once

#include "petracache_config.h"

#if PETRACACHE_HAVE_IO_URING

#include <liburing.h>

#include <memory>

#include "absl/status/statusor.h"
#include "io/loop_core.h"
#include "io/unique_fd.h"
#include "io/uring_probe.h"

namespace petracache::io::internal {

class UringLoop final : public LoopCore {
 public:
  // Fails (kUnavailable) when io_uring cannot be used here; see ProbeIoUring().
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UringLoop>> Create(const LoopOptions& options,
                                                                         Handler* handler);
  ~UringLoop() override;

  void Run() override;
  Backend backend() const override { return Backend::kIoUring; }

 private:
  UringLoop(const LoopOptions& options, Handler* handler) : LoopCore(options, handler) {}
  absl::Status Init(const UringProbe& probe);
  bool SetUpBufferRing();

  void WakeUp() override;
  void StopListener() override;
  void SetAcceptPaused(bool paused) override;
  bool AttachConnection(Connection& c) override;
  void StartSend(Connection& c) override;
  void SetReadInterest(Connection& c, bool want) override;
  void ReleaseConnection(Connection& c) override;

  // An SQE to fill; submits early when the submission queue is full.
  io_uring_sqe* GetSqe();
  void Cancel(uint64_t target_tag, uint64_t own_tag);
  void ArmWake();
  void ArmAccept();
  void ArmAcceptPoll();
  void ArmRecv(Connection& c);
  void CancelRecv(Connection& c);
  void RecycleBuffer(uint16_t bid);
  void FreeIfIdle(Connection& c);
  uint32_t FixedFileTableSize() const;
  // The fd (or fixed-file index) an SQE on `c` names, with IOSQE_FIXED_FILE when registered.
  void SetFile(io_uring_sqe* sqe, const Connection& c) const;

  // The one dispatch switch over completion tags.
  void HandleCompletion(const io_uring_cqe& cqe);
  void OnWake(int res);
  void OnAccept(int res, uint32_t flags);
  void OnAcceptPoll(int res);
  void OnRecv(const Tag& tag, int res, uint32_t flags);
  void OnSend(const Tag& tag, int res);
  void OnCancelRecv(const Tag& tag, int res);

  io_uring ring_{};
  bool ring_ready_ = false;
  unsigned setup_flags_ = 0;
  bool multishot_accept_ = false;
  bool multishot_recv_ = false;
  bool register_ring_fd_ = false;  // io_uring_register_ring_fd works here
  // Size of the registered (fixed) file table; 0: sockets are not registered. A connection in
  // slot s < fixed_files_ is registered at index s while it is attached (io_uring then skips
  // the file lookup and reference count on every recv and send).
  uint32_t fixed_files_ = 0;

  // Provided-buffer ring (multishot recv). buf_base_ holds buf_entries_ buffers of
  // read_buffer_size bytes. A buffer belongs to the kernel from the moment it is added to the
  // ring until a recv completion names it (IORING_CQE_F_BUFFER); the loop then copies the bytes
  // into the connection's input and adds the buffer back before handling the next completion.
  io_uring_buf_ring* buf_ring_ = nullptr;  // mmap'd, registered with the ring
  size_t buf_ring_bytes_ = 0;
  unsigned buf_entries_ = 0;
  std::unique_ptr<char[]> buf_base_;

  UniqueFd wake_fd_;         // eventfd (blocking: the read waits inside io_uring)
  uint64_t wake_value_ = 0;  // kernel-owned while wake_armed_
  bool wake_armed_ = false;
  bool wake_cancel_sent_ = false;
  bool accept_armed_ = false;
  bool accept_poll_armed_ = false;
  bool accept_paused_ = false;
};

}  // namespace petracache::io::internal

#endif  // PETRACACHE_HAVE_IO_URING
