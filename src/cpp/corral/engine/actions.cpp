// The service machine: dispatch() looks an event up in the table of supervise/machine.cpp
// and runs the action it names. Every state change of every service happens here, and
// every side effect of a change (spawn, signal, timers, the start budget) is an action.
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include "corral/engine/engine_impl.hpp"
#include "corral/os/pidfd.hpp"
#include "corral/spawn/spawn.hpp"

namespace corral {

bool Engine::Impl::dispatch(StackState& st, Svc& s, Event ev, std::string why, std::string detail) {
  auto next = step(s.state, ev);
  if (!next) return false;
  State before = s.state;
  s.state = next->next;
  if (!why.empty()) {
    s.reason = std::move(why);
    s.reason_is_deadline = false;
  }
  if (s.state != before) {
    // The snapshot before the event: whoever sees the event and then reads status() must
    // find at least this state there (changed() publishes it again after the action).
    publish_status(st, s);
    publish_state(st, s, detail);
    st.metrics->on_state(s.index, to_string(s.state).data(), s.state == State::failed ? s.reason : std::string());
  }
  // Settled with no process left: its resource claims go (a start claims them again).
  // (Also drops a pending `wait` retry and a claim job in flight: cheap when there is none.)
  if (is_settled(s.state) && !s.proc.full()) release_claims(s);
  run_action(st, s, next->action, detail);
  changed(st, s);
  return true;
}

void Engine::Impl::run_action(StackState& st, Svc& s, Action a, const std::string& detail) {
  (void)detail;
  switch (a) {
    case Action::none: break;
    case Action::reset:
      s.spawned_once = false;
      s.streak = 0;
      s.budget = false;
      s.reason.clear();
      break;
    case Action::spawn: act_spawn(st, s); break;
    case Action::became_ready: act_became_ready(st, s); break;
    case Action::unhealthy:
      // A liveness failure means "restart me" when the policy restarts at all: stop the
      // group; the exit then goes through the restart policy like any crash.
      if (s.spec.restart.policy != RestartSpec::Policy::no) {
        s.health_kill = true;  // however it exits now, it failed
        signal_group(s, s.spec.stop_signal);
        arm_kill_timer(st, s);
      }
      break;
    case Action::terminate:
      stop_checks(s);
      end_budget(s);
      signal_group(s, s.spec.stop_signal);
      arm_kill_timer(st, s);
      break;
    case Action::kill: signal_group(s, SIGKILL); break;
    case Action::abort:
      settle(s);
      signal_group(s, SIGKILL);
      break;
    // A stop of a service without a process and an end for good clean up alike.
    case Action::cancel:
    case Action::settle: settle(s); break;
    case Action::schedule_restart: schedule_restart(st, s); break;
    case Action::stopped:
      end_budget(s);
      s.timer.cancel();
      s.want_down = false;
      // Started again while it was stopping: the slot is empty now, so go on.
      if (s.want_up) {
        dispatch(st, s, Event::start);
        s.want_up = true;
        try_start(st, s);
      }
      break;
  }
}

// Nothing more is wanted of this run: checks, start budget and timers off, no start pending.
void Engine::Impl::settle(Svc& s) {
  stop_checks(s);
  end_budget(s);
  s.want_up = false;
  s.timer.cancel();
}

void Engine::Impl::stop_checks(Svc& s) {
  ++s.check_gen;  // attempts still in flight are moot
  s.check_timer.cancel();
  s.ready_regex.reset();
}

void Engine::Impl::end_budget(Svc& s) {
  // The deadline it announced is moot (a failure's reason, set by dispatch, stays).
  if (s.reason_is_deadline) s.reason.clear();
  s.reason_is_deadline = false;
  s.budget = false;
  ++s.deadline_gen;
  s.deadline.cancel();
}

void Engine::Impl::act_spawn(StackState& st, Svc& s) {
  if (s.proc.full()) return;  // never two processes: try_start waits for the reap
  // Resources first: a service waiting for a value (or for its check) stays pending, and
  // try_start comes back here once it has them.
  if (!claim_resources(st, s)) return;
  if (s.state == State::backoff) {
    ++s.restarts;
    ++s.streak;
  }
  std::string error;
  SpawnRequest req;
  Fd out_r, out_w, err_r, err_w;
  try {
    ensure_ports(s);
    if (!s.port_error.empty()) throw Error(s.port_error);
    if (auto why = open_listeners(s); !why.empty()) throw Error(why);
    auto resolve = resolver(st, s);
    if (s.spec.ready && s.spec.ready->kind == CheckSpec::Kind::notify) open_notify(st, s);
    for (const auto& a : s.spec.argv) req.argv.push_back(render_template(a, resolve));
    req.env = build_env(st, s, resolve);
    req.cwd = render_template(s.spec.cwd, resolve);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (error.empty() && !(make_pipe(out_r, out_w) && make_pipe(err_r, err_w)))
    error = fmt::format("cannot create pipes: {}", std::strerror(errno));
  SpawnResult r;
  if (error.empty()) {
    req.stdout_fd = out_w.get();
    req.stderr_fd = err_w.get();
    // Hand the reserved ports over: from here on the service binds them itself.
    for (auto& l : s.leases) l.release_socket();
    // Socket activation: the listeners go in as fds 3, 4, ... (LISTEN_FDS=N).
    if (!s.listen_fds.empty()) {
      req.pass_fd = s.listen_fds[0].get();
      for (std::size_t i = 1; i < s.listen_fds.size(); ++i) req.more_fds.push_back(s.listen_fds[i].get());
      req.listen_pid = true;
    }
    s.spawns.fetch_add(1);  // before the clone: see Svc::spawns
    r = spawn(req);
    if (!r) error = r.message;
  }
  s.exit_code.reset();
  if (!error.empty()) {
    record_line(st, s, Stream::err, "corral: " + error);
    // Out of processes or memory is worth a retry: it counts as a run that ended at once,
    // so the policy's limit and backoff apply. A missing or non-executable program is not,
    // whatever the policy says.
    if ((r.error == EAGAIN || r.error == ENOMEM) && s.spec.restart.policy != RestartSpec::Policy::no) {
      s.spawned_at = Clock::now();
      s.ever_ready = false;
      std::string why;
      Event ev = classify_exit(s, ExitInfo{127, false, 0}, why);
      dispatch(st, s, ev, why.empty() ? error : why);
    } else {
      dispatch(st, s, Event::spawn_failed, error);
    }
    return;
  }
  out_w.reset();
  err_w.reset();
  ++s.generation;
  s.proc.pid = r.pid;
  s.last_pid = r.pid;
  s.spawned_at = Clock::now();
  s.started_wall = wall_seconds();
  st.metrics->on_spawn(s.index, r.pid, s.state == State::backoff ? s.restart_cause : nullptr);
  s.ever_ready = false;
  s.spawned_once = true;
  s.unswept = true;
  s.health_failures = 0;
  s.ready_attempts = 0;
  s.last_check.clear();
  s.reason.clear();
  s.proc.out_split = LineSplitter();
  s.proc.err_split = LineSplitter();
  if (watcher) watcher->watch(r.pid);
  s.proc.pidfd = std::make_unique<Descriptor>(io, r.pidfd.release());
  s.proc.out = std::make_unique<Descriptor>(io, out_r.release());
  s.proc.err = std::make_unique<Descriptor>(io, err_r.release());
  arm_exit(st, s);
  arm_read(st, s, Stream::out);
  arm_read(st, s, Stream::err);
  unsigned gen = s.generation;
  dispatch(st, s, Event::spawned, {}, shell_join(req.argv));
  if (s.generation != gen || s.state != State::starting) return;
  if (s.spec.ready)
    begin_checks(st, s, true);
  else
    dispatch(st, s, Event::ready);
}

void Engine::Impl::act_became_ready(StackState& st, Svc& s) {
  stop_checks(s);
  end_budget(s);
  s.ever_ready = true;
  s.ready_wall = wall_seconds();
  st.metrics->on_ready(s.index, std::chrono::duration<double>(Clock::now() - s.spawned_at).count());
  if (s.spec.health) begin_checks(st, s, false);
}

// To the whole process group. Safe because the slot is full: the leader is unreaped, so
// its pid (the group id) cannot have been recycled. SIGCONT wakes a stopped group so it
// can act on the signal.
void Engine::Impl::signal_group(Svc& s, int sig) {
  if (!s.proc.full()) return;
  ::kill(-s.proc.pid, sig);
  if (sig != SIGKILL) ::kill(-s.proc.pid, SIGCONT);
}

void Engine::Impl::arm_kill_timer(StackState& st, Svc& s) {
  auto self = st.shared_from_this();
  unsigned gen = s.generation;
  s.timer.expires_after(to_duration(s.spec.stop_timeout));
  s.timer.async_wait([this, self, &s, gen](const boost::system::error_code& ec) {
    if (!ec && s.generation == gen && s.proc.full()) dispatch(*self, s, Event::kill_due);
  });
}

void Engine::Impl::schedule_restart(StackState& st, Svc& s) {
  auto self = st.shared_from_this();
  unsigned gen = s.generation;
  s.timer.expires_after(to_duration(s.restart_delay));
  s.timer.async_wait([this, self, &s, gen](const boost::system::error_code& ec) {
    if (!ec && s.generation == gen) dispatch(*self, s, Event::backoff_done);
  });
}

// The pidfd becomes readable when the process exits: that is the whole exit detection.
void Engine::Impl::arm_exit(StackState& st, Svc& s) {
  auto self = st.shared_from_this();
  unsigned gen = s.generation;
  s.proc.pidfd->async_wait(Descriptor::wait_read, [this, self, &s, gen](const boost::system::error_code& ec) {
    if (!ec && s.generation == gen && s.proc.full()) on_exit(*self, s);
  });
}

Event Engine::Impl::classify_exit(Svc& s, const ExitInfo& exit, std::string& why) {
  if (Clock::now() - s.spawned_at >= to_duration(s.spec.restart.reset_after)) s.streak = 0;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  ExitInfo judged = exit;
  if (s.health_kill && !exit.signaled && exit.code == 0) judged.code = 1;  // a clean exit on our TERM
  s.health_kill = false;
  auto d = decide_restart(s.spec.restart, judged, s.streak, s.ever_ready, s.spec.ready.has_value(), unit(rng));
  std::string how = exit.signaled ? fmt::format("killed by signal {}", exit.signal) : fmt::format("exit code {}", exit.code);
  if (d.event == Event::exit_failed) why = fmt::format("{} ({})", d.why, how);
  // Why it waits, for status rows and the dashboard: "backoff 3/5, next try in 1.6 s".
  if (d.event == Event::exit_restart) {
    int max = s.spec.restart.max_restarts;
    why = fmt::format("backoff {}{}, next try in {:.1f} s ({})", s.streak + 1, max >= 0 ? fmt::format("/{}", max) : "",
                      d.delay, how);
  }
  s.restart_delay = d.delay;
  return d.event;
}

void Engine::Impl::on_exit(StackState& st, Svc& s) {
  const int pidfd = s.proc.pidfd->native_handle();
  const bool by_pidfd = os::pidfd_signals_groups();
  siginfo_t info{};
  // Where the pidfd can signal the group, reap at once: the kill below reaches the group
  // through the leader's pid itself, not its number. Elsewhere look first (WNOWAIT): while
  // the zombie is there its pid, and so its group id, is still ours to signal by number.
  int rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                    WEXITED | WNOHANG | (by_pidfd ? 0 : WNOWAIT));
  bool stolen = rc != 0;  // ECHILD: no longer ours to reap
  if (rc == 0 && info.si_pid == 0) return arm_exit(st, s);  // spurious wake-up: wait again
  ExitInfo exit;
  if (stolen) {
    // Someone else in this process reaped it (a waitpid(-1) in the host): its status is
    // lost, and its group id may already be recycled, so nothing more is signalled.
    exit.code = 255;
    record_line(st, s, Stream::err,
                "corral: the process was reaped by someone else in this program (a waitpid(-1)?); "
                "its exit status is unknown");
  } else {
    // What the service left in its group goes with it.
    if (by_pidfd) {
      ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, os::pidfd_process_group);
    } else {
      ::kill(-s.proc.pid, SIGKILL);
      siginfo_t reaped{};
      ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &reaped, WEXITED | WNOHANG);
    }
    if (info.si_code == CLD_EXITED) {
      exit.code = info.si_status;
    } else {
      exit.signaled = true;
      exit.signal = info.si_status;
      exit.code = 128 + info.si_status;
    }
  }
  if (watcher) watcher->unwatch(s.proc.pid);
  s.exit_code = exit.signaled ? -exit.signal : exit.code;
  st.metrics->on_exit(s.index, s.proc.pid, exit.signaled, exit.signaled ? exit.signal : exit.code,
                      std::chrono::duration<double>(Clock::now() - s.spawned_at).count());
  s.restart_cause = s.health_kill ? "health" : "exit";  // classify_exit clears health_kill
  s.proc.pid = 0;
  closer.close(s.proc.pidfd);
  close_pipes(st, s);
  stop_checks(s);
  // Hold the ports again until the next spawn: during a backoff (or while stopped) no
  // other program may take them.
  s.ports_contested = false;
  for (std::size_t i = 0; i < s.leases.size(); ++i)  // a listen port stays with its listener
    if (!is_listen_port(s, i) && !s.leases[i].reclaim_socket()) s.ports_contested = true;
  // A run that ended by itself (or at its deadline) takes what escaped its group with it,
  // as its group went with it; the window of the next run starts now. (A stop sweeps when
  // the whole request is done.)
  // When too many forks happened to bound that range, the window stays open instead: the
  // stop or close then sweeps all of /proc rather than a range that starts after the run.
  if (s.state != State::stopping && s.sweep_since) {
    auto now = sweep_clock();
    if (now && procfs::pids_between(*s.sweep_since, *now)) {
      sweep_run(st, s, *s.sweep_since, *now);
      s.sweep_since = now;
    }
  }
  // The slot is empty. What the exit means depends on what the service was doing.
  if (s.state == State::stopping) {
    dispatch(st, s, Event::exit_stopped);
  } else if (is_running(s.state)) {
    std::string why;
    Event ev = classify_exit(s, exit, why);
    dispatch(st, s, ev, why);
  } else {
    // A process killed at its readiness deadline (`failed`), perhaps started again
    // meanwhile (`pending`): its reap only frees the slot.
    s.health_kill = false;
    if (is_settled(s.state)) release_claims(s);
    try_start(st, s);
    changed(st, s);
  }
}

}  // namespace corral
