// A one-shot result that an engine-thread callback sets and any other thread waits for,
// in slices if it likes (the Python binding waits 50 ms at a time so Ctrl+C stays live).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <vector>

#include "corral/core/duration.hpp"

namespace corral {

template <class T>
class Pending {
 public:
  // The first value wins; later ones are ignored (a waiter may be settled by an outcome
  // and by the stack closing in the same turn).
  void set(T value) {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard lock(mutex_);
      if (value_) return;
      value_.emplace(std::move(value));
      callbacks.swap(callbacks_);
    }
    cv_.notify_all();
    for (auto& f : callbacks) f();
  }
  // Calls `f` once the value is there: at once on this thread when it already is, otherwise
  // on the thread that sets it (for engine results, the engine thread), so `f` must only
  // hand off (post to its own executor), never block. For waiters that cannot block a
  // thread (the control server's connections).
  void on_ready(std::function<void()> f) {
    {
      std::lock_guard lock(mutex_);
      if (!value_) {
        callbacks_.push_back(std::move(f));
        return;
      }
    }
    f();
  }
  bool ready() const {
    std::lock_guard lock(mutex_);
    return value_.has_value();
  }
  // Seconds < 0 waits forever. Returns whether the value is there.
  bool wait_for(double seconds) const {
    std::unique_lock lock(mutex_);
    if (seconds < 0) {
      cv_.wait(lock, [&] { return value_.has_value(); });
      return true;
    }
    return cv_.wait_for(lock, to_duration(seconds), [&] { return value_.has_value(); });
  }
  // Only after wait_for() returned true.
  const T& get() const {
    std::lock_guard lock(mutex_);
    return *value_;
  }

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::optional<T> value_;
  std::vector<std::function<void()>> callbacks_;
};

}  // namespace corral
