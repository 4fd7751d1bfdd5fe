// The async-signal-safe /proc readers the death watcher sweeps with, on real processes.
#include "corral/os/proc_raw.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "corral/spawn/spawn.hpp"

using namespace corral;

namespace {

// A paused helper with exactly `env` as its environment. It is waited for until it prints:
// right after a vfork'd exec returns, the kernel may not have laid out the new
// environment yet (environ then reads empty).
struct Paused {
  explicit Paused(std::vector<std::string> env) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    Fd r(p[0]), w(p[1]);
    SpawnRequest req;
    req.argv = {CORRAL_HELPER, "print", "up", "pause"};
    req.env = std::move(env);
    req.stdout_fd = w.get();
    auto res = spawn(req);
    EXPECT_TRUE(res) << res.message;
    w.reset();
    char c;
    while (::read(r.get(), &c, 1) == 1 && c != '\n') {
    }
    pid = res.pid;
    pidfd = std::move(res.pidfd);
  }
  ~Paused() {
    ::kill(pid, SIGKILL);
    siginfo_t info{};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd.get()), &info, WEXITED);
  }
  pid_t pid = -1;
  Fd pidfd;
};

std::string value_of(pid_t pid, const char* name, std::size_t cap = 256) {
  std::string out(cap, '\0');
  int n = os::environ_value(pid, name, out.data(), cap);
  return n < 0 ? "<none>" : out.substr(0, static_cast<std::size_t>(n));
}

}  // namespace

TEST(ProcRaw, FindsAVariableExactlyByName) {
  Paused p({"A=1", "CORRAL_STACKS=no", "CORRAL_STACK=web-12-3", "B=2"});
  EXPECT_EQ(value_of(p.pid, "CORRAL_STACK"), "web-12-3");
  EXPECT_EQ(value_of(p.pid, "B"), "2");
  EXPECT_EQ(value_of(p.pid, "CORRAL"), "<none>");  // a prefix of a name is not the name
  EXPECT_EQ(value_of(p.pid, "MISSING"), "<none>");
}

TEST(ProcRaw, AnEmptyValueIsFoundAndATooLongOneIsNot) {
  Paused p({"EMPTY=", "LONG=" + std::string(300, 'x')});
  EXPECT_EQ(value_of(p.pid, "EMPTY"), "");
  EXPECT_EQ(value_of(p.pid, "LONG"), "<none>");
  EXPECT_EQ(value_of(p.pid, "LONG", 301), std::string(300, 'x'));
}

TEST(ProcRaw, ReadsAnEnvironmentLargerThanOneChunk) {
  // The marker last, after 100 KiB of other variables, split across read chunks.
  std::vector<std::string> env;
  for (int i = 0; i < 100; ++i) env.push_back("FILL" + std::to_string(i) + "=" + std::string(1000 + i, 'f'));
  env.push_back("CORRAL_STACK=late-1-1");
  Paused p(env);
  EXPECT_EQ(value_of(p.pid, "CORRAL_STACK"), "late-1-1");
}

TEST(ProcRaw, ListsEveryProcess) {
  Paused p({"A=1"});
  std::set<pid_t> seen;
  ASSERT_TRUE(os::for_each_process([](pid_t pid, void* ctx) { static_cast<std::set<pid_t>*>(ctx)->insert(pid); },
                                   &seen));
  EXPECT_TRUE(seen.count(::getpid()));
  EXPECT_TRUE(seen.count(p.pid));
  EXPECT_TRUE(seen.count(1));
}
