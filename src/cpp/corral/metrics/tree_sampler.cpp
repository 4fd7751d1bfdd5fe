#include "corral/metrics/tree_sampler.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace corral {

namespace {

// A small /proc file read in one pread from an open fd, or by path when there is none.
ssize_t read_proc(pid_t pid, int fd, const char* file, char* buf, std::size_t size) {
  if (fd < 0) {
    char path[48];
    std::snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    return procfs::read_small(path, buf, size);
  }
  ssize_t n = ::pread(fd, buf, size - 1, 0);
  if (n >= 0) buf[n] = 0;
  return n;
}

Fd open_proc(pid_t pid, const char* file) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
  return Fd(::open(path, O_RDONLY | O_CLOEXEC));  // -1 (read by path then) past the fd limit
}

}  // namespace

bool read_proc_stat(pid_t pid, ProcStat& out) { return read_proc_stat(pid, -1, out); }

bool read_proc_stat(pid_t pid, int fd, ProcStat& out) {
  char buf[1024];
  if (read_proc(pid, fd, "stat", buf, sizeof buf) <= 0) return false;
  // The command name may hold spaces and parentheses: the fields start after the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (!p) return false;
  int n = std::sscanf(p + 2,
                      "%*c %d %d %*d %*d %*d %*u %*u %*u %*u %*u "  // 3..13
                      "%llu %llu %llu %llu %*d %*d %ld %*d %llu %*u %ld",  // 14..24
                      &out.ppid, &out.pgrp, &out.utime, &out.stime, &out.cutime, &out.cstime, &out.threads,
                      &out.start, &out.rss_pages);
  return n == 9;
}

namespace {

// rchar / wchar of /proc/PID/io: every byte read and written through system calls (the
// storage-level counters are 0 in most containers). A reaped child's counts move into its
// parent's, as CPU time does.
void read_io(pid_t pid, int fd, std::uint64_t& read, std::uint64_t& write) {
  char buf[512];
  if (read_proc(pid, fd, "io", buf, sizeof buf) <= 0) return;
  if (const char* r = std::strstr(buf, "rchar:")) read += std::strtoull(r + 6, nullptr, 10);
  if (const char* w = std::strstr(buf, "wchar:")) write += std::strtoull(w + 6, nullptr, 10);
}

// Proportional set size from smaps_rollup: ~180 us per process, so only on request.
std::uint64_t read_pss(pid_t pid) {
  char path[48], buf[2048];
  std::snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
  if (procfs::read_small(path, buf, sizeof buf) <= 0) return 0;
  const char* p = std::strstr(buf, "\nPss:");
  return p ? std::strtoull(p + 5, nullptr, 10) * 1024 : 0;
}

}  // namespace

void TreeSampler::discover(const std::optional<std::pair<pid_t, pid_t>>& range) {
  std::unordered_map<pid_t, std::size_t> by_group;
  for (auto& [svc, tree] : trees_) by_group[tree.leader] = svc;
  procfs::for_each_pid_in(range, [&](pid_t pid) {
    if (owner_.count(pid)) return false;
    ProcStat st;
    if (!read_proc_stat(pid, st)) return false;
    ++read_;
    std::size_t svc;
    if (auto g = by_group.find(st.pgrp); g != by_group.end()) {
      svc = g->second;
    } else if (auto o = owner_.find(st.ppid); o != owner_.end()) {
      svc = o->second;  // left the group (setsid) but its parent is ours
    } else {
      return false;
    }
    add_member(svc, pid, st.start);
    return false;
  });
}

void TreeSampler::add_member(std::size_t svc, pid_t pid, unsigned long long start) {
  auto& m = trees_[svc].members[pid];
  m.start = start;
  m.stat = open_proc(pid, "stat");
  m.io = open_proc(pid, "io");
  owner_[pid] = svc;
}

std::vector<TreeReading> TreeSampler::sample(const std::vector<SampleTarget>& targets) {
  static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  read_ = 0;
  auto now = procfs::pid_clock();

  // Which trees are new (a new run), and from where their processes must be looked for.
  // Trees seen before need what was created since the last tick; a new one what was
  // created since its run began. Without a clock, every process is looked at once.
  std::optional<procfs::PidClock> from = last_;
  bool unbounded = !now;
  std::unordered_map<std::size_t, bool> wanted;
  for (const auto& t : targets) {
    wanted[t.service] = true;
    auto& tree = trees_[t.service];
    if (tree.leader == t.leader) continue;
    for (auto& [pid, member] : tree.members) owner_.erase(pid);
    tree = Tree{};
    tree.leader = t.leader;
    ProcStat st;
    if (read_proc_stat(t.leader, st)) add_member(t.service, t.leader, st.start);
    if (!t.since) unbounded = true;
    else if (!from || t.since->forks < from->forks) from = t.since;
  }
  for (auto it = trees_.begin(); it != trees_.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    for (auto& [pid, member] : it->second.members) owner_.erase(pid);
    it = trees_.erase(it);
  }

  if (!from) unbounded = true;
  std::optional<std::pair<pid_t, pid_t>> range;
  if (!unbounded && now) range = procfs::pids_between(*from, *now);
  // With no bound (no clock, or more forks than pid_max since), all of /proc is listed.
  if (!trees_.empty()) discover(range);
  if (now) last_ = now;

  std::vector<TreeReading> out;
  out.reserve(targets.size());
  for (const auto& t : targets) {
    auto& tree = trees_[t.service];
    TreeReading r;
    r.service = t.service;
    r.leader = t.leader;
    unsigned long long cpu_user = 0, cpu_system = 0;
    for (auto it = tree.members.begin(); it != tree.members.end();) {
      ProcStat st;
      ++read_;
      if (!read_proc_stat(it->first, it->second.stat.get(), st) || st.start != it->second.start) {
        owner_.erase(it->first);  // gone (or its pid recycled)
        it = tree.members.erase(it);
        continue;
      }
      r.processes += 1;
      r.threads += static_cast<int>(st.threads);
      // The children a member reaped are in its cutime/cstime: the tree's CPU time keeps
      // what its short-lived processes used.
      cpu_user += st.utime + st.cutime;
      cpu_system += st.stime + st.cstime;
      r.rss += static_cast<std::uint64_t>(std::max(0L, st.rss_pages)) * page;
      r.fds += procfs::open_fds(it->first);
      read_io(it->first, it->second.io.get(), r.read, r.write);
      if (pss_) r.pss += read_pss(it->first);
      ++it;
    }
    r.user = static_cast<double>(cpu_user) / ticks;
    r.system = static_cast<double>(cpu_system) / ticks;
    out.push_back(r);
  }
  return out;
}

}  // namespace corral
