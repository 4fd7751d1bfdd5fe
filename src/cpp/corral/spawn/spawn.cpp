#include "corral/spawn/spawn.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

// The child runs on a stack of its own, outside the thread stacks the sanitizers know, and
// never returns: their stack bookkeeping would only warn about it.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CORRAL_CHILD_NO_ASAN __attribute__((no_sanitize("address")))
#endif
#endif
#if !defined(CORRAL_CHILD_NO_ASAN) && defined(__SANITIZE_ADDRESS__)
#define CORRAL_CHILD_NO_ASAN __attribute__((no_sanitize("address")))
#endif
#ifndef CORRAL_CHILD_NO_ASAN
#define CORRAL_CHILD_NO_ASAN
#endif

namespace corral {

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

bool make_pipe(Fd& read_end, Fd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  return true;
}

// ---- the owner's fd limit -----------------------------------------------------------------

namespace {
// The soft limit raise_fd_limit() found, valid once `g_raised` is set. Atomics because
// every engine thread may raise and every spawning thread reads.
std::atomic<rlim_t> g_original_soft{0};
std::atomic<bool> g_raised{false};
std::atomic<bool> g_no_shared_table{false};
}  // namespace

void raise_fd_limit() noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rlim_t found = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) == 0) {
      g_original_soft.store(found);
      g_raised.store(true);
    }
  }
}

std::optional<rlim_t> original_fd_soft_limit() noexcept {
  if (!g_raised.load()) return std::nullopt;
  return g_original_soft.load();
}

void force_copied_fd_table_for_testing(bool on) noexcept { g_no_shared_table.store(on); }

// ---- finding the program ------------------------------------------------------------------

std::string resolve_executable(const std::string& file, const std::vector<std::string>& env,
                               int& error, const std::string& cwd) {
  error = 0;
  // The child chdirs before it execs, so a relative path names a file under `cwd`.
  auto where = [&](const std::string& path) {
    return cwd.empty() || path.front() == '/' ? path : cwd + "/" + path;
  };
  auto check = [&](const std::string& path) {
    std::string real = where(path);
    struct stat st {};
    if (::stat(real.c_str(), &st) != 0) return ENOENT;
    if (S_ISDIR(st.st_mode)) return EACCES;
    if (::access(real.c_str(), X_OK) != 0) return EACCES;
    return 0;
  };
  if (file.empty()) {
    error = ENOENT;
    return file;
  }
  if (file.find('/') != std::string::npos) {
    error = check(file);
    return file;
  }
  std::string path_var = "/usr/local/bin:/usr/bin:/bin";
  for (const auto& kv : env)
    if (kv.rfind("PATH=", 0) == 0) path_var = kv.substr(5);
  int first_error = ENOENT;
  std::size_t pos = 0;
  while (pos <= path_var.size()) {
    auto end = path_var.find(':', pos);
    if (end == std::string::npos) end = path_var.size();
    std::string dir = path_var.substr(pos, end - pos);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + file;
    int e = check(candidate);
    if (e == 0) return candidate;
    if (e == EACCES) first_error = EACCES;  // found, but not runnable: say so
    pos = end + 1;
  }
  error = first_error;
  return file;
}

namespace {

// ---- the hand-over slots ------------------------------------------------------------------
//
// The child shares our fd table (CLONE_FILES), so that nothing is copied at clone time,
// and then unshares it with close_range(first, ~0U, CLOSE_RANGE_UNSHARE): the kernel copies
// only the fds below `first` into the child's private table and drops the rest, however
// many there are. So the fds the child still needs (its stdio and the passed fd) must sit
// below a small `first`. Pipes the engine has just made sit near the top of a dense table
// (fd 11,000 at 4,000 services), so spawn() moves them into a few low fd numbers reserved
// for the purpose the first time it runs, when the table is still small. Between spawns
// each slot holds /dev/null; dup3 replaces a slot's file atomically, so no other thread can
// ever be handed one of those numbers.
struct HandOver {
  // The child's fds 0, 1, 2, and 3.. for passed fds (the watcher's socket, or the
  // listening sockets of socket activation). init() takes them in ascending order, so
  // slots[k] >= 3 + k: see child_main for why that order matters.
  static constexpr int kSlots = 3 + kMaxPassedFds;
  static constexpr std::size_t kStackSize = 256 * 1024;
  std::mutex mu;  // one spawn at a time owns the slots and the stack
  int null_fd = -1;
  int slots[kSlots] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
  char* stack = nullptr;  // the child's stack, lowest page a guard

