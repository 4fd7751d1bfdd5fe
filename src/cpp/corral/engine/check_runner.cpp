// Readiness and liveness checks: attempts on timers, the readiness deadline (the start
// budget), and sd_notify messages. Results enter the service machine as events.
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <cmath>
#include <cstring>

#include "corral/checks/listener.hpp"
#include "corral/checks/probes.hpp"
#include "corral/engine/engine_impl.hpp"
#include "corral/metrics/procfs.hpp"

namespace corral {

void Engine::Impl::open_notify(StackState& st, Svc& s) {
  if (s.notify) return;
  // Named by index, not by a prefix of the name: replicas with long names share prefixes.
  s.notify_path = fmt::format("{}/{}.notify", ensure_stack_tmpdir(st), s.index);
  ::unlink(s.notify_path.c_str());
  s.notify = std::make_unique<asio::local::datagram_protocol::socket>(io);
  s.notify->open();
  // The kernel attaches each sender's credentials, so READY=1 is taken only from the
  // service's own processes, not from anything else that can reach the socket.
  int on = 1;
  ::setsockopt(s.notify->native_handle(), SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
  s.notify->non_blocking(true);
  s.notify->bind(asio::local::datagram_protocol::endpoint(s.notify_path));
  arm_notify(st, s);
}

void Engine::Impl::arm_notify(StackState& st, Svc& s) {
  auto self = st.shared_from_this();
  s.notify->async_wait(asio::socket_base::wait_read, [this, self, &s](const boost::system::error_code& ec) {
    if (ec || !s.notify) return;
    on_notify(*self, s);
    if (s.notify) arm_notify(*self, s);
  });
}

void Engine::Impl::on_notify(StackState& st, Svc& s) {
  std::array<char, 4096> buf{};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
  while (s.notify) {
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(s.notify->native_handle(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) return;  // EAGAIN: all read
    pid_t sender = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred{};
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        sender = cred.pid;
      }
    // The service's processes are its group (the leader's pid is the group id).
    bool ours = s.proc.full() && sender > 0 && (sender == s.proc.pid || procfs::process_group(sender) == s.proc.pid);
    std::string_view text(buf.data(), static_cast<std::size_t>(n));
    if (!ours) {
      record_line(st, s, Stream::err,
                  fmt::format("corral: ignored a notification from pid {}, which is not a process of this service",
                              sender));
      continue;
    }
    // sd_notify: newline-separated assignments; READY=1 is ours.
    std::size_t pos = 0;
    while (pos <= text.size()) {
      auto end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      if (text.substr(pos, end - pos) == "READY=1" && s.state == State::starting) dispatch(st, s, Event::ready);
      pos = end + 1;
    }
  }
}

int Engine::Impl::check_port(const Svc& s, const CheckSpec& c) {
  if (c.port.empty()) return s.ports.empty() ? 0 : s.ports.begin()->second;
  if (is_port_number(c.port)) return std::stoi(c.port);
  auto it = s.ports.find(c.port);
  return it == s.ports.end() ? 0 : it->second;
}

void Engine::Impl::begin_checks(StackState& st, Svc& s, bool readiness) {
  const CheckSpec& c = readiness ? *s.spec.ready : *s.spec.health;
  unsigned gen = ++s.check_gen;
  if (readiness) {
    if (!s.budget) {
      s.budget = true;
      s.budget_end = Clock::now() + to_duration(c.start_timeout);
    }
    arm_deadline(st, s);
    // Why it is still starting, for status rows and the dashboard.
    double left = std::chrono::duration<double>(s.budget_end - Clock::now()).count();
    s.reason = fmt::format("waiting for its {} check, readiness deadline in {:.0f} s", to_string(c.kind),
                           std::max(0.0, left));
    s.reason_is_deadline = true;
    publish_status(st, s);
    if (c.kind == CheckSpec::Kind::log) {
      s.ready_regex.emplace(Pattern::compile(c.pattern));
      return;
    }
    if (c.kind == CheckSpec::Kind::notify) return;
    attempt(st, s, readiness, gen);
  } else {
    schedule_attempt(st, s, false, gen, c.interval);
  }
}

void Engine::Impl::arm_deadline(StackState& st, Svc& s) {
  auto self = st.shared_from_this();
  unsigned gen = ++s.deadline_gen;
  s.deadline.expires_at(s.budget_end);
  s.deadline.async_wait([this, self, &s, gen](const boost::system::error_code& ec) {
    if (!ec && s.deadline_gen == gen) on_deadline(*self, s);
  });
}

void Engine::Impl::schedule_attempt(StackState& st, Svc& s, bool readiness, unsigned gen, double delay) {
  auto self = st.shared_from_this();
  s.check_timer.expires_after(to_duration(delay));
  s.check_timer.async_wait([this, self, &s, readiness, gen](const boost::system::error_code& ec) {
    if (!ec && s.check_gen == gen) attempt(*self, s, readiness, gen);
  });
}

void Engine::Impl::attempt(StackState& st, Svc& s, bool readiness, unsigned gen) {
  const CheckSpec& c = readiness ? *s.spec.ready : *s.spec.health;
  auto self = st.shared_from_this();
  s.check_started = Clock::now();
  ProbeDone done = [this, self, &s, readiness, gen](bool ok, std::string detail) {
    if (s.check_gen != gen) return;  // the run it was checking is over
    on_probe(*self, s, readiness, gen, ok, std::move(detail));
  };
  switch (c.kind) {
    case CheckSpec::Kind::tcp: probe_tcp(io, check_port(s, c), c.timeout, std::move(done)); break;
    case CheckSpec::Kind::http: {
      std::string path;
      try {
        path = render_template(c.path, resolver(st, s));
      } catch (const std::exception&) {
        path = c.path;
      }
      probe_http(io, check_port(s, c), path, c.status, c.timeout, std::move(done));
      break;
    }
    case CheckSpec::Kind::exec: {
      auto resolve = resolver(st, s);
      std::vector<std::string> argv;
      for (const auto& a : c.command) argv.push_back(render_template(a, resolve));
      probe_exec(io, argv, build_env(st, s, resolve), render_template(s.spec.cwd, resolve), c.timeout,
                 std::move(done), watcher ? watcher->tracker() : GroupTracker{});
      break;
    }
    case CheckSpec::Kind::log:
    case CheckSpec::Kind::notify: break;
  }
}

void Engine::Impl::on_probe(StackState& st, Svc& s, bool readiness, unsigned gen, bool ok, std::string detail) {
  const CheckSpec& c = readiness ? *s.spec.ready : *s.spec.health;
  st.metrics->on_check(s.index, readiness, to_string(c.kind).data(),
                       std::chrono::duration<double>(Clock::now() - s.check_started).count(), ok);
  if (readiness) {
    if (s.state != State::starting) return;
    // Someone answering is not enough: it must be the service (not an orphan of an earlier
    // run that still holds the port). For a fixed port number always; for a port corral
    // allocated only when it was contested: such a port was free when the kernel gave it
    // out and held by us until the spawn, so no impostor can hold it unless the last run
    // left a listener behind (and the /proc/net/tcp read costs ms on a busy machine).
    if (ok && (c.kind == CheckSpec::Kind::tcp || c.kind == CheckSpec::Kind::http) &&
        (is_port_number(c.port) || s.ports_contested)) {
      if (auto who = foreign_listener(check_port(s, c), s.proc.pid)) {
        ok = false;
        detail = std::move(*who);
      }
    }
    if (ok) {
      dispatch(st, s, Event::ready);
      return;
    }
    s.last_check = std::move(detail);
    // The first attempts come fast (1, 2, 4 ms ... up to `interval`): a server usually
    // listens a few ms after exec, and a dependency chain pays this wait at every link.
    double delay = std::min(c.interval, 0.001 * std::ldexp(1.0, std::min(s.ready_attempts++, 30)));
    return schedule_attempt(st, s, true, gen, delay);
  }
  if (ok) {
    s.health_failures = 0;
    dispatch(st, s, Event::health_ok);
  } else if (++s.health_failures >= c.retries) {
    dispatch(st, s, Event::health_failed,
             fmt::format("liveness check failed {} times: {}", s.health_failures, detail));
  }
  if (s.check_gen == gen) schedule_attempt(st, s, false, gen, c.interval);
}

void Engine::Impl::on_deadline(StackState& st, Svc& s) {
  const CheckSpec& c = *s.spec.ready;
  std::string detail = s.last_check.empty() ? (c.kind == CheckSpec::Kind::log
                                                   ? fmt::format("no log line matched '{}'", c.pattern)
                                               : c.kind == CheckSpec::Kind::notify ? "no READY=1 notification"
                                                                                    : "no attempt finished")
                                            : s.last_check;
  dispatch(st, s, Event::deadline,
           fmt::format("not ready within {}s ({} check: {})", c.start_timeout, to_string(c.kind), detail));
}

}  // namespace corral
