// Requests (start, stop, close) and the waiters that complete them, and the dependency
// gating that turns "want up" / "want down" into machine events in graph order.
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "corral/engine/engine_impl.hpp"
#include "corral/metrics/proc_sample.hpp"
#include "corral/metrics/procfs.hpp"
#include "corral/os/fd_table.hpp"

namespace corral {

void Waiter::finish(Outcome o) {
  done = true;
  if (deliver) {
    deliver(std::move(o));
  } else if (auto r = result.lock()) {
    r->set(std::move(o));
  }
  hold.reset();
}

void Waiter::update(const Svc& s) {
  if (lapsed()) return;
  if (up && s.intent_gen != intent_at[s.index]) {
    // A later request reversed this one for `s`: complete now, saying so.
    return finish(*up ? Outcome{false, s.spec.name, "a stop request overtook this start", true}
                      : Outcome{true, s.spec.name, "a start request overtook this stop", true});
  }
  if (bad) {
    if (auto o = bad(s)) return finish(std::move(*o));
  }
  char now = good(s) ? 1 : 0;
  if (now != is_good[s.index]) {
    is_good[s.index] = now;
    good_count += now ? 1 : static_cast<std::size_t>(-1);
  }
  if (good_count == targets) finish(Outcome{});
}

void Engine::Impl::add_waiter(StackState& st, const std::shared_ptr<Waiter>& w,
                              const std::vector<std::size_t>& targets) {
  w->is_good.assign(st.services.size(), 0);
  if (w->up) {
    w->intent_at.assign(st.services.size(), 0);
    for (auto i : targets) w->intent_at[i] = st.services[i]->intent_gen;
  }
  w->targets = targets.size();
  std::erase_if(st.waiters, [](const auto& x) { return x->lapsed(); });
  st.waiters.push_back(w);
  for (auto i : targets) {
    auto& list = st.services[i]->waiters;
    std::erase_if(list, [](const auto& x) { return x->lapsed(); });
    list.push_back(w);
  }
  if (targets.empty()) return w->finish(Outcome{});
  for (auto i : targets) {
    w->update(*st.services[i]);
    if (w->done) return;
  }
}

void Engine::Impl::notify_waiters(Svc& s) {
  if (s.waiters.empty()) return;
  // A finishing waiter may make the engine act (a close posts its work), never add
  // waiters to this list synchronously; iterate a copy all the same.
  auto list = s.waiters;
  for (auto& w : list) w->update(s);
  std::erase_if(s.waiters, [](const auto& x) { return x->lapsed(); });
}

// After any change of `s`: dependents may start (or fail), dependencies may stop, and
// waiters may be satisfied. Event-driven: no polling tick anywhere.
void Engine::Impl::publish_status(StackState& st, const Svc& s) {
  ServiceStatus r;
  r.name = s.spec.name;
  r.state = s.state;
  r.pid = s.proc.pid;
  r.restarts = s.restarts;
  r.exit_code = s.exit_code;
  r.ports = s.ports;
  r.resources = s.resources;
  r.reason = s.reason;
  r.started_at = s.started_wall;
  r.ready_at = s.ready_wall;
  std::lock_guard lock(st.status_mutex);
  st.status_snapshot[s.index] = std::move(r);
}

void Engine::Impl::changed(StackState& st, Svc& s) {
  // The snapshot first: a caller woken by a waiter below reads it at once.
  publish_status(st, s);
  // Waiters first: when a failure cascades, the start request names its root cause.
  notify_waiters(s);
  for (auto d : st.graph.dependents(s.index)) try_start(st, *st.services[d]);
  for (auto d : st.graph.dependencies(s.index)) try_stop(st, *st.services[d]);
}

bool Engine::Impl::satisfied(const Svc& d, Condition c) {
  switch (c) {
    case Condition::started: return d.spawned_once && d.state != State::failed;
    case Condition::ready:
      return d.state == State::ready || d.state == State::unhealthy ||
             (d.state == State::exited && d.exit_code == 0 && d.ever_ready);
    case Condition::completed: return d.state == State::exited && d.exit_code == 0;
  }
  return false;
}

// A dependency that can no longer reach its condition without a new request.
std::optional<std::string> Engine::Impl::hopeless(const Svc& d, Condition c) {
  if (d.state == State::failed && !d.want_up && !d.proc.full()) return fmt::format("dependency '{}' failed: {}", d.spec.name, d.reason);
  if (d.state == State::stopped && !d.want_up) return fmt::format("dependency '{}' was stopped", d.spec.name);
  if (d.state == State::exited && !satisfied(d, c))
    return fmt::format("dependency '{}' exited with code {}", d.spec.name, d.exit_code.value_or(-1));
  return std::nullopt;
}

// Down: settled with nothing in its process slot (a service killed at its deadline is
// `failed` at once, but not down until that process has been reaped).
bool Engine::Impl::is_down(const Svc& s) {
  return !s.want_down && !s.proc.full() &&
         (is_settled(s.state) || (s.state == State::pending && !s.want_up));
}

void Engine::Impl::try_start(StackState& st, Svc& s) {
  if (s.state != State::pending || !s.want_up || st.closed) return;
  bool ready = true;
  const Dependency* waiting_on = nullptr;
  for (const auto& dep : s.spec.depends_on) {
    const Svc& d = *st.services[st.index.at(dep.name)];
    if (satisfied(d, dep.condition)) continue;
    if (auto why = hopeless(d, dep.condition)) {
      dispatch(st, s, Event::dep_failed, *why);
      return;
    }
    ready = false;
    if (!waiting_on) waiting_on = &dep;
  }
  // Why it is still pending, for status rows and the dashboard: "waiting for db: ready".
  if (waiting_on) {
    std::string why = fmt::format("waiting for {}: {}", waiting_on->name, to_string(waiting_on->condition));
    if (why != s.reason) {
      s.reason = std::move(why);
      publish_status(st, s);
    }
  }
  // The slot is still full when the previous run was killed and is not reaped yet; the
  // reap calls try_start again.
  if (ready && !s.proc.full()) dispatch(st, s, Event::go);
}

void Engine::Impl::try_stop(StackState& st, Svc& s) {
  if (!s.want_down) return;
  if (s.state == State::pending || s.state == State::backoff) {
    s.want_down = false;
    s.reason.clear();  // no longer waiting for anything
    dispatch(st, s, Event::stop);
    return;
  }
  if (!(s.state == State::starting || s.state == State::ready || s.state == State::unhealthy)) {
    // Settled (or already stopping): nothing to send. The waiter still waits for the slot.
    if (s.state != State::stopping) {
      s.want_down = false;
      changed(st, s);
    }
    return;
  }
  // Dependents first: wait while any dependent that is being stopped still runs.
  for (auto d : st.graph.dependents(s.index)) {
    const Svc& dep = *st.services[d];
    if (dep.want_down && (is_running(dep.state) || dep.state == State::pending || dep.proc.full())) return;
  }
  dispatch(st, s, Event::stop);
}

// Each named service once, even when named twice (`stop("web", "web")`).
std::vector<std::size_t> Engine::Impl::indices(StackState& st, const std::vector<std::string>& names) {
  std::vector<std::size_t> out;
  if (names.empty()) {
    for (std::size_t i = 0; i < st.services.size(); ++i) out.push_back(i);
    return out;
  }
  std::vector<char> seen(st.services.size(), 0);
  for (const auto& n : names) {
    auto i = st.at(n).index;
    if (!seen[i]) out.push_back(i);
    seen[i] = 1;
  }
  return out;
}

void Engine::Impl::set_intent(Svc& s, bool up) {
  if (s.intent_up == up) return;
  s.intent_up = up;
  ++s.intent_gen;
}

void Engine::Impl::request_start(StackState& st, const std::vector<std::string>& names,
                                 const std::shared_ptr<Pending<Outcome>>& result) {
  if (st.closed || st.closing) throw Error(fmt::format("stack '{}' is closed", st.spec.name));
  auto mask = st.graph.with_dependencies(indices(st, names));
  std::vector<std::size_t> targets;
  for (std::size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) targets.push_back(i);
  // Room in the fd table for what the spawns open (pipes, pidfds, port sockets), grown
  // once now rather than doubling under the spawns, each time waiting for an RCU grace
  // period (os/fd_table.hpp).
  int fds = 64;
  for (auto i : targets) fds += 5 + static_cast<int>(st.services[i]->spec.ports.size() + st.services[i]->spec.listen.size());
  os::reserve_fd_slots(fds);
  // Every port first, so that {{other.port.x}} resolves whatever the spawn order.
  for (auto i : targets) {
    ensure_ports(*st.services[i]);
    publish_status(st, *st.services[i]);
  }
  // One reading of the pid clock for the whole request bounds what the sweep at the next
  // stop has to look at.
  std::optional<procfs::PidClock> clock;
  for (auto i : targets)
    if (!st.services[i]->sweep_since) {
      if (!clock) clock = sweep_clock();
      st.services[i]->sweep_since = clock;
    }
  for (auto i : targets) {
    Svc& s = *st.services[i];
    set_intent(s, true);
    s.want_down = false;
    if (is_settled(s.state)) dispatch(st, s, Event::start);
    if (s.state == State::pending || s.state == State::stopping) s.want_up = true;
  }
  // Everything that was overtaken hears about it before the new request is judged.
  for (auto i : targets) notify_waiters(*st.services[i]);
  auto w = std::make_shared<Waiter>();
  w->result = result;
  w->up = true;
  w->bad = [](const Svc& s) -> std::optional<Outcome> {
    // A failure is told once its process is reaped: nothing of it is left running then.
    if (s.state == State::failed && !s.want_up && !s.proc.full()) return Outcome{false, s.spec.name, s.reason};
    if (s.state == State::exited && s.exit_code != 0)
      return Outcome{false, s.spec.name, fmt::format("exited with code {}", s.exit_code.value_or(-1))};
    if (s.state == State::stopped && !s.want_up) return Outcome{false, s.spec.name, "stopped while the stack was starting"};
    return std::nullopt;
  };
  w->good = [](const Svc& s) {
    return s.state == State::ready || s.state == State::unhealthy || (s.state == State::exited && s.exit_code == 0);
  };
  add_waiter(st, w, targets);
  for (auto i : targets) try_start(st, *st.services[i]);
}

void Engine::Impl::request_stop(StackState& st, const std::vector<std::string>& names,
                                const std::shared_ptr<Pending<Outcome>>& result,
                                std::shared_ptr<Pending<Outcome>> hold) {
  auto targets = indices(st, names);
  for (auto i : targets) {
    Svc& s = *st.services[i];
    set_intent(s, false);
    s.want_up = false;
    if (!is_settled(s.state) || s.proc.full()) s.want_down = true;
  }
  for (auto i : targets) notify_waiters(*st.services[i]);
  auto w = std::make_shared<Waiter>();
  w->result = result;
  w->hold = std::move(hold);
  w->up = false;
  w->good = [](const Svc& s) { return is_down(s); };
  // Once they are all down, whatever escaped their process groups goes too, before the
  // caller hears that the stop is done. The sweep reads /proc, so it runs on the chores
  // thread: the engine (and every other stack) goes on meanwhile.
  auto self = st.shared_from_this();
  std::weak_ptr<Pending<Outcome>> weak = result;
  w->deliver = [this, self, targets, weak](Outcome o) {
    if (!o.ok || o.superseded) {
      if (auto r = weak.lock()) r->set(std::move(o));
      return;
    }
    sweep_escapees(self, targets, [weak, o] {
      if (auto r = weak.lock()) r->set(o);
    });
  };
  add_waiter(st, w, targets);
  for (auto i : targets) try_stop(st, *st.services[i]);
}

void Engine::Impl::request_close(const std::shared_ptr<StackState>& st, const std::shared_ptr<Pending<Outcome>>& done) {
  if (st->closed) return done->set(Outcome{});
  st->close_results.push_back(done);
  // A second close (the dropped handle's, then an explicit one) waits for the first.
  if (st->closing) return;
  st->closing = true;
  // The stop holds its own result, so the close completes even if the caller stops waiting.
  auto stopped = std::make_shared<Pending<Outcome>>();
  auto w = std::make_shared<Waiter>();
  w->hold = stopped;
  w->result = stopped;
  w->good = [](const Svc& s) { return is_down(s); };
  w->deliver = [this, st](Outcome) {
    std::vector<std::size_t> all(st->services.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
    sweep_escapees(st, all, [this, st] { finish_close(st); });
  };
  std::vector<std::size_t> all(st->services.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  for (auto i : all) {
    Svc& s = *st->services[i];
    set_intent(s, false);
    s.want_up = false;
    if (!is_settled(s.state) || s.proc.full()) s.want_down = true;
  }
  for (auto i : all) notify_waiters(*st->services[i]);
  add_waiter(*st, w, all);
  for (auto i : all) try_stop(*st, *st->services[i]);
}

void Engine::Impl::finish_close(const std::shared_ptr<StackState>& st) {
  st->closed = true;
  if (watcher) watcher->unwatch_stack(st->id);
  for (auto& s : st->services) {
    s->leases.clear();
    s->notify.reset();
    s->timer.cancel();
    s->deadline.cancel();
    s->check_timer.cancel();
    for (auto& lw : s->log_waiters)
      if (auto r = lw.result.lock()) r->set(Outcome{false, "", "the stack was closed"});
    s->log_waiters.clear();
  }
  for (auto& w : std::vector(st->waiters))
    if (!w->lapsed()) w->finish(Outcome{false, "", "the stack was closed"});
  st->waiters.clear();
  for (auto& s : st->services) s->waiters.clear();
  std::erase_if(stacks, [&](const auto& p) { return p == st; });
  st->events.close();
  // A {{tmpdir}} may hold anything the service left (60k files took 414 ms): removed on
  // the chores thread, and the close completes once it is gone.
  std::string dir = std::move(st->tmpdir);
  st->tmpdir.clear();
  chores.post([dir, results = std::move(st->close_results)] {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    for (const auto& r : results) r->set(Outcome{});
  });
}

// Last resort (interpreter exit, engine teardown): SIGKILL every group, reap, sweep the
// escapees and remove the private directories, all right here: the engine is ending.
void Engine::Impl::kill_all() noexcept {
  for (auto& st : stacks) {
    for (auto& s : st->services)
      if (s->proc.full()) {
        ::kill(-s->proc.pid, SIGKILL);
        siginfo_t info{};
        ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s->proc.pidfd->native_handle()), &info, WEXITED);
        if (watcher) watcher->unwatch(s->proc.pid);
        s->proc.pid = 0;
        publish_status(*st, *s);
      }
    try {
      std::string marker = "CORRAL_STACK=" + st->id;
      for (const auto& m : find_marked(marker)) {
        int fd = static_cast<int>(::syscall(SYS_pidfd_open, m.pid, 0));
        if (fd < 0) continue;
        Fd pidfd(fd);
        if (has_marker(m.pid, marker)) ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
      }
      if (!st->tmpdir.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(st->tmpdir, ec);
      }
    } catch (...) {
      // Out of memory while scanning: what is left dies with the death watcher.
    }
    // Every request still waiting completes, so no caller is left behind.
    st->closed = true;
    for (auto& w : st->waiters) {
      w->deliver = nullptr;  // no sweep: it was done just above
      if (!w->lapsed()) w->finish(Outcome{false, "", "the corral engine shut down"});
    }
    for (auto& s : st->services)
      for (auto& lw : s->log_waiters)
        if (auto r = lw.result.lock()) r->set(Outcome{false, "", "the corral engine shut down"});
    for (const auto& r : st->close_results) r->set(Outcome{});
    st->events.close();
  }
}

}  // namespace corral
