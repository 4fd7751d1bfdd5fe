#include "corral/checks/listener.hpp"

#include "corral/metrics/procfs.hpp"

#include <dirent.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>

namespace corral {
namespace {

// Inodes of the sockets in LISTEN state (st 0A) on `port`, from one /proc/net table.
void listening_inodes(const char* table, int port, std::set<unsigned long>& out) {
  FILE* f = std::fopen(table, "re");
  if (!f) return;
  char line[512];
  (void)std::fgets(line, sizeof line, f);  // header
  while (std::fgets(line, sizeof line, f)) {
    // "  0: 0100007F:1F90 00000000:0000 0A ... uid timeout inode"
    char local[128], remote[128], st[8];
    unsigned long inode = 0;
    if (std::sscanf(line, "%*s %127s %127s %7s %*s %*s %*s %*s %*s %lu", local, remote, st, &inode) != 4) continue;
    const char* colon = std::strrchr(local, ':');
    if (!colon || std::strcmp(st, "0A") != 0) continue;
    if (static_cast<int>(std::strtol(colon + 1, nullptr, 16)) == port && inode != 0) out.insert(inode);
  }
  std::fclose(f);
}

bool holds_inode(pid_t pid, const std::set<unsigned long>& inodes) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR* d = ::opendir(path);
  if (!d) return false;
  bool found = false;
  char link[300], target[64];
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::snprintf(link, sizeof link, "/proc/%d/fd/%s", pid, e->d_name);
    ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = 0;
    unsigned long inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) == 1 && inodes.count(inode)) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace

std::optional<std::string> foreign_listener(int port, pid_t pgid) {
  std::set<unsigned long> inodes;
  listening_inodes("/proc/net/tcp", port, inodes);
  listening_inodes("/proc/net/tcp6", port, inodes);
  if (inodes.empty() || pgid <= 0) return std::nullopt;  // cannot tell: do not block readiness
  // The leader nearly always holds it: one directory read in the common case.
  if (holds_inode(pgid, inodes)) return std::nullopt;
  bool ours = false;
  pid_t other = 0;
  procfs::for_each_pid([&](pid_t pid) {
    if (procfs::process_group(pid) == pgid && holds_inode(pid, inodes)) return ours = true;
    return false;
  });
  if (ours) return std::nullopt;
  procfs::for_each_pid([&](pid_t pid) {
    if (holds_inode(pid, inodes)) {
      other = pid;
      return true;
    }
    return false;
  });
  if (other > 0)
    return fmt::format("port {} is held by pid {} ({}), not by the service", port, other, procfs::comm(other));
  return fmt::format("port {} is held by a process outside the service", port);
}

}  // namespace corral
