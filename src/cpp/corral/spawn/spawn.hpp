// Starting a child the safe way: vfork + exec from the calling (engine) thread, the child in
// its own session with a parent-death signal, only fds 0-2 inherited, signal dispositions
// and mask reset, and exec errors reported exactly instead of as a mystery exit code.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace corral {

// An fd that closes itself. Every fd libcorral opens is O_CLOEXEC from birth.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

struct SpawnRequest {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=value"
  std::string cwd;               // empty: inherit
  int stdin_fd = -1;             // -1: /dev/null
  int stdout_fd = -1;            // -1: /dev/null
  int stderr_fd = -1;            // -1: /dev/null
  int death_signal = 9;          // SIGKILL when the spawning thread dies; 0: none
  bool new_session = true;       // setsid(): own session and process group
  int pass_fd = -1;              // becomes the child's fd 3 (the death watcher's socket)
};

struct SpawnResult {
  pid_t pid = -1;
  Fd pidfd;
  int error = 0;        // errno of the failure, 0 on success
  std::string message;  // "command not found: foo", ...
  explicit operator bool() const noexcept { return error == 0; }
};

// Looks `file` up in PATH (taken from `env`, else a default) the way execvp does, and
// tells "not found" from "not executable" so the error can say which.
std::string resolve_executable(const std::string& file, const std::vector<std::string>& env,
                               int& error);

SpawnResult spawn(const SpawnRequest& req);

// A pipe whose read end is non-blocking; both ends close-on-exec.
bool make_pipe(Fd& read_end, Fd& write_end);

// Raises the soft RLIMIT_NOFILE to the hard limit (500 services need ~2000 fds).
void raise_fd_limit() noexcept;

}  // namespace corral
