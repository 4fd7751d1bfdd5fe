#include "corral/metrics/tree_sampler.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace corral {

bool read_proc_stat(pid_t pid, ProcStat& out) {
  char path[48], buf[1024];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (procfs::read_small(path, buf, sizeof buf) <= 0) return false;
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

int count_fds(pid_t pid) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR* d = ::opendir(path);
  if (!d) return 0;
  int n = 0;
  while (auto* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// rchar / wchar of /proc/PID/io: every byte read and written through system calls (the
// storage-level counters are 0 in most containers). A reaped child's counts move into its
// parent's, as CPU time does.
void read_io(pid_t pid, std::uint64_t& read, std::uint64_t& write) {
  char path[48], buf[512];
  std::snprintf(path, sizeof path, "/proc/%d/io", pid);
  if (procfs::read_small(path, buf, sizeof buf) <= 0) return;
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
    trees_[svc].members[pid] = st.start;
    owner_[pid] = svc;
    return false;
  });
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
    for (auto& [pid, start] : tree.members) owner_.erase(pid);
    tree = Tree{};
    tree.leader = t.leader;
    ProcStat st;
    if (read_proc_stat(t.leader, st)) {
      tree.members[t.leader] = st.start;
      owner_[t.leader] = t.service;
    }
    if (!t.since) unbounded = true;
    else if (!from || t.since->forks < from->forks) from = t.since;
  }
  for (auto it = trees_.begin(); it != trees_.end();) {
    if (wanted.count(it->first)) {
      ++it;
      continue;
    }
    for (auto& [pid, start] : it->second.members) owner_.erase(pid);
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
      if (!read_proc_stat(it->first, st) || st.start != it->second) {
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
      r.fds += count_fds(it->first);
      read_io(it->first, r.read, r.write);
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
