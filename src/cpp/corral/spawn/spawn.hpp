// Starting a child the safe way: clone(CLONE_VM | CLONE_VFORK | CLONE_FILES) + exec from the
// calling (engine) thread, the child in its own session with a parent-death signal, only
// fds 0-2 (and a passed fd 3) inherited, signal dispositions and mask reset, the owner's
// original RLIMIT_NOFILE restored, and exec errors reported exactly instead of as a
// mystery exit code. The child shares the parent's fd table until it unshares only the
// few low fds it needs, so the cost of a spawn does not grow with the number of fds the
// owner holds (4,000 services hold 12,000).
#pragma once

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <utility>
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

// How many fds a child can be passed besides stdio (fds 3..3+N-1).
inline constexpr int kMaxPassedFds = 8;

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
  std::vector<int> more_fds;     // become fds 4, 5, ... (with pass_fd set; at most 7)
  // Adds LISTEN_PID=<the child's own pid> to its environment, written by the child after
  // the clone (socket activation: only the process the sockets were meant for takes them).
  bool listen_pid = false;
};

struct SpawnResult {
  pid_t pid = -1;
  Fd pidfd;
  int error = 0;        // errno of the failure, 0 on success
  std::string message;  // "command not found: foo", ...
  explicit operator bool() const noexcept { return error == 0; }
};

// Looks `file` up in PATH (taken from `env`, else a default) the way execvp does, and
// tells "not found" from "not executable" so the error can say which. A relative path
// (`./server.sh`, or a PATH entry that is not absolute) is looked up in `cwd` when one is
// given, as a shell would after `cd cwd`; the result is what to pass to execve after the
// child's chdir(cwd), so it stays relative.
std::string resolve_executable(const std::string& file, const std::vector<std::string>& env,
                               int& error, const std::string& cwd = {});

SpawnResult spawn(const SpawnRequest& req);

// How many processes spawn() has created in this program so far, counted after each clone
// returns. Beside the kernel's fork counter it tells whether anything else forked (the
// escapee sweep skips its scan when nothing did).
std::uint64_t processes_spawned() noexcept;
// Clones begun so far (counted before each clone, whether it succeeds or not).
std::uint64_t spawns_begun() noexcept;

// The same two counts for a clone of corral's own that is not a spawn: a thread it starts
// (the control server's, its helper threads, the Python layer's). Begun before the clone,
// done after it succeeded: a thread started while services run must not look like a fork
// of someone else's to the escapee sweep, which then scans the pids of the window.
void note_clone_begun() noexcept;
void note_clone_done() noexcept;
// A clone counted as begun that did not happen (the thread could not be created).
void note_clone_failed() noexcept;

// A thread of corral's own: counted as above, with every signal blocked in it
// (asynchronous signals belong to the host program's threads). The caller's signal mask
// is restored whatever happens.
template <class F>
std::thread start_own_thread(F&& f) {
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &old);
  struct Restore {
    sigset_t* mask;
    ~Restore() { ::pthread_sigmask(SIG_SETMASK, mask, nullptr); }
  } restore{&old};
  note_clone_begun();
  try {
    std::thread t(std::forward<F>(f));
    note_clone_done();
    return t;
  } catch (...) {
    note_clone_failed();
    throw;
  }
}

// A pipe whose read end is non-blocking; both ends close-on-exec.
bool make_pipe(Fd& read_end, Fd& write_end);

// Raises the process's soft RLIMIT_NOFILE to the hard limit (500 services need ~2000 fds)
// and remembers the soft limit it found, which every child spawn() starts gets back before
// exec: a service must not inherit a limit it did not ask for (programs that still use
// select() break above 1024). RLIMIT_NOFILE is per process, so the owner's own threads and
// the subprocesses it starts by other means see the raised limit (docs/architecture.md).
void raise_fd_limit() noexcept;

// The soft limit raise_fd_limit() found when it last raised it; nullopt if it never had to.
std::optional<rlim_t> original_fd_soft_limit() noexcept;

// Tests only: spawn as on a kernel without close_range(CLOSE_RANGE_UNSHARE) (before 5.9, or
// a seccomp filter that refuses it), where the child gets a copy of the whole fd table.
void force_copied_fd_table_for_testing(bool on) noexcept;

}  // namespace corral
