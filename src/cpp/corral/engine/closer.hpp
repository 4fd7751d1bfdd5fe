// Closes the descriptors a run leaves behind (its pipes and its pidfd, once it has been
// reaped) on a thread of its own. Closing a pipe frees its buffers and its inode, and asio
// first takes each descriptor out of its epoll set: when a stack of thousands stops, that
// was a third of the engine thread's work, done while the other core sat idle. What one
// turn of the engine loop hands over goes in one batch: one wake-up of the closer thread
// per turn, not one per descriptor.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <memory>
#include <vector>

#include "corral/engine/chores.hpp"

namespace corral {

class Closer {
 public:
  using Descriptor = boost::asio::posix::stream_descriptor;

  explicit Closer(boost::asio::io_context& io) : io_(io) {}
  // Hands over a turn the loop did not finish; the thread then closes everything and
  // joins. Must go before the io_context the descriptors use.
  ~Closer();
  Closer(const Closer&) = delete;
  Closer& operator=(const Closer&) = delete;

  // Takes `d` (and leaves it empty): from now on only the closer thread touches it. A wait
  // still pending on it completes with operation_aborted, as a close on the engine thread
  // would make it. Called on the engine thread (the one running `io`) only; handed over
  // at the end of the loop turn. The thread starts on first use, with every signal blocked.
  void close(std::unique_ptr<Descriptor>& d);
  // Starts the thread now rather than at the first descriptor.
  void start() { thread_.start(); }

 private:
  void hand_over();
  boost::asio::io_context& io_;
  std::vector<std::unique_ptr<Descriptor>> turn_;  // the engine thread's, this loop turn
  Chores thread_;  // declared last: joined first, after the last batch is closed
};

}  // namespace corral