  bool ready() const noexcept { return stack != nullptr; }

  // Under `mu`. Leaves everything unset on failure (out of fds or memory), so that the
  // next spawn tries again.
  int init() noexcept {
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) return errno;
    int got[kSlots];
    for (int i = 0; i < kSlots; ++i) {
      got[i] = ::fcntl(null, F_DUPFD_CLOEXEC, 3);
      if (got[i] < 0) {
        int e = errno;
        while (i-- > 0) ::close(got[i]);
        ::close(null);
        return e;
      }
    }
    void* mem = ::mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED) {
      int e = errno;
      for (int fd : got) ::close(fd);
      ::close(null);
      return e;
    }
    // A child that overflows its stack faults instead of writing over our heap.
    ::mprotect(mem, static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)), PROT_NONE);
    null_fd = null;
    std::copy(std::begin(got), std::end(got), slots);
    stack = static_cast<char*>(mem);
    return 0;
  }
};

// Never destroyed: an engine may still spawn while static destructors run at exit.
HandOver& hand_over() {
  static HandOver* h = new HandOver;
  return *h;
}

enum Stage : int { kSetup = 1, kChdir = 2, kExec = 3, kNoUnshare = 4 };

// Everything the child needs, prepared before clone: the child shares our memory and must
// not allocate, lock or touch anything another thread could be changing.
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* cwd;
  int fds[3];  // hand-over slots holding the child's stdin, stdout, stderr
  int pass[kMaxPassedFds];  // hand-over slots holding the child's fds 3, 4, ...
  int npass;
  unsigned first_unshared;  // every slot is below it
  bool shared_table;  // CLONE_FILES: unshare before touching any fd
  int death_signal;
  bool new_session;
  bool restore_nofile;
  rlimit nofile;
  pid_t parent;
  char* listen_pid;  // the digits of "LISTEN_PID=..." in envp, filled in by the child
  // Written by the child before it _exits; read by the parent once clone returns (the
  // parent thread is suspended until the child execs or exits: CLONE_VFORK).
  volatile int error;
  volatile int stage;
};

[[noreturn]] CORRAL_CHILD_NO_ASAN void fail(ChildPlan* p, int stage) {
  p->error = errno;
  p->stage = stage;
  ::_exit(127);
}

