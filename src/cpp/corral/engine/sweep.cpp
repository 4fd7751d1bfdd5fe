// The sweep for escapees: processes that left their service's process group (double fork
// and setsid) but still carry the stack's marker (CORRAL_STACK=<id>) in their environment.
// It reads /proc, so it runs on the chores thread, never on the engine thread.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "corral/engine/engine_impl.hpp"
#include "corral/metrics/proc_sample.hpp"
#include "corral/metrics/procfs.hpp"
#include "corral/spawn/spawn.hpp"

namespace corral {

// Processes that escaped their service's group (double fork + setsid) still carry the
// stack's marker in their environment: find them, kill them through a pidfd (re-checked,
// so a recycled pid is never signalled), and say so in the service's log. `only`: the
// services to clean up after. `then` runs on the engine thread when it is done.
namespace {

// Waits until every pidfd is readable (its process has exited), for at most `seconds`.
void wait_gone(std::vector<Fd>& pidfds, double seconds) {
  auto end = Clock::now() + to_duration(seconds);
  for (auto& fd : pidfds) {
    pollfd p{fd.get(), POLLIN, 0};
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) != 0) break;
    }
  }
}

struct SweepResult {
  std::vector<std::pair<std::string, std::string>> lines;  // service, log line
  bool found = false;
};

// The leader of `group` is alive and does not carry the marker: the group is not only ours.
bool leads_unmarked_group(pid_t group, const std::string& marker) {
  if (procfs::process_group(group) != group) return false;  // no leader (it exited)
  char path[64], byte;
  std::snprintf(path, sizeof path, "/proc/%d/environ", group);
  Fd env(::open(path, O_RDONLY | O_CLOEXEC));
  // Gone: not a leader. Unreadable (another user's, not dumpable): not known to be ours.
  if (!env) return errno != ENOENT && errno != ESRCH;
  // A zombie leader has an empty environment: it no longer counts.
  if (::read(env.get(), &byte, 1) != 1) return false;
  return !has_marker(group, marker);
}

// An escapee that keeps forking is never the same process twice, and one that hops (fork,
// exit, the child carries on) is gone by the time the pid found is signalled: pass after
// pass would find only its past. Its process group stays, though, and one kill() takes the
// whole group, the live hop included. Only a group that is plainly the escapee's: neither
// the owner's group nor its session, with no leader or a leader that carries the marker
// too (a service may join, with setpgid, a group of the session that is not its own). The
// member is checked alive and still in `group` right before: while it lives, the number
// cannot name another group.
void kill_escaped_group(int pidfd, pid_t member, pid_t group, const std::string& marker) {
  if (group <= 1 || group == ::getpgrp() || group == ::getsid(0)) return;
  if (group != member && leads_unmarked_group(group, marker)) return;
  if (::syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) != 0) return;  // gone already
  if (procfs::process_group(member) != group) return;
  ::kill(-group, SIGKILL);
}

// A service a sweep cleans up after: its name, the process group of its last run, and its
// spawn count when the sweep began (Svc::spawns: the Svc outlives the sweep, which holds its
// stack).
struct Target {
  std::string name;
  pid_t group;
  const std::atomic<unsigned>* spawns;
  unsigned seen;
  bool respawned() const { return spawns->load() != seen; }
};

