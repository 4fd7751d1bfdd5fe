// The owner may die without warning (SIGKILL, os._exit, a Jupyter kernel restart). A
// parent-death signal reaches only our direct children, not what they spawned, so a small
// watcher process outlives us: we tell it the process group of every service, and when its
// end of the socket reads EOF (we are gone, however we went) it SIGKILLs those groups.
#pragma once

#include <sys/types.h>

#include "corral/spawn/spawn.hpp"

namespace corral {

class DeathWatcher {
 public:
  // Forks the watcher. Must be called from the engine thread. On failure the watcher is
  // simply absent (parent-death signals still cover direct children).
  DeathWatcher();
  // Closes our end: the watcher kills what is still registered (nothing, after a clean
  // stop) and exits; we reap it.
  ~DeathWatcher();
  DeathWatcher(const DeathWatcher&) = delete;
  DeathWatcher& operator=(const DeathWatcher&) = delete;

  void watch(pid_t pgid) noexcept { send(pgid); }
  void unwatch(pid_t pgid) noexcept { send(-pgid); }
  pid_t pid() const noexcept { return pid_; }

  // In a forked child of the owner: forget the watcher without telling it anything.
  void abandon() noexcept;

 private:
  void send(int value) noexcept;
  Fd sock_;
  pid_t pid_ = -1;
};

}  // namespace corral