CORRAL_CHILD_NO_ASAN int child_main(void* arg) {
  auto* p = static_cast<ChildPlan*>(arg);
  // Back to default dispositions: Python ignores SIGPIPE, and an ignored signal would
  // survive exec into the service. Handlers would point into our memory. Without
  // CLONE_SIGHAND this changes the child's copy of the table only.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &dfl, nullptr);
  }
  if (p->new_session && ::setsid() < 0) fail(p, kSetup);
  if (p->listen_pid != nullptr) {
    // Our own pid, known only now: decimal, right-aligned digits written without
    // allocating (the buffer was sized for any pid in the parent).
    char digits[16];
    int n = 0;
    for (auto v = static_cast<unsigned long>(::getpid()); v > 0 || n == 0; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
    for (int i = 0; i < n; ++i) p->listen_pid[i] = digits[n - 1 - i];
    p->listen_pid[n] = '\0';
  }
  if (p->death_signal != 0) {
    if (::prctl(PR_SET_PDEATHSIG, p->death_signal) != 0) fail(p, kSetup);
    // The owner may have died between clone and prctl: then nobody will ever signal us.
    if (::getppid() != p->parent) ::_exit(127);
  }
  if (p->shared_table) {
    // Until this call every fd operation would act on the owner's table, under the feet
    // of its other threads. It makes our table private, keeping only the fds below
    // `first_unshared` (the owner's few low fds and the slots), in one step.
    if (::syscall(SYS_close_range, p->first_unshared, ~0U, CLOSE_RANGE_UNSHARE) != 0) {
      // Too old a kernel, or a seccomp filter: the parent retries with a copied table.
      // Nothing of the owner's has been touched.
      if (errno == ENOSYS || errno == EINVAL || errno == EPERM) fail(p, kNoUnshare);
      fail(p, kSetup);
    }
  }
  // dup2 clears close-on-exec on the copy; every slot is >= 3, so none is overwritten
  // before it has been copied.
  for (int target = 0; target < 3; ++target)
    if (::dup2(p->fds[target], target) < 0) fail(p, kSetup);
  // The passed fds become 3, 4, ..., without close-on-exec (dup2 onto itself would keep the
  // flag). The slots ascend from 3, so the source of fd 3 + i is >= 6 + i and every source
  // still to be copied is >= 7 + i: above every target written so far, so no dup2
  // overwrites a slot before it has been copied.
  for (int i = 0; i < p->npass; ++i) {
    int target = 3 + i;
    if (p->pass[i] == target ? ::fcntl(target, F_SETFD, 0) < 0 : ::dup2(p->pass[i], target) < 0) fail(p, kSetup);
  }
  unsigned first = 3U + static_cast<unsigned>(p->npass);
  if (p->shared_table) {
    // Our private table holds only a few fds now: close them outright.
    if (::syscall(SYS_close_range, first, ~0U, 0U) != 0) fail(p, kSetup);
  } else if (::syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    // A copy of the whole table: mark rather than close, so that this cannot fail half-way;
    // exec then closes them all.
    for (int fd = static_cast<int>(first); fd < 65536; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  // The limit the owner started with, now that every fd we keep is below it.
  if (p->restore_nofile && ::setrlimit(RLIMIT_NOFILE, &p->nofile) != 0) fail(p, kSetup);
  if (p->cwd != nullptr && ::chdir(p->cwd) != 0) fail(p, kChdir);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(p->path, p->argv, p->envp);
  fail(p, kExec);
}

// Starts the child described by `plan` and waits until it has exec'd or failed. Returns
// the pid (the child may already have exited if plan.error is set), or -1 with errno.
std::atomic<std::uint64_t> spawned{0}, begun{0};

pid_t clone_child(ChildPlan& plan, char* stack_top, int& pidfd) {
  int flags = CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD;
  if (plan.shared_table) flags |= CLONE_FILES;
  // Block every signal across clone so that no handler of ours runs in the child while it
  // still shares our memory; the child unblocks after resetting dispositions.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  begun.fetch_add(1);  // before the clone, and spawned after it: see processes_spawned()
  pid_t pid = ::clone(child_main, stack_top, flags, &plan, &pidfd);
  int clone_errno = errno;
  if (pid > 0) spawned.fetch_add(1);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = clone_errno;
  return pid;
}

void reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::string shown(const std::string& path, const std::string& cwd) {
  return cwd.empty() || path.front() == '/' ? path : cwd + "/" + path;
}

}  // namespace

std::uint64_t processes_spawned() noexcept { return spawned.load(); }
std::uint64_t spawns_begun() noexcept { return begun.load(); }
void note_clone_begun() noexcept { begun.fetch_add(1); }
void note_clone_done() noexcept { spawned.fetch_add(1); }
void note_clone_failed() noexcept { begun.fetch_sub(1); }

SpawnResult spawn(const SpawnRequest& req) {
  SpawnResult result;
  if (req.argv.empty()) {
    result.error = EINVAL;
    result.message = "empty command";
    return result;
  }
  int lookup_error = 0;
  std::string path = resolve_executable(req.argv[0], req.env, lookup_error, req.cwd);
  // When the working directory itself is missing, that is the error to report: the child
  // reports its chdir failure exactly.
  bool cwd_usable = req.cwd.empty() || ::access(req.cwd.c_str(), X_OK) == 0;
  if (lookup_error != 0 && cwd_usable) {
    result.error = lookup_error;
    result.message = lookup_error == ENOENT
                         ? fmt::format("command not found: {}", req.argv[0])
                         : fmt::format("permission denied: {} is not executable", shown(path, req.cwd));
    return result;
  }

  std::vector<char*> argv;
  argv.reserve(req.argv.size() + 1);
  for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  envp.reserve(req.env.size() + 1);
  for (const auto& e : req.env) envp.push_back(const_cast<char*>(e.c_str()));
  // Room for any pid; the child writes its own (ChildPlan::listen_pid).
  char listen_pid_entry[32] = "LISTEN_PID=0";
  if (req.listen_pid) envp.push_back(listen_pid_entry);
  envp.push_back(nullptr);

  ChildPlan plan{};
  plan.path = path.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.cwd = req.cwd.empty() ? nullptr : req.cwd.c_str();
  plan.death_signal = req.death_signal;
  plan.new_session = req.new_session;
  plan.parent = ::getpid();
  plan.listen_pid = req.listen_pid ? listen_pid_entry + 11 : nullptr;
  if (auto original = original_fd_soft_limit()) {
    rlimit now{};
    if (::getrlimit(RLIMIT_NOFILE, &now) == 0 && now.rlim_cur != *original) {
      plan.restore_nofile = true;
      plan.nofile = rlimit{std::min(*original, now.rlim_max), now.rlim_max};
    }
  }

  HandOver& h = hand_over();
  std::lock_guard lock(h.mu);
  if (!h.ready()) {
    if (int e = h.init(); e != 0) {
      result.error = e;
      result.message = fmt::format("cannot prepare to spawn: {}", std::strerror(e));
      return result;
    }
  }
  // Put the child's stdio and passed fd into the slots; put /dev/null back afterwards,
  // whatever happens, so that no pipe end stays open here (its reader would never see EOF).
  if (req.more_fds.size() > static_cast<std::size_t>(kMaxPassedFds - 1) || (!req.more_fds.empty() && req.pass_fd < 0)) {
    result.error = EINVAL;
    result.message = fmt::format("cannot pass {} fds to a child (at most {})", req.more_fds.size() + 1, kMaxPassedFds);
    return result;
  }
  int wanted[HandOver::kSlots] = {req.stdin_fd, req.stdout_fd, req.stderr_fd, req.pass_fd};
  for (int i = 4; i < HandOver::kSlots; ++i) wanted[i] = -1;
  for (std::size_t i = 0; i < req.more_fds.size(); ++i) wanted[4 + i] = req.more_fds[i];
  bool filled[HandOver::kSlots] = {};
  auto restore = [&] {
    for (int i = 0; i < HandOver::kSlots; ++i)
      if (filled[i]) ::dup3(h.null_fd, h.slots[i], O_CLOEXEC);
  };
  for (int i = 0; i < HandOver::kSlots; ++i) {
    if (wanted[i] < 0) continue;  // the slot's /dev/null is what the child gets (or no fd 3)
    filled[i] = true;
    if (::dup3(wanted[i], h.slots[i], O_CLOEXEC) < 0) {
      result.error = errno;
      result.message = fmt::format("cannot pass fd {} to the child: {}", wanted[i], std::strerror(errno));
      restore();
      return result;
    }
  }
  for (int i = 0; i < 3; ++i) plan.fds[i] = h.slots[i];
  plan.npass = req.pass_fd >= 0 ? 1 + static_cast<int>(req.more_fds.size()) : 0;
  for (int i = 0; i < plan.npass; ++i) plan.pass[i] = h.slots[3 + i];
  plan.first_unshared = static_cast<unsigned>(*std::max_element(std::begin(h.slots), std::end(h.slots))) + 1;

  pid_t pid = -1;
  int pidfd = -1;
  for (;;) {
    plan.shared_table = !g_no_shared_table.load();
    plan.error = 0;
    plan.stage = 0;
    pidfd = -1;
    pid = clone_child(plan, h.stack + HandOver::kStackSize, pidfd);
    if (pid < 0 || plan.stage != kNoUnshare) break;
    // This kernel cannot unshare part of the table: from now on every child gets a copy
    // of it, as with vfork.
    reap(pid);
    if (pidfd >= 0) ::close(pidfd);
    g_no_shared_table.store(true);
  }
  int clone_errno = errno;
  restore();

  if (pid < 0) {
    result.error = clone_errno;
    result.message = fmt::format("cannot fork: {}", std::strerror(clone_errno));
    return result;
  }
  Fd owned_pidfd(pidfd);
  if (plan.error != 0) {
    // The child never exec'd and has exited: reap exactly that pid (never -1).
    reap(pid);
    result.error = plan.error;
    const char* what = plan.stage == kChdir ? "cannot change directory to"
                       : plan.stage == kExec ? "cannot execute"
                                             : "cannot set up";
    std::string target = plan.stage == kChdir ? req.cwd : shown(path, req.cwd);
    result.message = fmt::format("{} {}: {}", what, target, std::strerror(plan.error));
    return result;
  }
  if (!owned_pidfd) {
    // A kernel before 5.2 ignores CLONE_PIDFD. The child has exec'd and is ours until we
    // reap it, so its pid cannot be recycled yet: pidfd_open is sure to find it.
    owned_pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!owned_pidfd) {
      int e = errno;
      ::kill(pid, SIGKILL);
      reap(pid);
      result.error = e;
      result.message = fmt::format("pidfd_open: {}", std::strerror(e));
      return result;
    }
  }
  result.pid = pid;
  result.pidfd = std::move(owned_pidfd);
  return result;
}

}  // namespace corral
