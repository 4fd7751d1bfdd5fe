#include "corral/engine/chores.hpp"

#include "corral/spawn/spawn.hpp"

namespace corral {

void Chores::post(std::function<void()> job) {
  {
    std::lock_guard lock(mutex_);
    jobs_.push_back(std::move(job));
    start_locked();
  }
  cv_.notify_one();
}

void Chores::start() {
  std::lock_guard lock(mutex_);
  start_locked();
}

void Chores::start_locked() {
  if (thread_.joinable()) return;
  thread_ = start_own_thread([this] { run(); });
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
