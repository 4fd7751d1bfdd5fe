// The owner's side of the death watcher (see watcher.hpp); the watcher's own side is
// watcher_process.cpp.
#include "corral/engine/watcher.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>

#include <cerrno>
#include <cstring>
#include <vector>

#include "corral/engine/watcher_protocol.hpp"
#include "corral/spawn/spawn.hpp"

namespace corral {

namespace asio = boost::asio;
namespace wp = watch_protocol;

struct DeathWatcher::Link {
  explicit Link(asio::io_context& io) : sock(io), proc(io) {}
  asio::posix::stream_descriptor sock;  // our end; every send is MSG_DONTWAIT
  asio::posix::stream_descriptor proc;  // the watcher's pidfd: readable once it has exited
  pid_t pid = -1;
  bool execd = false;
  bool write_armed = false;
  std::chrono::steady_clock::time_point born;
};

namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U)); }

// Our own child, by its pidfd (or exact pid): never waitpid(-1), which would take the
// host's children.
void reap(int pidfd, pid_t pid) {
  siginfo_t info{};
  if (pidfd >= 0) {
    while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 && errno == EINTR) {
    }
  } else if (pid > 0) {
    while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED) < 0 && errno == EINTR) {
    }
  }
}

// Stopped (SIGSTOP, SIGTSTP...) and not continued. WNOWAIT leaves the report for others.
bool stopped(int pidfd) {
  if (pidfd < 0) return false;
  siginfo_t info{};
  return ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                  WSTOPPED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid != 0 && info.si_code == CLD_STOPPED;
}

}  // namespace

DeathWatcher::DeathWatcher(asio::io_context& io, const std::string& program)
    : io_(io), program_(program), retry_(std::make_unique<asio::steady_timer>(io)),
      token_(std::make_shared<char>()) {
  start();
}

void DeathWatcher::start() noexcept {
  int sv[2];
  // SEQPACKET keeps each message whole; CLOEXEC keeps the socket out of services.
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return schedule_start();
  Fd ours(sv[0]), theirs(sv[1]);
  pid_t pid = -1;
  Fd pidfd;
  bool execd = false;
  if (!program_.empty() && ::access(program_.c_str(), X_OK) == 0) {
    SpawnRequest req;
    req.argv = {program_};
    req.pass_fd = theirs.get();
    req.death_signal = 0;  // it must outlive us: that is its whole purpose
    // run_watcher calls setsid itself, after it has noted the owner's group and session.
    req.new_session = false;
    if (auto r = spawn(req)) {
      pid = r.pid;
      pidfd = std::move(r.pidfd);
      execd = true;
    }
  }
  if (pid < 0) {
    pid = ::fork();
    if (pid < 0) return schedule_start();
    if (pid == 0) {
      ::close(sv[0]);
      run_watcher(sv[1]);
    }
    pidfd = Fd(pidfd_open(pid));  // our unreaped child: the pid cannot have been recycled
  }
  theirs.reset();
  auto link = std::make_unique<Link>(io_);
  link->pid = pid;
  link->execd = execd;
  link->born = std::chrono::steady_clock::now();
  boost::system::error_code ec;
  link->sock.assign(ours.release(), ec);
  if (pidfd) link->proc.assign(pidfd.release(), ec);
  link_ = std::move(link);
  ++link_gen_;
  // A new watcher knows nothing: tell it everything.
  told_groups_.clear();
  told_stacks_.clear();
  for (const auto& g : groups_) dirty_groups_.insert(g.first);
  for (const auto& s : stacks_) dirty_stacks_.insert(s);
  if (link_->proc.is_open()) {
    std::weak_ptr<char> alive = token_;
    link_->proc.async_wait(asio::posix::descriptor_base::wait_read,
                           [this, alive, gen = link_gen_](const boost::system::error_code& e) {
                             if (e || alive.expired() || gen != link_gen_) return;
                             replace(false);  // it exited (killed by someone): take another
                           });
  }
  flush();
}

void DeathWatcher::schedule_start() noexcept {
  // Nothing to start now (fds or processes exhausted, or the last one died young): try again
  // in a second, rather than spin.
  std::weak_ptr<char> alive = token_;
  retry_->expires_after(std::chrono::seconds(1));
  retry_->async_wait([this, alive](const boost::system::error_code& e) {
    if (!e && !alive.expired() && !link_) start();
  });
}

