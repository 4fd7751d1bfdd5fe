// Small /proc readers shared by metrics sampling, the escaped-process scan and the
// listener check, so each reads /proc the same way.
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <cstdlib>
#include <string>

namespace corral::procfs {

// Reads a small /proc file into `buf` (NUL-terminated); returns its length or -1.
ssize_t read_small(const char* path, char* buf, std::size_t size);

// The command name of `pid` (/proc/PID/comm), "?" when it cannot be read.
std::string comm(pid_t pid);

// The process group of `pid`, or -1.
pid_t process_group(pid_t pid);

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
