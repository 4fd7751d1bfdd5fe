// Reads the whole process tree of each running service from /proc, cheaply: membership is
// kept between ticks, so a tick reads only the known members plus the processes created
// since the previous tick (between two pid clocks, see procfs::PidClock), never the
// machine's thousands of unrelated processes. A new process joins a service when it is in
// the service's process group (corral starts each service as a group leader) or when its
// parent is already a member, so a grandchild that called setsid() is still counted as
// long as it was seen once. Members are keyed by (pid, start time), so a recycled pid is
// never mistaken for one. Used by one thread only (the sampler's).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "corral/metrics/procfs.hpp"
#include "corral/metrics/stack_metrics.hpp"
#include "corral/spawn/spawn.hpp"  // Fd

namespace corral {

struct SampleTarget {
  std::size_t service = 0;
  pid_t leader = 0;  // the service's main process and process group id
  // Where pid allocation stood before the run began: its first tick looks from there.
  std::optional<procfs::PidClock> since;
};

class TreeSampler {
 public:
  explicit TreeSampler(bool pss = false) : pss_(pss) {}
  std::vector<TreeReading> sample(const std::vector<SampleTarget>& targets);
  std::size_t processes_read() const noexcept { return read_; }  // in the last tick
  void set_pss(bool on) noexcept { pss_ = on; }

 private:
  // A member's stat and io files stay open between ticks and are read with pread: the
  // path lookup of /proc/PID/... is most of the cost of a read, and an open file keeps
  // referring to the process it was opened for (a read fails once it is gone), so a
  // recycled pid can never be read in its place.
  struct Member {
    unsigned long long start = 0;
    Fd stat, io;
  };
  struct Tree {
    pid_t leader = 0;
    std::unordered_map<pid_t, Member> members;
  };
  void add_member(std::size_t svc, pid_t pid, unsigned long long start);
  void discover(const std::optional<std::pair<pid_t, pid_t>>& range);
  bool pss_;
  std::unordered_map<std::size_t, Tree> trees_;   // by service index
  std::unordered_map<pid_t, std::size_t> owner_;  // member pid -> service index
  std::optional<procfs::PidClock> last_;
  std::size_t read_ = 0;
};

// A stack's sampler: its tree state, used by one thread at a time (the sampler thread's
// ticks, or a caller's on-demand reading when the interval is 0).
struct SamplerState {
  std::mutex mutex;
  TreeSampler tree;
  std::atomic<bool> busy{false};  // a tick is queued or running: the next one is skipped
};

// The fields of /proc/PID/stat the sampler uses.
struct ProcStat {
  pid_t ppid = 0, pgrp = 0;
  unsigned long long utime = 0, stime = 0, cutime = 0, cstime = 0;  // clock ticks
  long threads = 0;
  unsigned long long start = 0;  // clock ticks after boot
  long rss_pages = 0;
};
bool read_proc_stat(pid_t pid, ProcStat& out);
// The same from a stat file already open (pread at 0), or by path when `fd` < 0.
bool read_proc_stat(pid_t pid, int fd, ProcStat& out);

}  // namespace corral
