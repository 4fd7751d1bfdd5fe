// The death watcher's own side (see watcher.hpp): it may run in a fork of a multi-threaded
// process, so until it exits it makes only async-signal-safe calls (raw syscalls, no malloc,
// no locks). Its tables are static memory, touched only here.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "corral/engine/watcher.hpp"
#include "corral/engine/watcher_protocol.hpp"
#include "corral/os/pidfd.hpp"
#include "corral/os/proc_raw.hpp"

namespace corral {
namespace {

namespace wp = watch_protocol;

struct Group {
  pid_t pgid;
  int pidfd;  // the leader's, -1 when the owner could not open one
};
constexpr int max_groups = 1 << 16;
Group groups[max_groups];
int group_count = 0;

constexpr int max_stacks = 4096;
char stacks[max_stacks][wp::max_id + 1];
int stack_count = 0;

unsigned char message[wp::max_message];
alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * wp::max_fds)];

void add_group(pid_t pgid, int pidfd) {
  if (group_count < max_groups)
    groups[group_count++] = Group{pgid, pidfd};
  else if (pidfd >= 0)
    ::close(pidfd);
}

void remove_group(pid_t pgid) {
  for (int i = 0; i < group_count; ++i)
    if (groups[i].pgid == pgid) {
      if (groups[i].pidfd >= 0) ::close(groups[i].pidfd);
      groups[i] = groups[--group_count];
      return;
    }
}

int find_stack(const char* id) {
  for (int i = 0; i < stack_count; ++i)
    if (std::strcmp(stacks[i], id) == 0) return i;
  return -1;
}

void add_stack(const char* id, std::size_t len) {
  if (stack_count == max_stacks) return;
  std::memcpy(stacks[stack_count], id, len);
  stacks[stack_count][len] = '\0';
  if (find_stack(stacks[stack_count]) < 0) ++stack_count;
}

void remove_stack(const char* id, std::size_t len) {
  char key[wp::max_id + 1];
  std::memcpy(key, id, len);
  key[len] = '\0';
  int i = find_stack(key);
  if (i < 0) return;
  if (i != --stack_count) std::memcpy(stacks[i], stacks[stack_count], sizeof stacks[i]);
}

// One message: its records, with the pidfds that ride along in record order.
void apply(std::size_t size, const int* fds, int nfds) {
  int next_fd = 0;
  for (std::size_t p = 0; p < size;) {
    char op = static_cast<char>(message[p++]);
    if (op == wp::watch_group || op == wp::watch_group_bare || op == wp::unwatch_group) {
      if (p + sizeof(pid_t) > size) break;
      pid_t pgid;
      std::memcpy(&pgid, message + p, sizeof pgid);
      p += sizeof pgid;
      if (op == wp::unwatch_group) {
        remove_group(pgid);
      } else {
        // A pidfd the kernel could not hand us (we were out of fds: MSG_CTRUNC) is -1.
        int fd = op == wp::watch_group ? (next_fd < nfds ? fds[next_fd++] : -1) : -1;
        add_group(pgid, fd);
      }
    } else if (op == wp::watch_stack || op == wp::unwatch_stack) {
      if (p >= size) break;
      std::size_t len = message[p++];
      if (p + len > size) break;
      if (op == wp::watch_stack)
        add_stack(reinterpret_cast<const char*>(message + p), len);
      else
        remove_stack(reinterpret_cast<const char*>(message + p), len);
      p += len;
    } else {
      break;  // not ours to guess at
    }
  }
  while (next_fd < nfds) ::close(fds[next_fd++]);
}

// The rule is in watcher.hpp: through the leader's pidfd, never by a bare number unless
// that pidfd shows the leader still holds it.
void kill_groups() {
  for (int i = 0; i < group_count; ++i) {
    const Group& g = groups[i];
    if (g.pidfd < 0) continue;
    if (::syscall(SYS_pidfd_send_signal, g.pidfd, SIGKILL, nullptr, os::pidfd_process_group) == 0) continue;
    if (errno != EINVAL) continue;  // ESRCH: nobody is left in the group
    if (::syscall(SYS_pidfd_send_signal, g.pidfd, 0, nullptr, 0U) == 0) ::kill(-g.pgid, SIGKILL);
  }
}

struct Sweep {
  pid_t self;
  int killed;
};
pid_t owner_group = -1, owner_session = -1;  // the owner's, taken before our setsid
char value[wp::max_id + 2];

bool marked(pid_t pid) {
  return os::environ_value(pid, "CORRAL_STACK", value, sizeof value) >= 0 && find_stack(value) >= 0;
}

void sweep_one(pid_t pid, void* ctx) {
  auto& sweep = *static_cast<Sweep*>(ctx);
  if (pid == sweep.self || !marked(pid)) return;
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
  if (fd < 0) return;
  // The pid may have been recycled between the read and the open: look again, now that the
  // pidfd pins the process we will signal (a later recycling makes the signal fail).
  if (marked(pid)) {
    // One that hops (fork, exit, the child carries on) is gone by the time its pid is
    // signalled; its process group stays. The same rule as the engine's sweep (sweep.cpp):
    // not the owner's group or session, no leader or a marked one, the member checked alive
    // and still in the group right before.
    pid_t group = os::process_group(pid);
    bool ours = group > 1 && group != owner_group && group != owner_session &&
                (group == pid || os::process_group(group) != group || marked(group));
    if (ours && ::syscall(SYS_pidfd_send_signal, fd, 0, nullptr, 0U) == 0 && os::process_group(pid) == group)
      ::kill(-group, SIGKILL);
    if (::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0U) == 0) ++sweep.killed;
  }
  ::close(fd);
}

// Everything that still carries a watched stack's marker. Again until a pass kills nothing:
// what an escapee forked while we were reading /proc shows up on the next pass. Bounded, in
// case some process keeps its marker readable while it dies.
void sweep_markers() {
  if (stack_count == 0) return;
  Sweep sweep{::getpid(), 0};
  for (int pass = 0; pass < 100; ++pass) {
    sweep.killed = 0;
    if (!os::for_each_process(sweep_one, &sweep) || sweep.killed == 0) return;
  }
}

}  // namespace

[[noreturn]] void run_watcher(int fd) {
  owner_group = ::getpgrp();
  owner_session = ::getsid(0);
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
  if (fd != 3 && ::dup2(fd, 3) < 0) ::_exit(1);
  ::syscall(SYS_close_range, 4U, ~0U, 0U);
  ::close(0);
  ::close(1);
  ::close(2);
  // One pidfd per watched group: as many fds as the owner has services.
  struct rlimit lim {};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
  }
  while (true) {
    iovec iov{message, sizeof message};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(3, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the owner is gone
    int fds[wp::max_fds];
    int nfds = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      int k = static_cast<int>((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int i = 0; i < k && nfds < wp::max_fds; ++i)
        std::memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
    }
    apply(static_cast<std::size_t>(n), fds, nfds);
  }
  kill_groups();
  sweep_markers();
  ::_exit(0);
}

}  // namespace corral
