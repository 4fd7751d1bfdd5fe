#include "corral/os/proc_raw.hpp"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace corral::os {
namespace {

// "/proc/<pid>/<file>" without snprintf (not async-signal-safe).
void proc_path(pid_t pid, const char* file, char (&path)[40]) {
  char digits[16];
  int n = 0;
  auto v = static_cast<unsigned>(pid);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && n < 15);
  std::memcpy(path, "/proc/", 6);
  int at = 6;
  while (n > 0) path[at++] = digits[--n];
  path[at++] = '/';
  std::size_t len = std::strlen(file);
  std::memcpy(path + at, file, len + 1);
}

char chunk[16 * 1024];
char stat[1024];
char dents[32 * 1024];

}  // namespace

int environ_value(pid_t pid, const char* name, char* out, std::size_t cap) noexcept {
  if (cap == 0) return -1;
  char path[40];
  proc_path(pid, "environ", path);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  const std::size_t name_len = std::strlen(name);
  // Variables are NUL-separated and may span chunks: `pos` counts bytes of the current
  // variable; it matches while its first name_len + 1 bytes are "name=", and then its
  // value is copied while it fits.
  std::size_t pos = 0, len = 0;
  bool matching = true, found = false, fits = true;
  while (!found) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      char c = chunk[i];
      if (c == '\0') {
        if (matching && pos > name_len) {
          found = true;
          break;
        }
        pos = 0;
        len = 0;
        matching = true;
        fits = true;
        continue;
      }
      if (matching) {
        if (pos < name_len) {
          matching = c == name[pos];
        } else if (pos == name_len) {
          matching = c == '=';
        } else if (len + 1 < cap) {
          out[len++] = c;
        } else {
          fits = false;
        }
      }
      ++pos;
    }
  }
  ::close(fd);
  if (!found || !fits) return -1;
  out[len] = '\0';
  return static_cast<int>(len);
}

bool for_each_process(void (*visit)(pid_t pid, void* ctx), void* ctx) noexcept {
  int fd = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  // The kernel's struct linux_dirent64, which glibc does not declare.
  struct Dirent64 {
    ino64_t d_ino;
    off64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
  };
  while (true) {
    long n = ::syscall(SYS_getdents64, fd, dents, sizeof dents);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<Dirent64*>(dents + off);
      off += d->d_reclen;
      const char* s = d->d_name;
      if (*s < '1' || *s > '9') continue;
      pid_t pid = 0;
      for (; *s >= '0' && *s <= '9'; ++s) pid = pid * 10 + (*s - '0');
      if (*s == '\0') visit(pid, ctx);
    }
  }
  ::close(fd);
  return true;
}

pid_t process_group(pid_t pid) noexcept {
  char path[40];
  proc_path(pid, "stat", path);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n;
  while ((n = ::read(fd, stat, sizeof stat - 1)) < 0 && errno == EINTR) {
  }
  ::close(fd);
  if (n <= 0) return -1;
  stat[n] = '\0';
  // "pid (comm) state ppid pgrp ...": the command may hold spaces and parentheses, so the
  // fields start after the last ')'.
  const char* p = std::strrchr(stat, ')');
  if (p == nullptr) return -1;
  // ") S 123 456": skip the state and the parent's pid.
  for (int spaces = 0; *p != '\0' && spaces < 3; ++p)
    if (*p == ' ') ++spaces;
  long pgrp = 0;
  bool digits = false;
  for (; *p >= '0' && *p <= '9'; ++p) {
    pgrp = pgrp * 10 + (*p - '0');
    digits = true;
  }
  return digits ? static_cast<pid_t>(pgrp) : -1;
}

}  // namespace corral::os