// One look at /proc: kills (through a re-checked pidfd) every process that carries
// `marker`, belongs to one of `targets` and has left its last process group, among the pids
// in `range`; waits until they and the members of those groups are gone. `follow`: and
// among the pids created while it looks, except once a target has been spawned again (its
// new run's processes are not escapees of the old one).
SweepResult kill_marked(const std::string& marker, const std::vector<Target>& targets,
                        const std::optional<std::pair<pid_t, pid_t>>& range, bool follow) {
  SweepResult r;
  std::vector<Fd> dying;
  // Each one is killed as soon as it is found, and the scan follows new pids: one that keeps
  // forking is caught in its present, not its past.
  const pid_t self = ::getpid();
  std::string service;
  procfs::for_each_pid_in(range, [&](pid_t pid) {
    if (pid == self) return false;
    // The members of each service's last process group were SIGKILLed at its exit (they
    // hold the group's number while any of them lives), but die asynchronously, and a
    // dying process's environment may no longer be readable: they are waited for by their
    // group, so nothing of the service is still running when this returns. Waited for
    // only, never signalled here: by now the number may name another program's group.
    pid_t group = procfs::process_group(pid);
    if (group <= 0) return false;
    if (std::any_of(targets.begin(), targets.end(), [&](const auto& t) { return t.group == group; })) {
      int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
      if (fd >= 0) dying.emplace_back(fd);
      return false;
    }
    // The others had escaped their group.
    service.clear();  // has_marker sets it only when the process names its service
    if (!has_marker(pid, marker, &service)) return false;
    auto named = std::find_if(targets.begin(), targets.end(), [&](const auto& t) { return t.name == service; });
    if (named == targets.end()) return false;
    if (follow && named->respawned() && !(range && procfs::in_pid_range(pid, *range))) return false;
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) return false;
    Fd pidfd(fd);
    if (!has_marker(pid, marker)) return false;  // the pid we hold may have been recycled
    kill_escaped_group(pidfd.get(), pid, procfs::process_group(pid), marker);
    ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
    r.found = true;
    r.lines.emplace_back(service, fmt::format("corral: killed pid {} ({}), which had escaped the service's "
                                              "process group", pid, procfs::comm(pid)));
    dying.push_back(std::move(pidfd));
    return false;
  }, follow);
  // Done when they are gone, not when they were told to go.
  wait_gone(dying, 2.0);
  return r;
}

// Every process created on the machine between the two readings is one that corral spawned
// itself (a service or a check): nothing else forked, so nothing can have escaped, and the
// scan is skipped. On a machine with thousands of processes whose pids the window's range
// runs through (after pid numbers wrapped round), that scan lists /proc at every stop.
bool only_ours_between(const procfs::PidClock& since, const procfs::PidClock& upto) {
  return upto.ours_done >= since.ours_started && upto.forks >= since.forks &&
         upto.forks - since.forks <= upto.ours_done - since.ours_started;
}

}  // namespace

std::optional<procfs::PidClock> sweep_clock() {
  // A reading serves as the end of one window and the start of the next, and spawns may be
  // under way on other threads (claim checks, other stacks): clones finished are read before
  // the kernel's count (each is in it), clones begun after it (each one the kernel counted
  // had begun). So a window credits corral with no clone the kernel did not count in it,
  // and a clone in flight can only make a foreign fork of the window more likely, not less.
  std::uint64_t done = processes_spawned();
  auto c = procfs::pid_clock();
  if (c) {
    c->ours_done = done;
    c->ours_started = spawns_begun();
  }
  return c;
}

