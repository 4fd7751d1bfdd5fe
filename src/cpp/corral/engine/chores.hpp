// A helper thread for the blocking work the engine thread must never do itself: work that
// grows with the machine (a /proc scan for escaped processes) or with what a service left
// behind (removing a {{tmpdir}} of 60k files). Jobs run one at a time, in order; each one
// posts its result back to the engine's io_context when it has one.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace corral {

class Chores {
 public:
  Chores() = default;
  // Runs what is queued, then joins.
  ~Chores();
  Chores(const Chores&) = delete;
  Chores& operator=(const Chores&) = delete;

  // Queues `job`; the thread starts on first use, with every signal blocked.
  void post(std::function<void()> job);
  // Starts the thread now rather than at the first job.
  void start();

 private:
  void run();
  void start_locked();
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace corral
