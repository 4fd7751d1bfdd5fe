// Small /proc readers shared by metrics sampling, the escaped-process scan and the
// listener check, so each reads /proc the same way.
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <optional>
#include <utility>
#include <string>

namespace corral::procfs {

// Reads a small /proc file into `buf` (NUL-terminated); returns its length or -1.
ssize_t read_small(const char* path, char* buf, std::size_t size);

// The command name of `pid` (/proc/PID/comm), "?" when it cannot be read.
std::string comm(pid_t pid);

// The process group of `pid`, or -1.
pid_t process_group(pid_t pid);

// How many fds `pid` has open (0 when it cannot be read).
int open_fds(pid_t pid);

// Where the kernel's pid allocation stands: how many processes were ever forked
// ("processes" in /proc/stat) and the last pid handed out in our pid namespace. Two
// readings bound the pids of every process created between them: they lie after the first
// reading's pid, up to the second's, in pid order (wrapping at pid_max), as long as fewer
// forks than pid_max happened in between. So a search for what a service left behind need
// not open the files of the machine's thousands of older processes.
struct PidClock {
  std::uint64_t forks = 0;
  pid_t last_pid = 0;
  // The reader's own process creations, counted around the reading (0: not known): those
  // finished before it and those begun by the time it was done (see the engine's sweep).
  std::uint64_t ours_done = 0, ours_started = 0;
};
std::optional<PidClock> pid_clock();
// A predicate for "created after `since` (and before now)", or nullopt when that cannot be
// told (a reading failed, or so many forks happened that the pids may have wrapped round).
std::optional<std::pair<pid_t, pid_t>> pids_since(const PidClock& since);
// The same between two readings already taken.
std::optional<std::pair<pid_t, pid_t>> pids_between(const PidClock& since, const PidClock& upto);
long pid_max();  // 0 when it cannot be read
bool in_pid_range(pid_t pid, std::pair<pid_t, pid_t> range) noexcept;

// Calls f(pid) for every process in /proc whose pid lies in `range` (all when nullopt);
// f returns true to stop early. A narrow range is walked pid by pid: listing /proc costs
// milliseconds on a machine with thousands of processes, more than the few lookups.
// `follow`: the range has no end; processes created while it is walked count too (what a
// sweep needs to catch a process that keeps forking).
void for_each_pid_in(const std::optional<std::pair<pid_t, pid_t>>& range, const std::function<bool(pid_t)>& f,
                     bool follow = false);

// Calls f(pid) for every process in /proc; f returns true to stop early.
template <class F>
void for_each_pid(F&& f) {
  DIR* proc = ::opendir("/proc");
  if (!proc) return;
  while (auto* e = ::readdir(proc)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    if (f(static_cast<pid_t>(std::atol(e->d_name)))) break;
  }
  ::closedir(proc);
}

}  // namespace corral::procfs
