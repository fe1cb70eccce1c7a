// ThreadPool implementation: one mutex-protected deque; tasks are coarse (a disk read each).
#include "common/thread_pool.h"

#include <pthread.h>

namespace petracache {

ThreadPool::ThreadPool(size_t threads, std::string name, std::function<void(size_t)> init)
    : init_(std::move(init)) {
  for (size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this, i] { Loop(i); });
    std::string thread_name = (name + std::to_string(i)).substr(0, 15);
    pthread_setname_np(threads_.back().native_handle(), thread_name.c_str());
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::Submit(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

size_t ThreadPool::queued() const {
  std::lock_guard lock(mu_);
  return tasks_.size();
}

void ThreadPool::Loop(size_t index) {
  if (init_) init_(index);
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
  }
}

}  // namespace petracache
