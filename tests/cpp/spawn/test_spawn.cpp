#include "corral/spawn/spawn.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>

using namespace corral;

namespace {

struct Run {
  std::string out;
  siginfo_t info{};
};

// Spawns argv with stdout captured, reads to EOF, reaps through the pidfd.
Run run(std::vector<std::string> argv, std::string cwd = {}, int pass_fd = -1) {
  Fd r, w;
  EXPECT_TRUE(make_pipe(r, w));
  SpawnRequest req;
  req.argv = std::move(argv);
  req.env = {"PATH=/usr/bin:/bin", "HELLO=world"};
  req.cwd = std::move(cwd);
  req.stdout_fd = w.get();
  req.pass_fd = pass_fd;
  auto res = spawn(req);
  EXPECT_TRUE(res) << res.message;
  w.reset();
  Run out;
  char buf[4096];
  while (true) {
    pollfd p{r.get(), POLLIN, 0};
    if (::poll(&p, 1, 30000) == 0) {
      ADD_FAILURE() << "no EOF from the child's stdout within 30 s";
      break;
    }
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

// What each open fd of this process refers to, from /proc/self/fd.
std::map<int, std::string> fd_table() {
  std::map<int, std::string> table;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return table;
  int skip = ::dirfd(dir);
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    int fd = std::atoi(e->d_name);
    if (fd == skip) continue;
    char target[512] = {};
    std::string link = std::string("/proc/self/fd/") + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    table[fd] = n > 0 ? std::string(target, static_cast<std::size_t>(n)) : "?";
  }
  ::closedir(dir);
  return table;
}

// Opens `count` fds that are NOT close-on-exec (the worst case: a careless library in the
// owner), raising the soft limit for them if needed; closes them when destroyed.
struct ManyFds {
  std::vector<int> fds;
  explicit ManyFds(int count) {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = static_cast<rlim_t>(count) + 256;
    if (rl.rlim_cur < need && rl.rlim_max >= need) {
      rl.rlim_cur = need;
      ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (int i = 0; i < count; ++i) {
      int fd = ::open("/dev/null", O_RDONLY);
      if (fd < 0) break;
      fds.push_back(fd);
    }
  }
  ~ManyFds() {
    for (int fd : fds) ::close(fd);
  }
};

// Runs a test body twice: with the shared fd table, and as on a kernel without
// close_range(CLOSE_RANGE_UNSHARE), where the child gets a copy of the table.
class BothTables : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override { force_copied_fd_table_for_testing(GetParam()); }
  void TearDown() override { force_copied_fd_table_for_testing(false); }
};

std::string write_script(const std::string& dir, const std::string& name, const std::string& text,
                         mode_t mode) {
  std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
  return path;
}

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/corral-test-spawn-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::string cmd = "rm -rf '" + path + "'";
    (void)!std::system(cmd.c_str());
  }
};

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

TEST_P(BothTables, ChildSeesOnlyItsFdsWhenTheParentHasThousands) {
  // A first spawn reserves the hand-over fds low, as in the engine, where the first spawn
  // comes before the services' pipes.
  EXPECT_EQ(run({CORRAL_HELPER, "exit", "0"}).info.si_status, 0);
  ManyFds many(3000);
  ASSERT_EQ(many.fds.size(), 3000U) << "could not open enough fds for the test";
  EXPECT_EQ(run({CORRAL_HELPER, "fds"}).out, "fds 0 1 2\n");
  // A passed fd becomes 3, wherever it was in the parent.
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  Fd a(sv[0]), b(sv[1]);
  EXPECT_EQ(run({CORRAL_HELPER, "fds"}, {}, b.get()).out, "fds 0 1 2 3\n");
}

TEST_P(BothTables, ParentFdTableIsUntouchedByManySpawns) {
  // With a shared table, a child that dup2'd onto 0-2 before unsharing would replace the
  // parent's own stdio; one that closed instead of unsharing would close the parent's fds.
  ManyFds many(500);
  auto before = fd_table();
  struct stat std_before[3];
  for (int i = 0; i < 3; ++i) ASSERT_EQ(::fstat(i, &std_before[i]), 0);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  Fd a(sv[0]), b(sv[1]);
  auto with_pass = fd_table();
  for (int i = 0; i < 200; ++i) {
    auto r = run({CORRAL_HELPER, "print", "x"}, {}, i % 2 == 0 ? b.get() : -1);
    ASSERT_EQ(r.out, "x\n");
    ASSERT_EQ(r.info.si_status, 0);
  }
  // stdio given as the parent's own 0-2: the child gets copies, the parent keeps its own.
  SpawnRequest req;
  req.argv = {CORRAL_HELPER, "exit", "0"};
  req.stdin_fd = 0;
  req.stdout_fd = 2;
  req.stderr_fd = 1;
  auto res = spawn(req);
  ASSERT_TRUE(res) << res.message;
  siginfo_t info{};
  ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(res.pidfd.get()), &info, WEXITED);
  res.pidfd.reset();
  for (int i = 0; i < 3; ++i) {
    struct stat now {};
    ASSERT_EQ(::fstat(i, &now), 0);
    EXPECT_EQ(now.st_dev, std_before[i].st_dev) << "fd " << i;
    EXPECT_EQ(now.st_ino, std_before[i].st_ino) << "fd " << i;
    EXPECT_EQ(::fcntl(i, F_GETFD), 0) << "fd " << i << " gained close-on-exec";
  }
  // The spawn module's own few reserved fds appear after the first spawn and stay.
  auto after = fd_table();
  for (const auto& [fd, target] : with_pass) {
    auto it = after.find(fd);
    ASSERT_NE(it, after.end()) << "fd " << fd << " (" << target << ") was closed";
    EXPECT_EQ(it->second, target) << "fd " << fd;
  }
  // The slots (stdio and kMaxPassedFds passed fds) and the /dev/null that fills them.
  EXPECT_LE(after.size(), with_pass.size() + 3 + kMaxPassedFds + 1) << "fds leaked";
  EXPECT_EQ(before.size() + 2, with_pass.size());
}