void DeathWatcher::replace(bool kill_it) noexcept {
  if (link_) {
    int fd = link_->proc.is_open() ? link_->proc.native_handle() : -1;
    if (kill_it) {
      if (fd >= 0)
        ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0U);
      else
        ::kill(link_->pid, SIGKILL);
    }
    // Dead or dying of SIGKILL: it can no longer act on the EOF we are about to give it.
    reap(fd, link_->pid);
    bool young = std::chrono::steady_clock::now() - link_->born < std::chrono::seconds(1);
    link_.reset();
    ++restarts_;
    if (young && !kill_it) return schedule_start();
  }
  start();
}

void DeathWatcher::watch(pid_t pgid) noexcept {
  if (abandoned_ || pgid <= 0) return;
  groups_[pgid] = ++next_gen_;
  dirty_groups_.insert(pgid);
  // The pidfd is taken now, while the leader is surely our unreaped child (the rule in
  // watcher.hpp); it is sent at the end of the turn.
  drop_opened(pgid);
  if (int fd = pidfd_open(pgid); fd >= 0) opened_[pgid] = fd;
  flush_soon();
}

void DeathWatcher::drop_opened(pid_t pgid) noexcept {
  if (auto it = opened_.find(pgid); it != opened_.end()) {
    ::close(it->second);
    opened_.erase(it);
  }
}

void DeathWatcher::unwatch(pid_t pgid) noexcept {
  if (abandoned_ || groups_.erase(pgid) == 0) return;
  dirty_groups_.insert(pgid);
  drop_opened(pgid);
  flush_soon();
}

// Services start and stop by the thousand in one turn of the loop: one message for all of
// them instead of a sendmsg each (a tenth of a stop's CPU). The watcher learns of a group
// at the end of the turn that spawned it; an owner that dies before that still has its
// processes found by the watcher's marker sweep, and a group unwatched late is harmless
// (its leader is reaped: see the rule in watcher.hpp). A large backlog goes at once.
void DeathWatcher::flush_soon() noexcept {
  if (backlog() >= flush_batch) return flush();
  if (flush_posted_) return;
  flush_posted_ = true;
  std::weak_ptr<char> alive = token_;
  asio::post(io_, [this, alive] {
    if (alive.expired()) return;
    flush_posted_ = false;
    flush();
  });
}

void DeathWatcher::watch_stack(const std::string& id) noexcept {
  // A longer id cannot be matched by the watcher's fixed-size tables; close() still finds
  // that stack's escapees, only an owner's death does not.
  if (abandoned_ || id.empty() || id.size() > wp::max_id) return;
  if (stacks_.insert(id).second) dirty_stacks_.insert(id);
  flush();
}

void DeathWatcher::unwatch_stack(const std::string& id) noexcept {
  if (abandoned_ || stacks_.erase(id) == 0) return;
  dirty_stacks_.insert(id);
  flush();
}

GroupTracker DeathWatcher::tracker() noexcept {
  // A check may outlive us (its process is reaped after the engine dropped the watcher).
  std::weak_ptr<char> alive = token_;
  return GroupTracker{[this, alive](pid_t g) {
                        if (!alive.expired()) watch(g);
                      },
                      [this, alive](pid_t g) {
                        if (!alive.expired()) unwatch(g);
                      }};
}

