// The death watcher with real processes: what it kills when its owner's end goes away (the
// destructor closes it, exactly as the owner's death does), and how the owner's side copes
// with a watcher that is stopped or killed.
#include "corral/engine/watcher.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "corral/metrics/procfs.hpp"
#include "corral/spawn/spawn.hpp"

#ifndef PIDFD_SIGNAL_PROCESS_GROUP
#define PIDFD_SIGNAL_PROCESS_GROUP (1U << 2)
#endif

using namespace corral;
using namespace std::chrono_literals;

namespace {

struct Child {
  pid_t pid = -1;
  Fd pidfd;
  pid_t other = -1;  // the pid the helper printed (its grandchild or escapee)
  Fd other_fd;       // a pidfd for it, so the cleanup never signals a recycled pid
};

// Runs the helper in its own session, with no parent-death signal (only the watcher may
// kill it here), and reads the first line it prints: "grandchild N" or "escaped N".
Child run_helper(std::vector<std::string> args, std::vector<std::string> env = {"PATH=/usr/bin:/bin"}) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
  Fd r(p[0]), w(p[1]);
  SpawnRequest req;
  req.argv = {CORRAL_HELPER};
  req.argv.insert(req.argv.end(), args.begin(), args.end());
  req.env = std::move(env);
  req.stdout_fd = w.get();
  req.death_signal = 0;
  auto res = spawn(req);
  EXPECT_TRUE(res) << res.message;
  w.reset();
  std::string line;
  char c;
  while (::read(r.get(), &c, 1) == 1 && c != '\n') line += c;
  Child child;
  child.pid = res.pid;
  child.pidfd = std::move(res.pidfd);
  std::istringstream in(line);
  std::string word;
  in >> word >> child.other;
  if (child.other > 0) child.other_fd = Fd(static_cast<int>(::syscall(SYS_pidfd_open, child.other, 0U)));
  return child;
}

// /proc/<pid>/<file> with raw reads ("" when gone): a process that exits between the open
// and the read gives ESRCH, which an ifstream turns into an exception.
std::string proc_file(pid_t pid, const char* file) {
  Fd f(::open(("/proc/" + std::to_string(pid) + "/" + file).c_str(), O_RDONLY | O_CLOEXEC));
  char buf[4096];
  ssize_t n = f ? ::read(f.get(), buf, sizeof buf) : -1;
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

bool alive(pid_t pid) {
  std::string stat = proc_file(pid, "stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

char state_of(pid_t pid) {
  std::string stat = proc_file(pid, "stat");
  auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : '?';
}

// Polls /proc for an event with a generous deadline: the machine may be loaded.
template <class F>
bool eventually(F&& condition, std::chrono::seconds deadline = 20s) {
  auto until = std::chrono::steady_clock::now() + deadline;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

void reap(Child& c) {
  siginfo_t info{};
  ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c.pidfd.get()), &info, WEXITED);
}

// Cleanup, after a failure too: nothing of a test outlives it. The leader is our unreaped
// child, so its pid and group id are still its own.
void kill_and_reap(Child& c) {
  if (c.other_fd) ::syscall(SYS_pidfd_send_signal, c.other_fd.get(), SIGKILL, nullptr, 0U);
  ::kill(-c.pid, SIGKILL);
  ::kill(c.pid, SIGKILL);
  reap(c);
}

bool process_group_signals_supported() {
  int self = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0U));
  // ESRCH (we lead no group) still says the flag is known; only EINVAL says it is not.
  long r = ::syscall(SYS_pidfd_send_signal, self, 0, nullptr, PIDFD_SIGNAL_PROCESS_GROUP);
  int err = errno;
  ::close(self);
  return r == 0 || err != EINVAL;
}

class Watcher : public ::testing::TestWithParam<bool> {
 protected:
  std::string program() const { return GetParam() ? CORRAL_WATCH_PROGRAM : ""; }
  boost::asio::io_context io;
};

}  // namespace

TEST_P(Watcher, KillsTheWatchedGroupsWhenTheOwnerGoes) {
  auto watcher = std::make_unique<DeathWatcher>(io, program());
  ASSERT_GT(watcher->pid(), 0);
  EXPECT_EQ(watcher->execd(), GetParam());
  auto svc = run_helper({"grandchild", "300", "pause"});
  watcher->watch(svc.pid);
  watcher.reset();
  EXPECT_TRUE(eventually([&] { return !alive(svc.other); })) << "the grandchild survived";
  kill_and_reap(svc);
}

TEST_P(Watcher, KillsTheGroupEvenAfterItsLeaderWasReaped) {
  if (!process_group_signals_supported()) GTEST_SKIP() << "PIDFD_SIGNAL_PROCESS_GROUP needs Linux 6.9";
  auto watcher = std::make_unique<DeathWatcher>(io, program());
  // The leader exits at once; its child stays in the group. We reap the leader without
  // unwatching it: what an owner that dies at that moment leaves behind.
  auto svc = run_helper({"grandchild", "300", "exit", "0"});
  watcher->watch(svc.pid);
  reap(svc);
  ASSERT_TRUE(alive(svc.other));
  watcher.reset();
  EXPECT_TRUE(eventually([&] { return !alive(svc.other); })) << "the group's survivor was not killed";
  ::syscall(SYS_pidfd_send_signal, svc.other_fd.get(), SIGKILL, nullptr, 0U);
}

