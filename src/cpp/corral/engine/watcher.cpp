#include "corral/engine/watcher.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace corral {
namespace {

// The watcher runs in a forked copy of a multi-threaded process, so until it exits it may
// only make async-signal-safe calls: read, kill, close, _exit. Its table is static memory
// (copy-on-write from the parent, touched only here), so it never allocates.
constexpr int max_groups = 1 << 16;
pid_t groups[max_groups];

}  // namespace

[[noreturn]] void run_watcher(int fd) {
  ::setsid();  // Ctrl+C on the owner's terminal must not take the watcher down with it
  ::prctl(PR_SET_NAME, "corral-watch", 0, 0, 0);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ign, nullptr);
  ::sigaction(SIGINT, &ign, nullptr);
  ::sigaction(SIGHUP, &ign, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Keep only our socket: the owner's other fds (service pipes, the user's files) must not
  // be held open by us.
  if (::dup2(fd, 3) < 0) ::_exit(1);
  ::syscall(SYS_close_range, 4U, ~0U, 0U);
  ::close(0);
  ::close(1);
  ::close(2);
  int count = 0;
  while (true) {
    int value = 0;
    ssize_t n = ::read(3, &value, sizeof value);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof value)) break;  // EOF: the owner is gone
    if (value > 0) {
      if (count < max_groups) groups[count++] = value;
    } else {
      for (int i = 0; i < count; ++i)
        if (groups[i] == -value) {
          groups[i] = groups[--count];
          break;
        }
    }
  }
  for (int i = 0; i < count; ++i) {
    ::kill(-groups[i], SIGKILL);
  }
  ::_exit(0);
}

DeathWatcher::DeathWatcher(const std::string& program) {
  int sv[2];
  // SEQPACKET keeps each 4-byte record whole; CLOEXEC keeps the socket out of services.
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return;
  Fd ours(sv[0]), theirs(sv[1]);
  if (!program.empty() && ::access(program.c_str(), X_OK) == 0) {
    SpawnRequest req;
    req.argv = {program};
    req.pass_fd = theirs.get();
    req.death_signal = 0;  // it must outlive us: that is its whole purpose
    auto r = spawn(req);
    if (r) {
      pid_ = r.pid;
      sock_ = std::move(ours);
      execd_ = true;
      return;
    }
  }
  pid_t pid = ::fork();
  if (pid < 0) return;
  if (pid == 0) {
    ::close(sv[0]);
    run_watcher(sv[1]);
  }
  pid_ = pid;
  sock_ = std::move(ours);
}

void DeathWatcher::send(int value) noexcept {
  if (!sock_) return;
  // MSG_NOSIGNAL: if the watcher died, we get EPIPE instead of a SIGPIPE that would kill
  // a C++ host program.
  while (::send(sock_.get(), &value, sizeof value, MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

void DeathWatcher::abandon() noexcept {
  sock_.reset();
  pid_ = -1;
}

DeathWatcher::~DeathWatcher() {
  sock_.reset();
  if (pid_ > 0) {
    int status = 0;
    // Our own child, by its exact pid (never -1).
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

}  // namespace corral
