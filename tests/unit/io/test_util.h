// Test helpers for the io layer: loopback clients with deadlines, a loop-on-a-thread server,
// and handlers (echo, line-based, pausing) that record what the loop did.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "io/event_loop.h"
#include "io/listen.h"
#include "io/unique_fd.h"

namespace petracache::io::testing {

using Clock = std::chrono::steady_clock;
// Generous: every wait ends as soon as its condition holds; this only bounds a broken run.
inline constexpr std::chrono::seconds kTimeout{20};

inline Clock::time_point Deadline(Clock::duration d = kTimeout) { return Clock::now() + d; }

inline int MsLeft(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, 1000));
}

// Polls `pred` until it holds or the deadline passes.
inline bool WaitUntil(const std::function<bool()>& pred, Clock::duration d = kTimeout) {
  auto deadline = Deadline(d);
  while (!pred()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A non-blocking client socket connected to host:port (TCP_NODELAY, so 1-byte sends stay
// separate segments).
inline UniqueFd Connect(int port, const char* host = "127.0.0.1") {
  sockaddr_storage ss{};
  socklen_t len;
  int family;
  if (std::strchr(host, ':') != nullptr) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return UniqueFd();
    len = sizeof(*a);
    family = AF_INET6;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, host, &a->sin_addr) != 1) return UniqueFd();
    len = sizeof(*a);
    family = AF_INET;
  }
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return UniqueFd();
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  return fd;
}

// Sends all of `data`; false on error or deadline.
inline bool SendAll(int fd, std::string_view data, Clock::time_point deadline = Deadline()) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    if (Clock::now() >= deadline) return false;
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, MsLeft(deadline));
  }
  return true;
}

struct RecvResult {
  std::string data;
  bool eof = false;    // orderly close seen
  bool error = false;  // e.g. ECONNRESET
};

// Reads until `want` bytes arrived, EOF, an error or the deadline.
inline RecvResult Recv(int fd, size_t want, Clock::time_point deadline = Deadline()) {
  RecvResult r;
  char buf[65536];
  while (r.data.size() < want) {
    ssize_t n = ::recv(fd, buf, std::min(sizeof(buf), want - r.data.size()), 0);
    if (n > 0) {
      r.data.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      r.eof = true;
      break;
    }
    if (errno != EAGAIN && errno != EINTR) {
      r.error = true;
      break;
    }
    if (Clock::now() >= deadline) break;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, MsLeft(deadline));
  }
  return r;
}

// Reads until EOF (or error / deadline).
inline RecvResult RecvToEof(int fd, Clock::time_point deadline = Deadline()) {
  return Recv(fd, SIZE_MAX, deadline);
}

// Sends `data` while reading the reply concurrently (so neither side's buffers fill up) until
// `want` reply bytes arrived.
inline std::string Exchange(int fd, std::string_view data, size_t want,
                            Clock::time_point deadline = Deadline()) {
  std::string got;
  char buf[65536];
  while (got.size() < want && Clock::now() < deadline) {
    short events = POLLIN;
    if (!data.empty()) events |= POLLOUT;
    pollfd p{fd, events, 0};
    if (::poll(&p, 1, MsLeft(deadline)) <= 0) continue;
    if ((p.revents & POLLOUT) && !data.empty()) {
      ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) data.remove_prefix(static_cast<size_t>(n));
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n > 0) got.append(buf, static_cast<size_t>(n));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
  }
  return got;
}

// Closes with RST instead of FIN.
inline void ResetAndClose(UniqueFd& fd) {
  linger lg{1, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  fd.reset();
}

// `n` bytes of a recognisable pattern.
inline std::string Pattern(size_t n, size_t seed = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + seed + i / 251) % 26);
  return s;
}

// ---- Handlers ----

// Counts opens and closes, remembers the last id, tracks the largest pending output.
class RecordingHandler : public Handler {
 public:
  void OnOpen(Connection& c) override {
    last_id.store(c.id());
    opens.fetch_add(1);
  }
  void OnClose(Connection& c) override { closes.fetch_add(1); }

  std::atomic<int> opens{0};
  std::atomic<int> closes{0};
  std::atomic<uint64_t> last_id{0};
  std::atomic<size_t> max_pending_output{0};
  std::atomic<size_t> max_input_seen{0};

 protected:
  void Note(const Connection& c, size_t input_size) {
    size_t p = c.pending_output();
    size_t m = max_pending_output.load();
    while (p > m && !max_pending_output.compare_exchange_weak(m, p)) {
    }
    size_t mi = max_input_seen.load();
    while (input_size > mi && !max_input_seen.compare_exchange_weak(mi, input_size)) {
    }
  }
};

// Echoes every byte.
class EchoHandler : public RecordingHandler {
 public:
  void OnInput(Connection& c) override {
    std::string_view in = c.input();
    c.output().append(in.data(), in.size());
    c.Consume(in.size());
    Note(c, in.size());
  }
};

