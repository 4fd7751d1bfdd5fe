// spawn_fds: the cost of corral::spawn() itself as the owner's fd table grows, with the
// child sharing the table (CLONE_FILES + close_range(CLOSE_RANGE_UNSHARE)) and with the
// child getting a copy of it (the fallback, and what vfork did before). Both in one run,
// interleaved, so that the machine's other load falls on both alike.
//
//   spawn_fds N REPS PROG [ARGS...]
//
// Each rep, for each mode: spawn N copies of PROG the way the engine does (stdout and
// stderr pipes, a pidfd kept per child: 3 fds per service stay open, so the table grows to
// 3N), time the N spawns, then SIGKILL and reap them all (not timed). Prints one JSON line
// with the median of each mode: wall seconds, and CPU seconds (ours during the spawns plus
// the reaped children's, where the table copy and the closing at exec are charged), which
// a loaded machine disturbs far less than wall time. Build (see bench/README.md):
//
//   c++ -O2 -std=c++20 -Isrc/cpp -I"$(python -m cmeel cmake)/include" bench/spawn_fds.cpp
//       <build>/src/cpp/libcorral_core.a -o spawn_fds     (one command line)
#include "corral/spawn/spawn.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

double cpu_seconds(int who) {
  rusage ru{};
  ::getrusage(who, &ru);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return tv(ru.ru_utime) + tv(ru.ru_stime);
}

struct Cost {
  double wall, cpu;
};

Cost spawn_all(int n, const std::vector<std::string>& argv) {
  struct Child {
    corral::Fd out, err, pidfd;
    pid_t pid;
  };
  std::vector<Child> children;
  children.reserve(static_cast<std::size_t>(n));
  double self0 = cpu_seconds(RUSAGE_SELF), children0 = cpu_seconds(RUSAGE_CHILDREN);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    corral::Fd out_r, out_w, err_r, err_w;
    if (!corral::make_pipe(out_r, out_w) || !corral::make_pipe(err_r, err_w)) {
      std::perror("pipe");
      std::exit(1);
    }
    corral::SpawnRequest req;
    req.argv = argv;
    req.env = {"PATH=/usr/bin:/bin"};
    req.stdout_fd = out_w.get();
    req.stderr_fd = err_w.get();
    auto r = corral::spawn(req);
    if (!r) {
      std::fprintf(stderr, "spawn: %s\n", r.message.c_str());
      std::exit(1);
    }
    children.push_back({std::move(out_r), std::move(err_r), std::move(r.pidfd), r.pid});
  }
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double self = cpu_seconds(RUSAGE_SELF) - self0;
  for (auto& c : children) ::kill(c.pid, SIGKILL);
  for (auto& c : children) {
    int status = 0;
    ::waitpid(c.pid, &status, 0);
  }
  return {wall, self + cpu_seconds(RUSAGE_CHILDREN) - children0};
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: spawn_fds N REPS PROG [ARGS...]\n");
    return 2;
  }
  int n = std::atoi(argv[1]);
  int reps = std::atoi(argv[2]);
  std::vector<std::string> prog(argv + 3, argv + argc);
  corral::raise_fd_limit();
  std::vector<double> shared, copied, shared_cpu, copied_cpu;
  for (int rep = 0; rep < reps; ++rep) {
    corral::force_copied_fd_table_for_testing(false);
    Cost s = spawn_all(n, prog);
    corral::force_copied_fd_table_for_testing(true);
    Cost c = spawn_all(n, prog);
    shared.push_back(s.wall);
    shared_cpu.push_back(s.cpu);
    copied.push_back(c.wall);
    copied_cpu.push_back(c.cpu);
  }
  std::printf(
      "{\"n\": %d, \"shared\": %.6f, \"copied\": %.6f, \"shared_cpu\": %.6f, \"copied_cpu\": %.6f}\n", n,
      median(shared), median(copied), median(shared_cpu), median(copied_cpu));
  return 0;
}
