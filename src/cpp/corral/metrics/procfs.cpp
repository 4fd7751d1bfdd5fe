#include "corral/metrics/procfs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <limits>

namespace corral::procfs {

ssize_t read_small(const char* path, char* buf, std::size_t size) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = ::read(fd, buf, size - 1);
  ::close(fd);
  if (n >= 0) buf[n] = 0;
  return n;
}

int open_fds(pid_t pid) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/fd", pid);
  // Since Linux 6.2 the size of /proc/PID/fd is its number of open fds: one stat() instead
  // of listing the directory. Before, it is 0, and the listing says.
  struct stat st {};
  if (::stat(path, &st) == 0 && st.st_size > 0) return static_cast<int>(st.st_size);
  DIR* d = ::opendir(path);
  if (!d) return 0;
  int n = 0;
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

std::string comm(pid_t pid) {
  char path[64], buf[64];
  std::snprintf(path, sizeof path, "/proc/%d/comm", pid);
  if (read_small(path, buf, sizeof buf) <= 0) return "?";
  std::string s(buf);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

pid_t process_group(pid_t pid) {
  char path[64], buf[512];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (read_small(path, buf, sizeof buf) <= 0) return -1;
  // The command name may hold spaces and parentheses: fields start after the last ')'.
  const char* p = std::strrchr(buf, ')');
  int pgrp = -1;
  if (!p || std::sscanf(p + 2, "%*c %*d %d", &pgrp) != 1) return -1;
  return pgrp;
}

std::optional<PidClock> pid_clock() {
  PidClock c;
  char buf[64];
  if (read_small("/proc/sys/kernel/ns_last_pid", buf, sizeof buf) <= 0) return std::nullopt;
  c.last_pid = static_cast<pid_t>(std::atol(buf));
  // /proc/stat is a few KiB: per-CPU lines first, "processes N" after them.
  char stat[16384];
  if (read_small("/proc/stat", stat, sizeof stat) <= 0) return std::nullopt;
  const char* p = std::strstr(stat, "\nprocesses ");
  if (!p) return std::nullopt;
  c.forks = std::strtoull(p + 11, nullptr, 10);
  return c;
}

long pid_max() {
  char buf[32];
  return read_small("/proc/sys/kernel/pid_max", buf, sizeof buf) > 0 ? std::atol(buf) : 0;
}

std::optional<std::pair<pid_t, pid_t>> pids_between(const PidClock& since, const PidClock& upto) {
  long max = pid_max();
  // After a wrap, pids start again above the 300 reserved ones; keep a margin.
  if (max <= 1000 || upto.forks < since.forks || upto.forks - since.forks >= static_cast<std::uint64_t>(max - 1000))
    return std::nullopt;
  return std::pair{since.last_pid, upto.last_pid};
}

std::optional<std::pair<pid_t, pid_t>> pids_since(const PidClock& since) {
  auto now = pid_clock();
  if (!now) return std::nullopt;
  return pids_between(since, *now);
}

void for_each_pid_in(const std::optional<std::pair<pid_t, pid_t>>& range, const std::function<bool(pid_t)>& f,
                     bool follow) {
  constexpr long walk_limit = 1024;  // pids to try one by one before listing /proc is cheaper
  if (range) {
    long max = pid_max();
    auto [after, upto] = *range;
    auto span_to = [max](long from, long to) { return from <= to ? to - from : (max - from) + to; };
    long pos = after;  // the last pid looked at
    long span = span_to(pos, upto), walked = 0;
    if (max > 0 && span >= 0 && span <= walk_limit) {
      char path[48], status[2048];
      while (span > 0) {
        for (long i = 0; i < span; ++i) {
          long pid = pos + 1 > max ? 1 : pos + 1;
          pos = pid;
          std::snprintf(path, sizeof path, "/proc/%ld/status", pid);
          if (read_small(path, status, sizeof status) <= 0) continue;
          // Thread ids have /proc entries too (not listed, but reachable): only processes,
          // whose thread-group id is their own, count.
          const char* tgid = std::strstr(status, "\nTgid:");
          if (!tgid || std::atol(tgid + 6) != pid) continue;
          if (f(static_cast<pid_t>(pid))) return;
        }
        walked += span;
        if (!follow) return;
        // What was created while we walked (a process that keeps forking): on to the pid
        // allocated last, within a bound.
        char buf[32];
        if (read_small("/proc/sys/kernel/ns_last_pid", buf, sizeof buf) <= 0) return;
        span = span_to(pos, std::atol(buf));
        if (span > walk_limit || walked + span > 4 * walk_limit) break;  // list /proc instead
      }
      if (span <= 0) return;
      // Too many new ones to walk: list what comes after the last pid looked at.
      after = static_cast<pid_t>(pos);
      upto = after;  // (widened just below)
    }
    // Listing /proc: while it is read, pids keep being allocated after `upto`; with
    // `follow` they count too (unless the pids wrapped round: then only the range).
    std::pair<pid_t, pid_t> r{after, upto};
    if (follow && after <= upto) r.second = std::numeric_limits<pid_t>::max();
    // Following a flood of forks could list forever: at most a few pid spaces' worth.
    long budget = 4 * (max > 0 ? max : 32768);
    for_each_pid([&](pid_t pid) { return (follow && --budget < 0) || (in_pid_range(pid, r) && f(pid)); });
    return;
  }
  for_each_pid([&](pid_t pid) { return f(pid); });
}

bool in_pid_range(pid_t pid, std::pair<pid_t, pid_t> range) noexcept {
  auto [after, upto] = range;
  return after <= upto ? (pid > after && pid <= upto) : (pid > after || pid <= upto);
}

}  // namespace corral::procfs
