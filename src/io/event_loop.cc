// EventLoop::Create: validates options and picks the backend (io_uring, else epoll).
#include "io/event_loop.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "io/epoll_loop.h"
#include "io/loop_core.h"
#include "io/uring_loop.h"
#include "petracache_config.h"

namespace petracache::io {
namespace {

constexpr size_t kMaxReadBufferSize = 64 << 20;

absl::Status Validate(const LoopOptions& options, const Handler* handler) {
  if (handler == nullptr) return absl::InvalidArgumentError("EventLoop needs a handler");
  if (options.read_buffer_size < 64 || options.read_buffer_size > kMaxReadBufferSize) {
    return absl::InvalidArgumentError(absl::StrCat("read_buffer_size must be from 64 to ",
                                                   kMaxReadBufferSize, ", not ",
                                                   options.read_buffer_size));
  }
  if (options.max_pending_output == 0 || options.max_pending_input == 0) {
    return absl::InvalidArgumentError("max_pending_output and max_pending_input must be > 0");
  }
  if (options.idle_timeout_seconds < 0 || options.shutdown_timeout_ms < 0) {
    return absl::InvalidArgumentError("timeouts must not be negative");
  }
  return absl::OkStatus();
}

template <typename Loop>
std::unique_ptr<EventLoop> Adopt(std::unique_ptr<Loop> loop) {
  loop->AdoptListener();
  return loop;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EventLoop>> EventLoop::Create(const LoopOptions& options,
                                                             Handler* handler) {
  if (absl::Status s = Validate(options, handler); !s.ok()) return s;
  std::string why_not_uring;
  if (options.backend != Backend::kEpoll) {
#if PETRACACHE_HAVE_IO_URING
    auto uring = internal::UringLoop::Create(options, handler);
    if (uring.ok()) return Adopt(std::move(*uring));
    if (options.backend == Backend::kIoUring) {
      return absl::UnavailableError(
          absl::StrCat("io_uring backend unavailable: ", uring.status().message()));
    }
    why_not_uring = absl::StrCat("io_uring unavailable: ", uring.status().message());
#else
    if (options.backend == Backend::kIoUring) {
      return absl::UnavailableError("io_uring backend unavailable: built without liburing");
    }
    why_not_uring = "built without io_uring";
#endif
  }
  auto epoll = internal::EpollLoop::Create(options, handler, why_not_uring);
  if (!epoll.ok()) return epoll.status();
  return Adopt(std::move(*epoll));
}

}  // namespace petracache::io
