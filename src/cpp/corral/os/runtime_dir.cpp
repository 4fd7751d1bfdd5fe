#include "corral/os/runtime_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

namespace corral::os {
namespace {

[[noreturn]] void refuse(const std::string& path, const std::string& why) {
  throw std::runtime_error("unsafe runtime directory " + path + ": " + why +
                           " (remove it, or set CORRAL_RUNTIME_DIR to a directory of your own)");
}

// Usable as is: a real directory, ours, closed to everyone else. No creating, no fixing:
// $XDG_RUNTIME_DIR belongs to the session manager, and we only decide whether to trust it.
bool trusted_as_is(const char* path) {
  int fd = ::open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  bool ok = ::fstat(fd, &st) == 0 && st.st_uid == ::geteuid() && (st.st_mode & 077) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::string private_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
    throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  // O_NOFOLLOW: a symlink planted at the path fails here (ELOOP) instead of being followed;
  // the checks below then look at what we opened, not at the path a second time.
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) refuse(path, "it is a symbolic link");
    if (err == ENOTDIR) refuse(path, "it is not a directory");
    throw std::runtime_error("cannot open " + path + ": " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw std::runtime_error("cannot stat " + path + ": " + std::strerror(err));
  }
  if (st.st_uid != ::geteuid()) {
    ::close(fd);
    refuse(path, "it is owned by uid " + std::to_string(st.st_uid) + ", not by uid " + std::to_string(::geteuid()));
  }
  // Ours but open to others (made by an older corral, or by hand): narrow it. Whatever was
  // planted inside meanwhile is refused where it is used (subdirectories by this check,
  // files by O_NOFOLLOW).
  if ((st.st_mode & 077) != 0 && ::fchmod(fd, 0700) != 0) {
    int err = errno;
    ::close(fd);
    throw std::runtime_error("cannot make " + path + " private: " + std::strerror(err));
  }
  ::close(fd);
  return path;
}

std::string runtime_dir() {
  if (const char* d = std::getenv("CORRAL_RUNTIME_DIR"); d && *d) return private_dir(d);
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x && *x == '/' && trusted_as_is(x))
    return private_dir(std::string(x) + "/corral");
  std::string tmp = "/tmp";
  if (const char* t = std::getenv("TMPDIR"); t && *t == '/') tmp = t;
  while (tmp.size() > 1 && tmp.back() == '/') tmp.pop_back();
  return private_dir(tmp + "/corral-" + std::to_string(::getuid()));
}

int open_private(const std::string& path, int flags) {
  return ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, 0600);
}

}  // namespace corral::os
