#include "corral/engine/closer.hpp"

#include <boost/asio/post.hpp>

#include "corral/spawn/spawn.hpp"

namespace corral {

void Closer::close(std::unique_ptr<Descriptor>& d) {
  if (!d) return;
  turn_.push_back(std::move(d));
  if (turn_.size() == 1) boost::asio::post(io_, [this] { hand_over(); });
}

void Closer::hand_over() {
  {
    std::lock_guard lock(mutex_);
    for (auto& d : turn_) queue_.push_back(std::move(d));
    start_locked();
  }
  turn_.clear();
  cv_.notify_one();
}

void Closer::start() {
  std::lock_guard lock(mutex_);
  start_locked();
}

void Closer::start_locked() {
  if (thread_.joinable()) return;
  thread_ = start_own_thread([this] { run(); });
}

void Closer::run() {
  std::vector<std::unique_ptr<Descriptor>> batch;
  std::unique_lock lock(mutex_);
  while (true) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    batch.swap(queue_);  // everything queued so far, for one wake-up
    lock.unlock();
    boost::system::error_code ignored;
    for (auto& d : batch) d->close(ignored);
    batch.clear();
    lock.lock();
  }
}

Closer::~Closer() {
  {
    std::lock_guard lock(mutex_);
    for (auto& d : turn_) queue_.push_back(std::move(d));  // a turn the loop did not finish
    turn_.clear();
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

}  // namespace corral
