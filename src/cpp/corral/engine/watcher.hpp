// The owner may die without warning (SIGKILL, os._exit, a Jupyter kernel restart). A
// parent-death signal reaches only our direct children, not what they spawned, so a small
// watcher process outlives us. We tell it the process group of every service and exec
// check, and the id of every open stack; when its end of the socket reads EOF (we are gone,
// however we went) it kills those groups, then every process that still carries one of
// the stacks' markers (CORRAL_STACK=<id>) in its environment: grandchildren that left
// their group (double fork + setsid) included. Then it exits.
//
// Which group it kills (why a recycled group id is never hit):
//   * We tell it a group only while the group's leader is our unreaped child, and take it
//     back only after reaping it. Between the two the leader's pid, and so the group id, is
//     held by that leader, so the pidfd we open for it then (pidfd_open in the owner, passed
//     over the socket with SCM_RIGHTS) names exactly that process.
//   * At EOF the watcher signals the group through that pidfd, with
//     PIDFD_SIGNAL_PROCESS_GROUP (Linux 6.9): the kernel signals the members of the group
//     the pidfd's own process leads, found through the process, never through the number.
//     That reaches them even when the leader has died and been reaped meanwhile (its parent
//     death signal fires with us), and never a new group that reuses the number.
//   * On older kernels it falls back to kill(-pgid) only while the pidfd shows the leader
//     alive or a zombie (pidfd_send_signal with signal 0 succeeds): its pid is then not
//     free, so the group id is still the service's. The leader's new parent may reap it
//     between the check and the kill; for the number to be reused in that window the pid
//     space would have to wrap in microseconds. Groups whose leader is gone are left to
//     the marker sweep, which re-checks each process through its own pidfd.
//
// The owner's side never blocks: the socket is non-blocking, and what the watcher has not
// taken yet waits in a table of what it should know (not a queue of messages: a group
// watched and unwatched while the watcher lags is never sent at all). A watcher that dies
// is reaped and replaced (its pidfd wakes the engine's io_context), one found stopped
// (SIGSTOP) when its socket is full is killed and replaced, and the new one is told
// everything that is watched. (One stopped while nothing is sent goes unnoticed until
// the next few sends fill its queue; it acts again once continued.)
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "corral/checks/probes.hpp"

namespace corral {

// The watcher's loop on socket `fd`: records groups and stacks, kills them at EOF, exits.
// Async-signal-safe only, so that it can run in a fork of a multi-threaded process.
[[noreturn]] void run_watcher(int fd);

class DeathWatcher {
 public:
  // Starts the watcher: exec's `program` (the small corral-watch binary shipped beside the
  // module) when it is given and runnable, else forks this process. A fork keeps a
  // copy-on-write image of the host (a notebook's gigabytes turn into the watcher's own as
  // the host rewrites them), so the exec'd program is preferred. `io`: the engine's
  // io_context, where the watcher's death and a full socket are waited for. Construct,
  // use and destroy it on the engine thread only. When no watcher can be started, parent-
  // death signals still cover direct children, and another start is tried later.
  DeathWatcher(boost::asio::io_context& io, const std::string& program = {});
  // Closes our end: the watcher kills what is still registered (nothing, after a clean
  // stop) and exits; we reap it.
  ~DeathWatcher();
  DeathWatcher(const DeathWatcher&) = delete;
  DeathWatcher& operator=(const DeathWatcher&) = delete;

  // `pgid` must be our unreaped child (a service or check just spawned in its own group);
  // unwatch it only after reaping it. See the rule above.
  void watch(pid_t pgid) noexcept;
  void unwatch(pid_t pgid) noexcept;
  // A stack's id (its CORRAL_STACK marker): from its creation until it is closed.
  void watch_stack(const std::string& id) noexcept;
  void unwatch_stack(const std::string& id) noexcept;
  // watch/unwatch for probe_exec's check processes.
  GroupTracker tracker() noexcept;

  pid_t pid() const noexcept;  // of the current watcher process, -1 when there is none
  bool execd() const noexcept;
  bool alive() const noexcept;     // the current watcher process has not exited
  unsigned restarts() const noexcept { return restarts_; }
  // What the current watcher has not been told yet (0 when it is up to date).
  std::size_t backlog() const noexcept { return dirty_groups_.size() + dirty_stacks_.size(); }

  // In a forked child of the owner: forget the watcher without telling it anything. Only
  // closes fds (the io_context is shared with the parent and may be mid-operation); the
  // object must not be used afterwards, and leaks its asio parts when destroyed.
  void abandon() noexcept;

 private:
  struct Link;  // one watcher process and our end of its socket
  void start() noexcept;
  void schedule_start() noexcept;
  void flush() noexcept;
  void flush_soon() noexcept;  // at the end of this turn of the io_context
  void drop_opened(pid_t pgid) noexcept;
  void arm_write() noexcept;
  void replace(bool kill_it) noexcept;

  boost::asio::io_context& io_;
  std::string program_;
  std::unique_ptr<Link> link_;
  std::unique_ptr<boost::asio::steady_timer> retry_;
  std::uint64_t link_gen_ = 0;  // tells a handler of a replaced link from a current one
  unsigned restarts_ = 0;
  bool abandoned_ = false;
  bool flush_posted_ = false;
  static constexpr std::size_t flush_batch = 512;  // dirty entries that are sent at once
  std::shared_ptr<char> token_;  // expires with us: handlers still queued then do nothing
  // What should be watched (group -> generation: a recycled pgid is a new watch), what the
  // current watcher has been told, and what differs between the two.
  std::uint64_t next_gen_ = 0;
  std::unordered_map<pid_t, std::uint64_t> groups_, told_groups_;
  std::unordered_set<std::string> stacks_, told_stacks_;
  std::unordered_set<pid_t> dirty_groups_;
  std::unordered_map<pid_t, int> opened_;  // pidfds taken by watch(), not sent yet
  std::unordered_set<std::string> dirty_stacks_;
};

}  // namespace corral
