#include "corral/resources/ports.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <set>
#include <vector>

using namespace corral;

TEST(Ports, NeverTheSameTwiceInAProcess) {
  std::vector<PortLease> leases;
  std::set<int> seen;
  for (int i = 0; i < 300; ++i) {
    leases.push_back(allocate_port());
    // Handing the port over to a service must not make it allocatable again.
    leases.back().release_socket();
    EXPECT_TRUE(seen.insert(leases.back().port()).second) << leases.back().port();
  }
}

TEST(Ports, ReleasedSocketLeavesThePortBindable) {
  auto lease = allocate_port();
  lease.release_socket();
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(lease.port()));
  EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ::close(s);
}

TEST(Ports, ClaimsHoldAcrossProcesses) {
  // A child process claims ports and reports them; while it lives, ours never collide.
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::close(go[1]);
    std::vector<PortLease> mine;
    for (int i = 0; i < 200; ++i) {
      mine.push_back(allocate_port());
      mine.back().release_socket();
      int p = mine.back().port();
      if (::write(fds[1], &p, sizeof p) != sizeof p) ::_exit(2);
    }
    ::close(fds[1]);
    char c;
    (void)::read(go[0], &c, 1);  // hold the claims until the parent is done
    ::_exit(0);
  }
  ::close(fds[1]);
  ::close(go[0]);
  std::set<int> theirs;
  int p;
  while (::read(fds[0], &p, sizeof p) == sizeof p) theirs.insert(p);
  ::close(fds[0]);
  ASSERT_EQ(theirs.size(), 200u);
  std::vector<PortLease> ours;
  for (int i = 0; i < 200; ++i) {
    ours.push_back(allocate_port());
    EXPECT_EQ(theirs.count(ours.back().port()), 0u) << ours.back().port();
  }
  ::close(go[1]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
