// The pid clock: what was created between two readings is found by walking that range
// alone, threads excluded.
#include "corral/metrics/procfs.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

using namespace corral;

TEST(Procfs, PidsCreatedSinceAClockReadingAreInItsRange) {
  auto since = procfs::pid_clock();
  if (!since) GTEST_SKIP() << "no /proc/sys/kernel/ns_last_pid or /proc/stat here";
  std::vector<pid_t> children;
  for (int i = 0; i < 3; ++i) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::pause();
      ::_exit(0);
    }
    children.push_back(pid);
  }
  // A thread gets an id from the same counter, but it is no process.
  std::atomic<pid_t> tid{0};
  std::atomic<bool> done{false};
  std::thread t([&] {
    tid = static_cast<pid_t>(::syscall(SYS_gettid));
    while (!done) std::this_thread::yield();
  });
  while (tid == 0) std::this_thread::yield();
  auto range = procfs::pids_since(*since);
  ASSERT_TRUE(range.has_value());
  std::vector<pid_t> seen;
  procfs::for_each_pid_in(range, [&](pid_t pid) {
    seen.push_back(pid);
    return false;
  });
  done = true;
  t.join();
  for (pid_t c : children) {
    EXPECT_TRUE(procfs::in_pid_range(c, *range));
    EXPECT_NE(std::find(seen.begin(), seen.end(), c), seen.end()) << c;
    ::kill(c, SIGKILL);
    ::waitpid(c, nullptr, 0);
  }
  EXPECT_EQ(std::find(seen.begin(), seen.end(), tid.load()), seen.end()) << "a thread was listed";
  EXPECT_EQ(std::find(seen.begin(), seen.end(), ::getpid()), seen.end()) << "an older process was listed";
}

TEST(Procfs, RangesWrapAtPidMax) {
  EXPECT_TRUE(procfs::in_pid_range(10, {32000, 20}));
  EXPECT_TRUE(procfs::in_pid_range(32001, {32000, 20}));
  EXPECT_FALSE(procfs::in_pid_range(32000, {32000, 20}));
  EXPECT_FALSE(procfs::in_pid_range(21, {32000, 20}));
  EXPECT_TRUE(procfs::in_pid_range(15, {10, 20}));
  EXPECT_FALSE(procfs::in_pid_range(10, {10, 20}));
}
