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
  struct Tree {
    pid_t leader = 0;
    std::unordered_map<pid_t, unsigned long long> members;  // pid -> start time
  };
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

}  // namespace corral
