// A one-shot result that an engine-thread callback sets and any other thread waits for,
// in slices if it likes (the Python binding waits 50 ms at a time so Ctrl+C stays live).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "corral/core/duration.hpp"

namespace corral {

template <class T>
class Pending {
 public:
  // The first value wins; later ones are ignored (a waiter may be settled by an outcome
  // and by the stack closing in the same turn).
  void set(T value) {
    {
      std::lock_guard lock(mutex_);
      if (value_) return;
      value_.emplace(std::move(value));
    }
    cv_.notify_all();
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
};

}  // namespace corral