TEST_P(Watcher, FindsEscapeesByTheirStackMarker) {
  auto watcher = std::make_unique<DeathWatcher>(io, program());
  auto ours = run_helper({"escape", "300", "pause"}, {"PATH=/usr/bin:/bin", "CORRAL_STACK=wt-7-1"});
  auto theirs = run_helper({"escape", "300", "pause"}, {"PATH=/usr/bin:/bin", "CORRAL_STACK=wt-7-10"});
  watcher->watch_stack("wt-7-1");
  watcher->watch(ours.pid);
  watcher.reset();
  EXPECT_TRUE(eventually([&] { return !alive(ours.other); })) << "the escapee survived";
  kill_and_reap(ours);
  EXPECT_TRUE(alive(theirs.other)) << "a process of another stack was killed";
  EXPECT_TRUE(alive(theirs.pid));
  kill_and_reap(theirs);
}

TEST_P(Watcher, LeavesAloneWhatWasUnwatched) {
  auto watcher = std::make_unique<DeathWatcher>(io, program());
  auto svc = run_helper({"escape", "300", "pause"}, {"PATH=/usr/bin:/bin", "CORRAL_STACK=wt-8-1"});
  watcher->watch_stack("wt-8-1");
  watcher->watch(svc.pid);
  watcher->unwatch(svc.pid);
  watcher->unwatch_stack("wt-8-1");
  watcher.reset();  // returns once the watcher has exited: it has done all it would do
  EXPECT_TRUE(alive(svc.pid));
  EXPECT_TRUE(alive(svc.other));
  kill_and_reap(svc);
}

TEST_P(Watcher, AStoppedWatcherNeverBlocksUsAndIsReplaced) {
  auto watcher = std::make_unique<DeathWatcher>(io, program());
  pid_t first = watcher->pid();
  auto svc = run_helper({"grandchild", "300", "pause"});
  ::kill(first, SIGSTOP);
  ASSERT_TRUE(eventually([&] { return state_of(first) == 'T'; }));
  // Far more records than a socket buffer holds: with a blocking send, this never returns.
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20000; ++i) {
    // One change per turn of the engine's loop (what a turn changes goes out at its end;
    // a watch and its unwatch in the same turn cancel out and are never sent).
    watcher->watch(svc.pid);
    io.poll();
    io.restart();
    watcher->unwatch(svc.pid);
    io.poll();
    io.restart();
  }
  watcher->watch(svc.pid);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  EXPECT_GE(watcher->restarts(), 1U);
  EXPECT_NE(watcher->pid(), first);
  EXPECT_FALSE(alive(first)) << "the stopped watcher was not killed";
  // The new one may lag behind (its socket queue is short): what it has not taken yet goes
  // out when the socket turns writable, on the io_context.
  auto until = std::chrono::steady_clock::now() + 30s;
  while (watcher->backlog() != 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "the backlog never drained";
    io.run_one_for(100ms);
  }
  watcher.reset();  // the new watcher knows the group
  EXPECT_TRUE(eventually([&] { return !alive(svc.other); }));
  kill_and_reap(svc);
}

TEST_P(Watcher, ADeadWatcherIsReplacedAndToldEverything) {
  auto watcher = std::make_unique<DeathWatcher>(io, program());
  pid_t first = watcher->pid();
  auto svc = run_helper({"escape", "300", "grandchild", "300", "pause"},
                        {"PATH=/usr/bin:/bin", "CORRAL_STACK=wt-9-1"});
  watcher->watch_stack("wt-9-1");
  watcher->watch(svc.pid);
  EXPECT_TRUE(watcher->alive());
  ::kill(first, SIGKILL);
  // Its pidfd wakes the io_context; a watcher that died young is replaced a second later.
  auto until = std::chrono::steady_clock::now() + 30s;
  while (watcher->restarts() == 0 || !watcher->alive()) {
    ASSERT_LT(std::chrono::steady_clock::now(), until) << "no new watcher";
    io.run_one_for(100ms);
  }
  EXPECT_NE(watcher->pid(), first);
  EXPECT_FALSE(alive(first));
  watcher.reset();
  EXPECT_TRUE(eventually([&] { return !alive(svc.other); })) << "the new watcher did not know the stack";
  kill_and_reap(svc);
}

TEST_P(Watcher, KillsARunningExecCheckThroughItsTracker) {
  auto watcher = std::make_unique<DeathWatcher>(io, program());
  // No marker in its environment, and the sleep is sh's child, out of reach of sh's
  // parent-death signal: only its group, which the tracker registered, leads to it.
  bool done = false;
  probe_exec(io, {"/bin/sh", "-c", "sleep 1000.25; true"}, {"PATH=/usr/bin:/bin"}, "", 1000,
             [&](bool, std::string) { done = true; }, watcher->tracker());
  pid_t sleeper = -1;
  ASSERT_TRUE(eventually([&] {
    procfs::for_each_pid([&](pid_t pid) {
      if (proc_file(pid, "cmdline") == std::string("sleep\0" "1000.25\0", 14)) sleeper = pid;
      return sleeper > 0;
    });
    return sleeper > 0;
  }));
  watcher.reset();
  bool killed = eventually([&] { return !alive(sleeper); });
  EXPECT_TRUE(killed) << "the check's process survived";
  if (!killed) ::kill(sleeper, SIGKILL);
  auto until = std::chrono::steady_clock::now() + 30s;
  while (!done && std::chrono::steady_clock::now() < until) io.run_one_for(100ms);
  EXPECT_TRUE(done);  // reaped, and its unwatch reached no destroyed watcher
}

INSTANTIATE_TEST_SUITE_P(ExecdAndForked, Watcher, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "execd" : "forked"; });