// Line protocol: "quit" -> "bye\n" then close; "big N" -> N pattern bytes; anything else is
// echoed upper-cased. Consumes only complete lines.
class LineHandler : public RecordingHandler {
 public:
  void OnInput(Connection& c) override {
    std::string_view in = c.input();
    size_t nl;
    while ((nl = in.find('\n')) != std::string_view::npos) {
      std::string_view line = in.substr(0, nl);
      size_t big = 0;
      if (line == "quit") {
        c.output() += "bye\n";
        c.Consume(nl + 1);
        c.CloseAfterWrite();
        return;
      } else if (line.substr(0, 4) == "big " &&
                 absl::SimpleAtoi(absl::string_view(line.data() + 4, line.size() - 4), &big)) {
        c.output() += Pattern(big);
        big_replies.fetch_add(1);
      } else {
        std::string& out = c.output();
        for (char ch : line) out.push_back(static_cast<char>(std::toupper(ch)));
        out.push_back('\n');
      }
      c.Consume(nl + 1);
      in = c.input();
    }
    Note(c, in.size());
  }
  std::atomic<int> big_replies{0};
};

// Runs functions on a background thread, in order.
class Worker {
 public:
  Worker() : thread_([this] { Loop(); }) {}
  ~Worker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void Submit(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// Handles one line at a time asynchronously: pauses the connection, lets a worker thread
// compute the upper-cased reply, and resumes through PostToConnection.
class PausingHandler : public RecordingHandler {
 public:
  void set_loop(EventLoop* loop) { loop_.store(loop); }
  // Joins the worker; call before destroying the loop it posts to.
  void StopWorker() { worker_.reset(); }
  void OnInput(Connection& c) override {
    std::string_view in = c.input();
    size_t nl = in.find('\n');
    if (nl == std::string_view::npos) return;
    std::string line(in.substr(0, nl));
    c.Consume(nl + 1);  // copy first: views die when the callback returns
    c.SetPaused(true);
    uint64_t id = c.id();
    EventLoop* loop = loop_.load();
    worker_->Submit([loop, id, line = std::move(line), this] {
      std::string reply;
      for (char ch : line) reply.push_back(static_cast<char>(std::toupper(ch)));
      reply.push_back('\n');
      loop->PostToConnection(id, [reply = std::move(reply), this](Connection& conn) {
        if (!conn.paused()) wrong_state.fetch_add(1);
        conn.output() += reply;
        conn.SetPaused(false);
      });
    });
  }
  std::atomic<int> wrong_state{0};

 private:
  std::atomic<EventLoop*> loop_{nullptr};
  std::unique_ptr<Worker> worker_ = std::make_unique<Worker>();
};

// Pauses every connection on its first input (consuming nothing) until Open() is called
// from a PostToConnection function; echoes from then on.
class GateHandler : public RecordingHandler {
 public:
  void OnInput(Connection& c) override {
    if (!open_) {
      c.SetPaused(true);
      paused.store(true);
      return;
    }
    std::string_view in = c.input();
    c.output().append(in.data(), in.size());
    c.Consume(in.size());
    Note(c, in.size());
  }
  void Open() { open_ = true; }  // loop thread only
  std::atomic<bool> paused{false};

 private:
  bool open_ = false;
};

// ---- A server: loops on threads ----

class TestServer {
 public:
  // Binds `count` SO_REUSEPORT listeners on `addr` and runs one loop per listener.
  static absl::StatusOr<std::unique_ptr<TestServer>> Start(Handler* handler, LoopOptions options,
                                                           std::string_view addr = "127.0.0.1:0",
                                                           int count = 1) {
    auto fds = ListenReusePort(addr, count);
    if (!fds.ok()) return fds.status();
    std::unique_ptr<TestServer> server(new TestServer());
    server->port_ = LocalPort((*fds)[0].get());
    for (UniqueFd& fd : *fds) {
      options.listen_fd = fd.get();
      auto loop = EventLoop::Create(options, handler);
      if (!loop.ok()) return loop.status();
      (void)fd.release();  // the loop owns it now
      server->loops_.push_back(std::move(*loop));
    }
    for (auto& loop : server->loops_) {
      EventLoop* l = loop.get();
      server->running_.fetch_add(1);
      server->threads_.emplace_back([l, s = server.get()] {
        s->thread_ids_mu_.lock();
        s->thread_ids_.push_back(std::this_thread::get_id());
        s->thread_ids_mu_.unlock();
        l->Run();
        s->running_.fetch_sub(1);
      });
    }
    return server;
  }

  ~TestServer() {
    for (auto& loop : loops_) loop->Shutdown();
    for (auto& t : threads_) t.join();
  }

  int port() const { return port_; }
  EventLoop& loop(size_t i = 0) { return *loops_[i]; }
  bool running() const { return running_.load() > 0; }

  // Requests shutdown of every loop and waits (bounded) for all Run() calls to return.
  bool ShutdownAndWait(Clock::duration d = kTimeout) {
    for (auto& loop : loops_) loop->Shutdown();
    return WaitUntil([this] { return !running(); }, d);
  }

  bool IsLoopThread(std::thread::id id) {
    std::lock_guard<std::mutex> lock(thread_ids_mu_);
    return std::find(thread_ids_.begin(), thread_ids_.end(), id) != thread_ids_.end();
  }

 private:
  TestServer() = default;
  int port_ = 0;
  std::vector<std::unique_ptr<EventLoop>> loops_;
  std::vector<std::thread> threads_;
  std::atomic<int> running_{0};
  std::mutex thread_ids_mu_;
  std::vector<std::thread::id> thread_ids_;
};

}  // namespace petracache::io::testing