// Sends what the watcher does not know yet, as much as the socket takes. Never blocks.
void DeathWatcher::flush() noexcept {
  if (!link_ || abandoned_ || backlog() == 0) return;
  std::vector<unsigned char> msg;
  std::vector<int> fds;
  std::vector<pid_t> sent_groups;
  std::vector<std::string> sent_stacks;
  while (backlog() != 0) {
    msg.clear();
    fds.clear();
    sent_groups.clear();
    sent_stacks.clear();
    for (const auto& id : dirty_stacks_) {
      if (msg.size() + 2 + id.size() > wp::max_message) break;
      msg.push_back(static_cast<unsigned char>(stacks_.count(id) ? wp::watch_stack : wp::unwatch_stack));
      msg.push_back(static_cast<unsigned char>(id.size()));
      msg.insert(msg.end(), id.begin(), id.end());
      sent_stacks.push_back(id);
    }
    for (pid_t g : dirty_groups_) {
      if (msg.size() + 2 * (1 + sizeof g) > wp::max_message || static_cast<int>(fds.size()) == wp::max_fds) break;
      auto want = groups_.find(g);
      auto told = told_groups_.find(g);
      bool drop = told != told_groups_.end() && (want == groups_.end() || want->second != told->second);
      bool add = want != groups_.end() && (told == told_groups_.end() || want->second != told->second);
      auto record = [&](char op) {
        msg.push_back(static_cast<unsigned char>(op));
        msg.insert(msg.end(), reinterpret_cast<const unsigned char*>(&g),
                   reinterpret_cast<const unsigned char*>(&g) + sizeof g);
      };
      if (drop) record(wp::unwatch_group);
      if (add) {
        // Safe by the rule in watcher.hpp: a watched group's leader is our unreaped child
        // (the pidfd taken by watch(), or one for a new watcher that must be told again).
        int fd = -1;
        if (auto it = opened_.find(g); it != opened_.end()) {
          fd = it->second;
          opened_.erase(it);
        } else {
          fd = pidfd_open(g);
        }
        if (fd >= 0) fds.push_back(fd);
        record(fd >= 0 ? wp::watch_group : wp::watch_group_bare);
      }
      sent_groups.push_back(g);
    }
    iovec iov{msg.data(), msg.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * wp::max_fds)];
    if (!fds.empty()) {
      mh.msg_control = control;
      mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&mh);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = -1;
    if (!msg.empty()) {
      // MSG_NOSIGNAL: a dead watcher gives EPIPE, not a SIGPIPE that would kill a C++ host.
      do {
        n = ::sendmsg(link_->sock.native_handle(), &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
    }
    int err = errno;
    for (int fd : fds) ::close(fd);  // the watcher has its own copies now
    if (!msg.empty() && n < 0) {
      if (err != EAGAIN && err != EWOULDBLOCK) return;  // dead (EPIPE): its pidfd wakes us
      // Full: it lags, or it is stopped and would act on nothing, our death included. Its
      // queue is short (net.unix.max_dgram_qlen messages), so a stopped one is found soon.
      if (link_->proc.is_open() && stopped(link_->proc.native_handle())) return replace(true);
      return arm_write();
    }
    for (const auto& id : sent_stacks) {
      if (stacks_.count(id))
        told_stacks_.insert(id);
      else
        told_stacks_.erase(id);
      dirty_stacks_.erase(id);
    }
    for (pid_t g : sent_groups) {
      if (auto want = groups_.find(g); want != groups_.end())
        told_groups_[g] = want->second;
      else
        told_groups_.erase(g);
      dirty_groups_.erase(g);
    }
  }
}

void DeathWatcher::arm_write() noexcept {
  if (link_->write_armed) return;
  link_->write_armed = true;
  std::weak_ptr<char> alive = token_;
  link_->sock.async_wait(asio::posix::descriptor_base::wait_write,
                         [this, alive, gen = link_gen_](const boost::system::error_code& e) {
                           if (e || alive.expired() || gen != link_gen_) return;
                           link_->write_armed = false;
                           flush();
                         });
}

pid_t DeathWatcher::pid() const noexcept { return link_ ? link_->pid : -1; }

bool DeathWatcher::execd() const noexcept { return link_ && link_->execd; }

bool DeathWatcher::alive() const noexcept {
  if (!link_) return false;
  if (!link_->proc.is_open()) return true;  // no pidfd (old kernel): assume so
  pollfd p{link_->proc.native_handle(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

void DeathWatcher::abandon() noexcept {
  abandoned_ = true;
  // Close our copies so that the parent's death still reads as EOF, but touch nothing of
  // asio: its io_context is the parent's, maybe locked by a thread that does not exist here.
  if (link_) {
    if (link_->sock.is_open()) ::close(link_->sock.native_handle());
    if (link_->proc.is_open()) ::close(link_->proc.native_handle());
  }
  for (const auto& [g, fd] : opened_) ::close(fd);
  opened_.clear();
}

DeathWatcher::~DeathWatcher() {
  if (!abandoned_) flush();  // what a posted flush would have sent: the groups still watched
  for (const auto& [g, fd] : opened_) ::close(fd);  // (only what a full socket kept back)
  token_.reset();
  if (abandoned_) {
    (void)link_.release();  // see abandon(): leaked on purpose
    (void)retry_.release();
    return;
  }
  if (!link_) return;
  boost::system::error_code ignored;
  link_->sock.close(ignored);  // EOF: it kills what is registered, sweeps, exits
  int fd = link_->proc.is_open() ? link_->proc.native_handle() : -1;
  if (fd >= 0) {
    // Someone may have stopped it: it must run to exit. Its sweep reads /proc, which takes
    // milliseconds; a watcher still running after that long is stuck, and we do not wait on
    // it forever.
    ::syscall(SYS_pidfd_send_signal, fd, SIGCONT, nullptr, 0U);
    pollfd p{fd, POLLIN, 0};
    int ready;
    while ((ready = ::poll(&p, 1, 10000)) < 0 && errno == EINTR) {
    }
    if (ready == 0) ::syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0U);
  }
  reap(fd, link_->pid);
}

}  // namespace corral
