// ThreadPool: a fixed set of threads running queued tasks, for work that may block (disk reads,
// fsync) and so must stay off the event loops.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace petracache {

class ThreadPool {
 public:
  // `init` runs once on each thread before it takes tasks (e.g. to register per-thread stats).
  ThreadPool(size_t threads, std::string name, std::function<void(size_t index)> init = {});
  // Runs the tasks already queued, then joins.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Submit(std::function<void()> task);
  size_t queued() const;

 private:
  void Loop(size_t index);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  std::function<void(size_t)> init_;
  std::vector<std::thread> threads_;
};

}  // namespace petracache
