#include "corral/spawn/spawn.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

using namespace corral;

namespace {

struct Run {
  std::string out;
  siginfo_t info{};
};

// Spawns argv with stdout captured, reads to EOF, reaps through the pidfd.
Run run(std::vector<std::string> argv, std::string cwd = {}) {
  Fd r, w;
  EXPECT_TRUE(make_pipe(r, w));
  SpawnRequest req;
  req.argv = std::move(argv);
  req.env = {"PATH=/usr/bin:/bin", "HELLO=world"};
  req.cwd = std::move(cwd);
  req.stdout_fd = w.get();
  auto res = spawn(req);
  EXPECT_TRUE(res) << res.message;
  w.reset();
  Run out;
  char buf[4096];
  while (true) {
    pollfd p{r.get(), POLLIN, 0};
    ::poll(&p, 1, 10000);
    ssize_t n = ::read(r.get(), buf, sizeof buf);
    if (n > 0) {
      out.out.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EAGAIN) continue;
    break;
  }
  ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(res.pidfd.get()), &out.info, WEXITED);
  return out;
}

}  // namespace

TEST(Spawn, RunsAndCapturesStdout) {
  auto r = run({CORRAL_HELPER, "print", "hello", "env", "HELLO", "exit", "3"});
  EXPECT_EQ(r.out, "hello\nenv HELLO=world\n");
  EXPECT_EQ(r.info.si_code, CLD_EXITED);
  EXPECT_EQ(r.info.si_status, 3);
}

TEST(Spawn, OnlyStdioCrossesExec) {
  // An fd of ours without O_CLOEXEC must still not leak into the child.
  int leaky = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaky, 3);
  auto r = run({CORRAL_HELPER, "fds"});
  ::close(leaky);
  EXPECT_EQ(r.out, "fds 0 1 2\n");
}

TEST(Spawn, OwnSessionAndProcessGroup) {
  auto r = run({CORRAL_HELPER, "pid"});
  int pid = 0, ppid = 0, pgid = 0, sid = 0;
  ASSERT_EQ(std::sscanf(r.out.c_str(), "pid %d ppid %d pgid %d sid %d", &pid, &ppid, &pgid, &sid), 4) << r.out;
  EXPECT_EQ(pgid, pid);
  EXPECT_EQ(sid, pid);
  EXPECT_EQ(ppid, ::getpid());
}

TEST(Spawn, IgnoredSignalsAreResetForTheChild) {
  // Python ignores SIGPIPE; a service must not inherit that (nor an ignored SIGTERM).
  struct sigaction ign {}, old {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGTERM, &ign, &old);
  Fd r, w;
  ASSERT_TRUE(make_pipe(r, w));
  SpawnRequest req;
  req.argv = {CORRAL_HELPER, "print", "up", "sleep", "30"};
  req.stdout_fd = w.get();
  auto res = spawn(req);
  ::sigaction(SIGTERM, &old, nullptr);
  ASSERT_TRUE(res) << res.message;
  w.reset();
  pollfd p{r.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  ::kill(res.pid, SIGTERM);
  siginfo_t info{};
  ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(res.pidfd.get()), &info, WEXITED);
  EXPECT_EQ(info.si_code, CLD_KILLED);
  EXPECT_EQ(info.si_status, SIGTERM);
}

TEST(Spawn, MissingBinaryIsReportedExactly) {
  SpawnRequest req;
  req.argv = {"corral-no-such-program-xyz"};
  req.env = {"PATH=/usr/bin:/bin"};
  auto res = spawn(req);
  EXPECT_FALSE(res);
  EXPECT_EQ(res.error, ENOENT);
  EXPECT_EQ(res.message, "command not found: corral-no-such-program-xyz");
}

TEST(Spawn, NotExecutableIsReportedExactly) {
  char path[] = "/tmp/corral-test-noexec-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ::chmod(path, 0644);
  SpawnRequest req;
  req.argv = {path};
  auto res = spawn(req);
  ::unlink(path);
  EXPECT_FALSE(res);
  EXPECT_EQ(res.error, EACCES);
  EXPECT_NE(res.message.find("not executable"), std::string::npos) << res.message;
}

TEST(Spawn, BadWorkingDirectoryIsReportedExactly) {
  SpawnRequest req;
  req.argv = {CORRAL_HELPER, "cwd"};
  req.cwd = "/nonexistent/corral-dir";
  auto res = spawn(req);
  EXPECT_FALSE(res);
  EXPECT_EQ(res.error, ENOENT);
  EXPECT_NE(res.message.find("cannot change directory to /nonexistent/corral-dir"), std::string::npos) << res.message;
}

TEST(Spawn, WorkingDirectory) {
  auto r = run({CORRAL_HELPER, "cwd"}, "/tmp");
  EXPECT_EQ(r.out, "cwd /tmp\n");
}