TEST_P(BothTables, ExecErrorsAreExact) {
  TempDir dir;
  // ENOEXEC: executable, but neither ELF nor #!: execve refuses it (execvp would guess sh).
  std::string garbage = write_script(dir.path, "garbage", "just some text\n", 0755);
  SpawnRequest req;
  req.argv = {garbage};
  auto res = spawn(req);
  EXPECT_EQ(res.error, ENOEXEC) << res.message;
  EXPECT_EQ(res.message, fmt::format("cannot execute {}: {}", garbage, std::strerror(ENOEXEC)));
  // EACCES from execve itself: an interpreter that is not executable.
  write_script(dir.path, "interp", "#!/bin/sh\n", 0644);
  std::string script = write_script(dir.path, "script", "#!" + dir.path + "/interp\n", 0755);
  req.argv = {script};
  res = spawn(req);
  EXPECT_EQ(res.error, EACCES) << res.message;
  EXPECT_EQ(res.message, fmt::format("cannot execute {}: {}", script, std::strerror(EACCES)));
  // ENOENT from execve: the interpreter is missing.
  std::string orphan = write_script(dir.path, "orphan", "#!" + dir.path + "/nothing\n", 0755);
  req.argv = {orphan};
  res = spawn(req);
  EXPECT_EQ(res.error, ENOENT) << res.message;
  EXPECT_EQ(res.message, fmt::format("cannot execute {}: {}", orphan, std::strerror(ENOENT)));
  // And the spawn after a failure works, with nothing left open.
  EXPECT_EQ(run({CORRAL_HELPER, "fds"}).out, "fds 0 1 2\n");
}

TEST_P(BothTables, ChildGetsTheOriginalFdLimit) {
  rlimit rl{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  ASSERT_GT(rl.rlim_max, 64U) << "hard limit too low to test";
  // Start from a soft limit below the hard one, as a default login does (1024 / 524288).
  rlim_t start = std::min<rlim_t>(rl.rlim_max / 2, 1024);
  rlimit lowered{start, rl.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &lowered), 0);
  raise_fd_limit();
  rlimit raised{};
  ::getrlimit(RLIMIT_NOFILE, &raised);
  EXPECT_EQ(raised.rlim_cur, rl.rlim_max);
  ASSERT_TRUE(original_fd_soft_limit().has_value());
  EXPECT_EQ(*original_fd_soft_limit(), start);
  auto r = run({CORRAL_HELPER, "nofile"});
  EXPECT_EQ(r.out, fmt::format("nofile {} {}\n", start, rl.rlim_max));
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

TEST_P(BothTables, RelativeCommandRunsInItsWorkingDirectory) {
  TempDir dir;
  ::mkdir((dir.path + "/bin").c_str(), 0755);
  write_script(dir.path, "bin/server.sh", fmt::format("#!/bin/sh\nexec {} cwd\n", CORRAL_HELPER), 0755);
  // As a shell would after cd: ./bin/server.sh under cwd, and also bin/server.sh.
  EXPECT_EQ(run({"./bin/server.sh"}, dir.path).out, "cwd " + dir.path + "\n");
  EXPECT_EQ(run({"bin/server.sh"}, dir.path).out, "cwd " + dir.path + "\n");
  // A relative cwd is taken from ours, and the command from it.
  char here[4096];
  ASSERT_NE(::getcwd(here, sizeof here), nullptr);
  ASSERT_EQ(::chdir("/tmp"), 0);
  std::string rel = dir.path.substr(std::string("/tmp/").size());
  auto r = run({"./bin/server.sh"}, rel);
  ASSERT_EQ(::chdir(here), 0);
  EXPECT_EQ(r.out, "cwd " + dir.path + "\n");
  // Not there: command not found, naming what was asked for.
  SpawnRequest req;
  req.argv = {"./nothing.sh"};
  req.cwd = dir.path;
  auto res = spawn(req);
  EXPECT_EQ(res.error, ENOENT);
  EXPECT_EQ(res.message, "command not found: ./nothing.sh");
  // There, but not executable: the message names the file under cwd.
  write_script(dir.path, "plain.sh", "#!/bin/sh\n", 0644);
  req.argv = {"./plain.sh"};
  res = spawn(req);
  EXPECT_EQ(res.error, EACCES);
  EXPECT_EQ(res.message, fmt::format("permission denied: {}/./plain.sh is not executable", dir.path));
}

INSTANTIATE_TEST_SUITE_P(Spawn, BothTables, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "CopiedTable" : "SharedTable"; });

// A thread corral starts is a clone to the kernel's fork counter: it is counted with
// corral's own (begun before, done after), so that the escapee sweep does not take it for
// someone else's fork.
TEST(Spawn, OwnThreadsCountAsCorralsClones) {
  auto begun = corral::spawns_begun(), done = corral::processes_spawned();
  bool ran = false;
  auto t = corral::start_own_thread([&ran] { ran = true; });
  t.join();
  EXPECT_TRUE(ran);
  EXPECT_EQ(corral::spawns_begun(), begun + 1);
  EXPECT_EQ(corral::processes_spawned(), done + 1);
}