void Engine::Impl::sweep_escapees(const std::shared_ptr<StackState>& st, std::vector<std::size_t> only,
                                  std::function<void()> then) {
  std::string marker = "CORRAL_STACK=" + st->id;
  // Each service's name and its last process group; the oldest pid clock among them.
  std::vector<Target> targets;
  std::optional<procfs::PidClock> since;
  bool unbounded = false;
  for (auto i : only) {
    Svc& s = *st->services[i];
    targets.push_back(Target{s.spec.name, s.last_pid, &s.spawns, s.spawns.load()});
    if (!s.unswept) {
      // Not run since its last sweep: what it left was taken then, and its last group
      // number may name another program's group by now.
      targets.back().group = 0;
      continue;
    }
    if (!s.sweep_since) unbounded = true;
    else if (!since || s.sweep_since->forks < since->forks) since = s.sweep_since;
    s.sweep_since.reset();  // a start from now on opens a new window
    s.unswept = false;
  }
  if (unbounded) since.reset();
  // The common case, nothing but corral's own spawns forked since the window opened, is
  // told by two small files: no need to wake the chores thread (and wait for its answer)
  // to learn that there is nothing to look for.
  // Not while an earlier sweep is queued or running (a run's own at its exit, say): this
  // one must complete after it, as a chores job would, queued behind it.
  if (since && sweeps_in_flight == 0) {
    auto now = sweep_clock();
    if (now && only_ours_between(*since, *now)) {
      asio::post(io, std::move(then));
      return;
    }
  }
  ++sweeps_in_flight;  // until post_sweep_lines hands the result back
  chores.post([this, st, marker, targets = std::move(targets), since, unbounded, only = std::move(only),
               then = std::move(then)] {
    std::vector<std::pair<std::string, std::string>> lines;
    bool abandoned = false;
    // An escapee that keeps forking makes new marked processes while we look: look again
    // until a pass finds nothing (each pass kills what it finds, and the groups of those
    // that left the service's, so the tree stops growing).
    for (int pass = 0; pass < 8; ++pass) {
      // Only processes created since the services started can be theirs: with thousands of
      // older processes on the machine, only the new ones' environments are read.
      std::optional<std::pair<pid_t, pid_t>> range;
      if (since && !unbounded) {
        auto now = sweep_clock();
        if (pass == 0 && now && only_ours_between(*since, *now)) break;
        if (now) range = procfs::pids_between(*since, *now);
      }
      // One that runs again (a start from another thread) has a new run whose processes
      // may lie in this range: leave the rest to its next stop. Looked at after the range
      // is taken, so a run that starts later has only pids beyond it.
      if (std::any_of(targets.begin(), targets.end(), [](const Target& t) { return t.respawned(); })) {
        abandoned = true;
        break;
      }
      auto r = kill_marked(marker, targets, range, true);
      lines.insert(lines.end(), r.lines.begin(), r.lines.end());
      if (!r.found) break;
    }
    if (!abandoned) return post_sweep_lines(st, std::move(lines), then);
    // The window is opened again (back to where this one began: a clock of 0 forks means
    // unbounded), so the next stop or close looks at what this sweep left.
    procfs::PidClock from = unbounded || !since ? procfs::PidClock{} : *since;
    post_sweep_lines(st, std::move(lines), [st, only, from, then] {
      for (auto i : only) {
        Svc& s = *st->services[i];
        if (!s.sweep_since || from.forks < s.sweep_since->forks) s.sweep_since = from;
        s.unswept = true;
      }
      then();
    });
  });
}

void Engine::Impl::sweep_run(StackState& st, Svc& s, procfs::PidClock since, procfs::PidClock upto) {
  // What the run left behind was created after `since` and before its exit (`upto`): the
  // next run's processes, created later, are out of that range, so they are safe even if
  // the next run starts before this sweep is done. Without a bounded range (pids may have
  // wrapped round), nothing is swept here: the stop or close sweeps it.
  auto range = procfs::pids_between(since, upto);
  if (!range || only_ours_between(since, upto)) return;
  auto self = st.shared_from_this();
  std::string marker = "CORRAL_STACK=" + st.id;
  // Bounded by the exit, not following: the next run may be starting meanwhile.
  std::vector<Target> targets{Target{s.spec.name, s.last_pid, &s.spawns, s.spawns.load()}};
  ++sweeps_in_flight;
  chores.post([this, self, marker, targets = std::move(targets), range] {
    auto r = kill_marked(marker, targets, range, false);
    post_sweep_lines(self, std::move(r.lines), [] {});
  });
}

void Engine::Impl::post_sweep_lines(const std::shared_ptr<StackState>& st,
                                    std::vector<std::pair<std::string, std::string>> lines, std::function<void()> then) {
  asio::post(io, [this, st, lines = std::move(lines), then = std::move(then)] {
    --sweeps_in_flight;
    for (const auto& [name, line] : lines) {
      auto it = st->index.find(name);
      if (it != st->index.end()) record_line(*st, *st->services[it->second], Stream::err, line);
    }
    then();
  });
}

}  // namespace corral
