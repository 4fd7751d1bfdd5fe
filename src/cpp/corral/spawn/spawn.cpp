#include "corral/spawn/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
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

void raise_fd_limit() noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

std::string resolve_executable(const std::string& file, const std::vector<std::string>& env,
                               int& error) {
  error = 0;
  auto check = [&](const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return ENOENT;
    if (S_ISDIR(st.st_mode)) return EACCES;
    if (::access(path.c_str(), X_OK) != 0) return EACCES;
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

// Everything the child needs, prepared before vfork: the child shares our memory and must
// not allocate, lock or touch anything another thread could be changing.
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  const char* cwd;
  int fds[3];
  int pass_fd;
  int death_signal;
  bool new_session;
  pid_t parent;
  // Written by the child before it _exits; read by the parent once vfork returns (the
  // parent is suspended until the child execs or exits, so no race).
  volatile int error;
  volatile int stage;  // 1 = setup, 2 = chdir, 3 = exec
  // Set by the child first thing. Still 0 when vfork returns means vfork was really a
  // fork (sanitizers and valgrind turn it into one): then nothing the child wrote here is
  // visible, and the error pipe below carries the result instead.
  volatile int ran;
  int error_pipe;  // write end, close-on-exec: EOF at exec, {error, stage} on failure
};

[[noreturn]] void fail(ChildPlan* p, int stage) {
  p->error = errno;
  p->stage = stage;
  int report[2] = {p->error, stage};
  (void)!::write(p->error_pipe, report, sizeof report);
  ::_exit(127);
}

[[noreturn]] void child_main(ChildPlan* p) {
  p->ran = 1;
  // Back to default dispositions: Python ignores SIGPIPE, and an ignored signal would
  // survive exec into the service. Handlers would point into our memory.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    ::sigaction(sig, &dfl, nullptr);
  }
  if (p->new_session && ::setsid() < 0) goto fail_setup;
  if (p->death_signal != 0) {
    if (::prctl(PR_SET_PDEATHSIG, p->death_signal) != 0) goto fail_setup;
    // The owner may have died between vfork and prctl: then nobody will ever signal us.
    if (::getppid() != p->parent) ::_exit(127);
  }
  for (int target = 0; target < 3; ++target) {
    // dup2 clears close-on-exec on the copy; the sources are >= 3 (see spawn()).
    if (::dup2(p->fds[target], target) < 0) goto fail_setup;
  }
  // A passed fd becomes 3, without close-on-exec (dup2 onto itself would keep the flag).
  if (p->pass_fd >= 0) {
    if (p->pass_fd == 3 ? ::fcntl(3, F_SETFD, 0) < 0 : ::dup2(p->pass_fd, 3) < 0) goto fail_setup;
  }
  {
    // Nothing else crosses exec. close_range marks rather than closes so that it cannot
    // fail half-way; exec then closes them all.
    unsigned first = p->pass_fd >= 0 ? 4U : 3U;
    if (::syscall(SYS_close_range, first, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (int fd = static_cast<int>(first); fd < 65536; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
  }
  if (p->cwd != nullptr && ::chdir(p->cwd) != 0) fail(p, 2);
  {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
  }
  ::execve(p->path, p->argv, p->envp);
  fail(p, 3);
fail_setup:
  fail(p, 1);
}

// Returns an fd >= 3 equal to `fd`, or a /dev/null fd when `fd` < 0.
int stdio_source(int fd, Fd& keep) {
  if (fd < 0) {
    keep.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
    fd = keep.get();
  }
  if (fd >= 0 && fd < 3) {
    Fd copy(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    keep = std::move(copy);
    fd = keep.get();
  }
  return fd;
}

}  // namespace

SpawnResult spawn(const SpawnRequest& req) {
  SpawnResult result;
  if (req.argv.empty()) {
    result.error = EINVAL;
    result.message = "empty command";
    return result;
  }
  int lookup_error = 0;
  std::string path = resolve_executable(req.argv[0], req.env, lookup_error);
  if (lookup_error != 0) {
    result.error = lookup_error;
    result.message = lookup_error == ENOENT
                         ? fmt::format("command not found: {}", req.argv[0])
                         : fmt::format("permission denied: {} is not executable", path);
    return result;
  }

  std::vector<char*> argv;
  argv.reserve(req.argv.size() + 1);
  for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  envp.reserve(req.env.size() + 1);
  for (const auto& e : req.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  Fd keep_in, keep_out, keep_err;
  ChildPlan plan{};
  plan.path = path.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.cwd = req.cwd.empty() ? nullptr : req.cwd.c_str();
  plan.fds[0] = stdio_source(req.stdin_fd, keep_in);
  plan.fds[1] = stdio_source(req.stdout_fd, keep_out);
  plan.fds[2] = stdio_source(req.stderr_fd, keep_err);
  plan.pass_fd = req.pass_fd;
  plan.death_signal = req.death_signal;
  plan.new_session = req.new_session;
  plan.parent = ::getpid();
  plan.error = 0;
  plan.stage = 0;
  plan.ran = 0;
  Fd err_r, err_w;
  {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      result.error = errno;
      result.message = fmt::format("cannot create a pipe: {}", std::strerror(errno));
      return result;
    }
    err_r.reset(fds[0]);
    err_w.reset(fds[1]);
  }
  plan.error_pipe = err_w.get();

  // Block every signal across vfork so that no handler of ours runs in the child while
  // it still shares our memory; the child unblocks after resetting dispositions.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::vfork();
  if (pid == 0) child_main(&plan);
  int vfork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);

  if (pid < 0) {
    result.error = vfork_errno;
    result.message = fmt::format("cannot fork: {}", std::strerror(vfork_errno));
    return result;
  }
  err_w.reset();
  if (plan.ran == 0) {
    // vfork behaved as fork: wait for the child to exec (EOF) or report its failure.
    int report[2] = {0, 0};
    ssize_t n;
    while ((n = ::read(err_r.get(), report, sizeof report)) < 0 && errno == EINTR) {
    }
    if (n == static_cast<ssize_t>(sizeof report)) {
      plan.error = report[0];
      plan.stage = report[1];
    }
  }
  if (plan.error != 0) {
    // The child never exec'd and has exited: reap exactly that pid (never -1).
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.error = plan.error;
    const char* what = plan.stage == 2 ? "cannot change directory to" : plan.stage == 3 ? "cannot execute" : "cannot set up";
    std::string target = plan.stage == 2 ? req.cwd : path;
    result.message = fmt::format("{} {}: {}", what, target, std::strerror(plan.error));
    return result;
  }
  // The child has exec'd and is ours until we reap it, so its pid cannot be recycled
  // before this call: the pidfd is guaranteed to refer to it.
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    int e = errno;
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    result.error = e;
    result.message = fmt::format("pidfd_open: {}", std::strerror(e));
    return result;
  }
  result.pid = pid;
  result.pidfd.reset(pidfd);
  return result;
}

}  // namespace corral
