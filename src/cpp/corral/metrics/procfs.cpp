#include "corral/metrics/procfs.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace corral::procfs {

ssize_t read_small(const char* path, char* buf, std::size_t size) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = ::read(fd, buf, size - 1);
  ::close(fd);
  if (n >= 0) buf[n] = 0;
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

}  // namespace corral::procfs
