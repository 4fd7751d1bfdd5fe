#include "corral/engine/chores.hpp"

#include <signal.h>

namespace corral {

void Chores::post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
    if (!thread_.joinable()) {
      // Asynchronous signals belong to the host program's threads, not to ours.
      sigset_t all, old;
      sigfillset(&all);
      ::pthread_sigmask(SIG_BLOCK, &all, &old);
      thread_ = std::thread([this] { run(); });
      ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
  }
  cv_.notify_one();
}

void Chores::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, and nothing left
    auto job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job();
    lock.lock();
  }
}

Chores::~Chores() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

}  // namespace corral
