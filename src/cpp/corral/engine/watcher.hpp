// The owner may die without warning (SIGKILL, os._exit, a Jupyter kernel restart). A
// parent-death signal reaches only our direct children, not what they spawned, so a small
// watcher process outlives us: we tell it the process group of every service, and when its
// end of the socket reads EOF (we are gone, however we went) it SIGKILLs those groups.
#pragma once

#include <sys/types.h>

#include <string>

#include "corral/spawn/spawn.hpp"

namespace corral {

// The watcher's loop on socket `fd`: records process groups, SIGKILLs them at EOF, exits.
// Async-signal-safe only, so that it can run in a fork of a multi-threaded process.
[[noreturn]] void run_watcher(int fd);

class DeathWatcher {
 public:
  // Starts the watcher: exec's `program` (the small corral-watch binary shipped beside the
  // module) when it is given and runnable, else forks this process. A fork keeps a
  // copy-on-write image of the host (a notebook's gigabytes turn into the watcher's own as
  // the host rewrites them), so the exec'd program is preferred. Must be called from the
  // engine thread. On failure the watcher is simply absent (parent-death signals still
  // cover direct children).
  explicit DeathWatcher(const std::string& program = {});
  // Closes our end: the watcher kills what is still registered (nothing, after a clean
  // stop) and exits; we reap it.
  ~DeathWatcher();
  DeathWatcher(const DeathWatcher&) = delete;
  DeathWatcher& operator=(const DeathWatcher&) = delete;

  void watch(pid_t pgid) noexcept { send(pgid); }
  void unwatch(pid_t pgid) noexcept { send(-pgid); }
  pid_t pid() const noexcept { return pid_; }
  bool execd() const noexcept { return execd_; }

  // In a forked child of the owner: forget the watcher without telling it anything.
  void abandon() noexcept;

 private:
  void send(int value) noexcept;
  Fd sock_;
  pid_t pid_ = -1;
  bool execd_ = false;
};

}  // namespace corral
