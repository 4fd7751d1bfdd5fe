#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "corral/os/fd_table.hpp"

namespace {

// Slots in this process's fd table, as the kernel reports them.
long fd_table_size() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("FDSize:", 0) == 0) return std::stol(line.substr(7));
  return -1;
}

TEST(FdTable, ReservingGrowsTheTableOnceWithoutTouchingOpenDescriptors) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  long before = fd_table_size();
  ASSERT_GT(before, 0);
  corral::os::reserve_fd_slots(static_cast<int>(before) + 3000);
  EXPECT_GE(fd_table_size(), before + 3000);
  // The descriptors open before are the same ones, and the slot used to grow is free again.
  EXPECT_EQ(::write(pipe_fds[1], "x", 1), 1);
  char c = 0;
  EXPECT_EQ(::read(pipe_fds[0], &c, 1), 1);
  EXPECT_EQ(c, 'x');
  int next = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_LT(next, 64) << "the reservation left a descriptor open";
  ::close(next);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

TEST(FdTable, ReservingPastTheLimitStopsAtIt) {
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = std::min<rlim_t>(4096, saved.rlim_max);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  long before = fd_table_size();
  corral::os::reserve_fd_slots(1 << 30);  // far beyond the limit
  EXPECT_GE(fd_table_size(), before);
  // Up to the limit (an earlier test in this process may have grown it further already).
  EXPECT_LE(fd_table_size(), std::max<long>(before, static_cast<long>(low.rlim_cur)));
  ::setrlimit(RLIMIT_NOFILE, &saved);
  int next = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_GE(next, 0);
  EXPECT_LT(next, 64);
  ::close(next);
}

}  // namespace
