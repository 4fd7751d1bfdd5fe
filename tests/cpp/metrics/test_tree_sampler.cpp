// The tree sampler with real processes: a service's children (and a grandchild that left
// its process group while its parent lived) count; CPU time grows for a busy tree; a
// process that is not the service's does not count.
#include "corral/metrics/tree_sampler.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

using namespace corral;

namespace {

// Forks a group leader (pgid = its pid, as corral starts a service) that runs `body`.
template <class F>
pid_t leader(F body) {
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    body();
    ::_exit(0);
  }
  ::setpgid(pid, pid);  // both sides, so it holds before either goes on
  return pid;
}

void kill_group(pid_t pgid) {
  ::kill(-pgid, SIGKILL);
  ::waitpid(pgid, nullptr, 0);
}

template <class P>
bool eventually(P pred) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace

TEST(TreeSampler, CountsChildrenAndAGrandchildThatLeftTheGroup) {
  auto since = procfs::pid_clock();
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t svc = leader([&] {
    // A child in the group, and a child that calls setsid() (its parent stays alive).
    if (::fork() == 0) {
      ::pause();
      ::_exit(0);
    }
    if (::fork() == 0) {
      ::setsid();
      pid_t self = ::getpid();
      (void)::write(ready[1], &self, sizeof self);
      ::pause();
      ::_exit(0);
    }
    ::pause();
  });
  pid_t escaped = 0;
  ASSERT_EQ(::read(ready[0], &escaped, sizeof escaped), static_cast<ssize_t>(sizeof escaped));
  pid_t other = ::fork();  // not the service's
  if (other == 0) {
    ::pause();
    ::_exit(0);
  }
  TreeSampler sampler;
  auto r = sampler.sample({SampleTarget{0, svc, since}});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].processes, 3);
  EXPECT_EQ(r[0].threads, 3);
  EXPECT_GT(r[0].rss, 0u);
  EXPECT_GE(r[0].fds, 3);
  // The next tick reads the known members again and only the pids created since.
  r = sampler.sample({SampleTarget{0, svc, since}});
  EXPECT_EQ(r[0].processes, 3);
  kill_group(svc);
  ::kill(escaped, SIGKILL);  // not in the group: killed by itself (it holds our stdout)
  ::kill(other, SIGKILL);
  ::waitpid(other, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(TreeSampler, CpuTimeGrowsForABusyTreeIncludingReapedChildren) {
  auto since = procfs::pid_clock();
  pid_t svc = leader([] {
    // Children that spin and are reaped: their time moves into the leader's cutime.
    for (;;) {
      pid_t c = ::fork();
      if (c == 0) {
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
        while (std::chrono::steady_clock::now() < end) {
        }
        ::_exit(0);
      }
      ::waitpid(c, nullptr, 0);
    }
  });
  TreeSampler sampler;
  double first = sampler.sample({SampleTarget{0, svc, since}})[0].user;
  ASSERT_TRUE(eventually([&] {
    auto r = sampler.sample({SampleTarget{0, svc, since}});
    return r[0].user + r[0].system >= first + 0.3;
  }));
  kill_group(svc);
}

TEST(TreeSampler, ANewLeaderStartsANewTree) {
  auto since = procfs::pid_clock();
  pid_t a = leader([] { ::pause(); });
  TreeSampler sampler;
  EXPECT_EQ(sampler.sample({SampleTarget{0, a, since}})[0].processes, 1);
  kill_group(a);
  // Gone: the tree is empty, not an error.
  EXPECT_EQ(sampler.sample({SampleTarget{0, a, since}})[0].processes, 0);
  since = procfs::pid_clock();
  pid_t b = leader([] { ::pause(); });
  auto r = sampler.sample({SampleTarget{0, b, since}});
  EXPECT_EQ(r[0].leader, b);
  EXPECT_EQ(r[0].processes, 1);
  kill_group(b);
}
