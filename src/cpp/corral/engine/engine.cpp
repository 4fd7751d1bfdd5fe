// The engine thread and the supervision of every service. Everything in this file that
// touches StackState or Svc runs on the engine thread; the public Stack methods only post
// work to it (see `Impl::call`) and hand back Pending results.
#include "corral/engine/engine.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <random>
#include <regex>
#include <thread>
#include <unordered_map>

#include "corral/checks/listener.hpp"
#include "corral/checks/probes.hpp"
#include "corral/engine/watcher.hpp"
#include "corral/resources/runtime.hpp"
#include "corral/graph/graph.hpp"
#include "corral/metrics/proc_sample.hpp"
#include "corral/resources/ports.hpp"
#include "corral/spawn/spawn.hpp"
#include "corral/supervise/restart.hpp"
#include "corral/supervise/state_machine.hpp"
#include "corral/template/template.hpp"

namespace corral {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using Descriptor = asio::posix::stream_descriptor;

namespace {

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}
std::int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
double wall_seconds() { return static_cast<double>(wall_ns()) / 1e9; }

std::string upper(std::string s) {
  for (auto& c : s) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : (c == '-' || c == '.') ? '_' : c;
  return s;
}

constexpr std::size_t max_events = 65536;

// The command as a shell would need it typed, for --verbose.
std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == std::string::npos;
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

struct LogWaiter {
  std::regex re;
  std::uint64_t from = 0;
  std::weak_ptr<Pending<Outcome>> result;
};

}  // namespace

struct Waiter;

// The live side of one service. Owned by its StackState; handlers capture the stack's
// shared_ptr and compare `generation` so that a callback of an earlier run is ignored.
struct Svc {
  Svc(asio::io_context& io, ServiceSpec s, std::size_t i)
      : spec(std::move(s)), index(i), timer(io), deadline(io), check_timer(io),
        logs(spec.log_lines, spec.log_bytes) {}

  ServiceSpec spec;
  std::size_t index;
  State state = State::pending;
  bool want_up = false;    // part of a start request that is not yet satisfied or undone
  bool want_down = false;  // stop requested; waits for its dependents to be down

  pid_t pid = 0;
  std::unique_ptr<Descriptor> pidfd, out, err;
  LineSplitter out_split, err_split;
  unsigned generation = 0;  // bumped on every spawn
  unsigned check_gen = 0;   // bumped whenever running checks must be forgotten

  int restarts = 0;  // shown to users
  int streak = 0;    // consecutive restarts, drives the backoff; reset by a stable run
  int health_failures = 0;
  int ready_attempts = 0;  // failed readiness attempts of this run
  bool health_kill = false;  // this run was stopped because its liveness check failed
  std::optional<int> exit_code;
  bool ever_ready = false;    // this run became ready
  bool spawned_once = false;  // spawned since the last start request
  std::string reason;
  std::string last_check;  // what the last failed readiness attempt said
  Clock::time_point spawned_at{};
  double started_wall = 0, ready_wall = 0;

  asio::steady_timer timer;        // backoff, or the SIGKILL after stop_timeout
  asio::steady_timer deadline;     // readiness deadline (the start budget)
  // The start budget: from the first spawn of a start until ready, across crashes and
  // restarts, so that a crash loop before readiness still ends at `start_timeout`.
  bool budget = false;
  Clock::time_point budget_end{};
  unsigned deadline_gen = 0;
  asio::steady_timer check_timer;  // next check attempt

  std::vector<PortLease> leases;
  std::map<std::string, int> ports;
  LogRing logs;
  std::optional<std::regex> ready_regex;
  std::vector<LogWaiter> log_waiters;
  std::vector<std::shared_ptr<Waiter>> waiters;  // those watching this service
  std::string tmpdir;
  std::string notify_path;
  std::unique_ptr<asio::local::datagram_protocol::socket> notify;
  std::array<char, 1024> notify_buf{};
};

// A blocking request (start, stop, wait_state, close) waiting on a set of services. It is
// told only about changes of the services it watches and keeps a count of those in a good
// state, so each event costs O(1) however large the stack: no rescans, no polling.
struct Waiter {
  std::function<bool(const Svc&)> good;                  // this target is where we want it
  std::function<std::optional<Outcome>(const Svc&)> bad;  // this target makes it fail
  std::function<void()> on_success;                      // optional, runs once on success
  std::vector<char> is_good;                             // by service index
  std::size_t targets = 0, good_count = 0;
  // Weak: a caller that gave up waiting (timeout) lets its waiter lapse.
  std::weak_ptr<Pending<Outcome>> result;
  std::shared_ptr<Pending<Outcome>> hold;  // set for waiters nobody else keeps (close)
  bool done = false;

  bool lapsed() const { return done || (!hold && result.expired()); }
  void finish(Outcome o) {
    done = true;
    if (o.ok && on_success) on_success();
    if (auto r = result.lock()) r->set(std::move(o));
    hold.reset();
  }
  // Re-judges one target; finishes the waiter when that settles it.
  void update(const Svc& s);
};

struct StackState : std::enable_shared_from_this<StackState> {
  StackState(StackSpec s, Graph g) : spec(std::move(s)), graph(std::move(g)) {}
  StackSpec spec;
  Graph graph;
  std::string id;
  std::vector<std::unique_ptr<Svc>> services;
  std::unordered_map<std::string, std::size_t> index;
  std::vector<std::shared_ptr<Waiter>> waiters;  // every live waiter, to fail them on close
  std::string tmpdir;
  std::atomic<bool> closed{false};

  // The event stream is the one piece shared with other threads, under its own mutex.
  std::atomic<bool> subscribed{false};
  std::mutex ev_mutex;
  std::condition_variable ev_cv;
  std::deque<EngineEvent> events;
  std::size_t ev_dropped = 0;

  Svc& at(const std::string& name) {
    auto it = index.find(name);
    if (it == index.end()) throw Error(fmt::format("stack '{}' has no service '{}'", spec.name, name));
    return *services[it->second];
  }
};

void Waiter::update(const Svc& s) {
  if (lapsed()) return;
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

struct Engine::Impl {
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread thread;
  std::thread::id thread_id;
  std::unique_ptr<DeathWatcher> watcher;
  std::vector<std::shared_ptr<StackState>> stacks;
  std::mt19937_64 rng{std::random_device{}()};
  std::array<char, 65536> read_buf{};
  std::atomic<bool> alive{true};
  unsigned long next_stack = 0;

  // Runs `f` on the engine thread and returns its result (or rethrows its exception).
  template <class F>
  auto call(F f) -> decltype(f()) {
    if (!alive) throw Error("the corral engine is not running");
    if (std::this_thread::get_id() == thread_id) return f();
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io, [&task] { task(); });
    return fut.get();
  }

  // ---- events and waiters ---------------------------------------------------------------

  void push_event(StackState& st, EngineEvent ev) {
    if (!st.subscribed.load(std::memory_order_relaxed)) return;
    {
      std::lock_guard lock(st.ev_mutex);
      if (st.events.size() >= max_events) {
        st.events.pop_front();
        ++st.ev_dropped;
      }
      st.events.push_back(std::move(ev));
    }
    st.ev_cv.notify_one();
  }

  // Registers `w` on `targets` and judges each once; it may finish right away.
  void add_waiter(StackState& st, const std::shared_ptr<Waiter>& w, const std::vector<std::size_t>& targets) {
    w->is_good.assign(st.services.size(), 0);
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

  void notify_waiters(Svc& s) {
    if (s.waiters.empty()) return;
    // A finishing waiter may make the engine act (close posts its work), never add waiters
    // to this list synchronously; iterate a copy all the same.
    auto list = s.waiters;
    for (auto& w : list) w->update(s);
    std::erase_if(s.waiters, [](const auto& x) { return x->lapsed(); });
  }

  // ---- state changes ----------------------------------------------------------------------

  // The only place a state changes. Ignores events the table has no transition for.
  bool apply(StackState& st, Svc& s, Event ev, std::string why = {}, std::string detail = {}) {
    auto next = transition(s.state, ev);
    if (!next) return false;
    s.state = *next;
    if (!why.empty()) s.reason = std::move(why);
    EngineEvent e;
    e.kind = EngineEvent::Kind::state;
    e.service = s.spec.name;
    e.state = s.state;
    e.time_ns = wall_ns();
    e.exit_code = s.exit_code;
    e.text = s.state == State::failed ? s.reason : std::move(detail);
    push_event(st, std::move(e));
    return true;
  }

  // After any change of `s`: dependents may start (or fail), dependencies may stop, and
  // waiters may be satisfied. Event-driven: no polling tick anywhere.
  void changed(StackState& st, Svc& s) {
    // Waiters first: when a failure cascades, the start request names its root cause.
    notify_waiters(s);
    for (auto d : st.graph.dependents(s.index)) try_start(st, *st.services[d]);
    for (auto d : st.graph.dependencies(s.index)) try_stop(st, *st.services[d]);
  }

  // ---- start ------------------------------------------------------------------------------

  static bool satisfied(const Svc& d, Condition c) {
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
  static std::optional<std::string> hopeless(const Svc& d, Condition c) {
    if (d.state == State::failed) return fmt::format("dependency '{}' failed: {}", d.spec.name, d.reason);
    if (d.state == State::stopped && !d.want_up) return fmt::format("dependency '{}' was stopped", d.spec.name);
    if (d.state == State::exited && !satisfied(d, c))
      return fmt::format("dependency '{}' exited with code {}", d.spec.name, d.exit_code.value_or(-1));
    return std::nullopt;
  }

  void try_start(StackState& st, Svc& s) {
    if (s.state != State::pending || !s.want_up || st.closed) return;
    bool ready = true;
    for (const auto& dep : s.spec.depends_on) {
      const Svc& d = *st.services[st.index.at(dep.name)];
      if (satisfied(d, dep.condition)) continue;
      if (auto why = hopeless(d, dep.condition)) {
        s.want_up = false;
        apply(st, s, Event::dependency_failed, *why);
        changed(st, s);
        return;
      }
      ready = false;
    }
    if (ready) spawn_service(st, s);
  }

  void ensure_ports(Svc& s) {
    if (!s.leases.empty() || s.spec.ports.empty()) return;
    for (const auto& name : s.spec.ports) {
      s.leases.push_back(allocate_port());
      s.ports[name] = s.leases.back().port();
    }
  }

  std::string ensure_stack_tmpdir(StackState& st) {
    if (!st.tmpdir.empty()) return st.tmpdir;
    std::string base = runtime_subdir("stacks");  // private, never a planted symlink
    std::string tmpl = fmt::format("{}/{}-XXXXXX", base, st.spec.name.empty() ? "stack" : st.spec.name.substr(0, 24));
    if (::mkdtemp(tmpl.data()) == nullptr)
      throw Error(fmt::format("cannot create a private directory: {}", std::strerror(errno)));
    st.tmpdir = tmpl;
    return st.tmpdir;
  }

  std::string ensure_tmpdir(StackState& st, Svc& s) {
    if (!s.tmpdir.empty()) return s.tmpdir;
    std::string dir = ensure_stack_tmpdir(st) + "/" + s.spec.name;
    ::mkdir(dir.c_str(), 0700);
    s.tmpdir = dir;
    return dir;
  }

  TemplateResolver resolver(StackState& st, Svc& s) {
    return [this, &st, &s](std::string_view key) -> std::optional<std::string> {
      if (key == "name") return s.spec.name;
      if (key == "tmpdir") return ensure_tmpdir(st, s);
      if (key.rfind("port.", 0) == 0) {
        ensure_ports(s);
        auto it = s.ports.find(std::string(key.substr(5)));
        if (it != s.ports.end()) return std::to_string(it->second);
        return std::nullopt;
      }
      auto dot = key.find(".port.");
      if (dot != std::string_view::npos) {
        auto it = st.index.find(std::string(key.substr(0, dot)));
        if (it == st.index.end()) return std::nullopt;
        Svc& o = *st.services[it->second];
        ensure_ports(o);
        auto p = o.ports.find(std::string(key.substr(dot + 6)));
        if (p != o.ports.end()) return std::to_string(p->second);
      }
      return std::nullopt;
    };
  }

  std::vector<std::string> build_env(StackState& st, Svc& s, const TemplateResolver& resolve) {
    std::map<std::string, std::string> env = st.spec.base_env;
    // What the owner inherited from its own supervisor must not leak into services: a
    // NOTIFY_SOCKET would let them notify systemd (or an outer corral), PORT and
    // CORRAL_PORT_* would name the owner's ports, not theirs.
    std::erase_if(env, [](const auto& kv) {
      const auto& k = kv.first;
      return k == "NOTIFY_SOCKET" || k == "PORT" || k == "CORRAL_SERVICE" || k == "CORRAL_STACK" ||
             k.rfind("CORRAL_PORT_", 0) == 0;
    });
    env["CORRAL_STACK"] = st.id;
    env["CORRAL_SERVICE"] = s.spec.name;
    for (const auto& [name, port] : s.ports) env["CORRAL_PORT_" + upper(name)] = std::to_string(port);
    if (s.ports.size() == 1) env["PORT"] = std::to_string(s.ports.begin()->second);
    if (!s.notify_path.empty()) env["NOTIFY_SOCKET"] = s.notify_path;
    for (const auto& [k, v] : s.spec.env) env[k] = render_template(v, resolve);
    std::vector<std::string> out;
    out.reserve(env.size());
    for (auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
  }

  void record_line(StackState& st, Svc& s, Stream stream, std::string_view text) {
    auto now = wall_ns();
    const LogLine& line = s.logs.push(now, stream, text);
    // The line goes out before whatever it causes (readiness), so a reader of the event
    // stream sees "server started" before "[corral] ready".
    if (st.subscribed.load(std::memory_order_relaxed)) {
      EngineEvent e;
      e.kind = EngineEvent::Kind::log;
      e.service = s.spec.name;
      e.stream = stream;
      e.text = line.text;
      e.time_ns = now;
      push_event(st, std::move(e));
    }
    if (!s.log_waiters.empty()) {
      for (std::size_t i = 0; i < s.log_waiters.size();) {
        auto& w = s.log_waiters[i];
        auto result = w.result.lock();
        bool hit = result && line.seq >= w.from && std::regex_search(line.text, w.re);
        if (hit) result->set(Outcome{true, s.spec.name, line.text});
        if (!result || hit) {
          s.log_waiters[i] = std::move(s.log_waiters.back());
          s.log_waiters.pop_back();
        } else {
          ++i;
        }
      }
    }
    if (s.ready_regex && s.state == State::starting && std::regex_search(line.text, *s.ready_regex)) {
      s.ready_regex.reset();
      mark_ready(st, s);
    }
  }

  void spawn_service(StackState& st, Svc& s) {
    std::string error;
    SpawnRequest req;
    Fd out_r, out_w, err_r, err_w;
    try {
      ensure_ports(s);
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
      r = spawn(req);
      if (!r) error = r.message;
    }
    s.exit_code.reset();
    if (!error.empty()) {
      record_line(st, s, Stream::err, "corral: " + error);
      // Out of processes or memory is worth a retry by the policy; a missing or
      // non-executable program is not, whatever the policy says.
      if ((r.error == EAGAIN || r.error == ENOMEM) && s.spec.restart.policy != RestartSpec::Policy::no) {
        handle_exit(st, s, ExitInfo{127, false, 0});
      } else {
        s.want_up = false;
        apply(st, s, Event::spawn_failed, error);
        changed(st, s);
      }
      return;
    }
    out_w.reset();
    err_w.reset();
    ++s.generation;
    s.pid = r.pid;
    s.spawned_at = Clock::now();
    s.started_wall = wall_seconds();
    s.ever_ready = false;
    s.spawned_once = true;
    s.health_failures = 0;
    s.ready_attempts = 0;
    s.last_check.clear();
    s.reason.clear();
    s.out_split = LineSplitter();
    s.err_split = LineSplitter();
    if (watcher) watcher->watch(r.pid);
    s.pidfd = std::make_unique<Descriptor>(io, r.pidfd.release());
    s.out = std::make_unique<Descriptor>(io, out_r.release());
    s.err = std::make_unique<Descriptor>(io, err_r.release());
    arm_exit(st, s);
    arm_read(st, s, Stream::out);
    arm_read(st, s, Stream::err);
    apply(st, s, Event::spawned, {}, shell_join(req.argv));
    if (s.spec.ready) {
      begin_checks(st, s, true);
    } else {
      mark_ready(st, s);
      return;  // mark_ready reported the change
    }
    changed(st, s);
  }

  // The pidfd becomes readable when the process exits: that is the whole exit detection.
  void arm_exit(StackState& st, Svc& s) {
    auto self = st.shared_from_this();
    unsigned gen = s.generation;
    s.pidfd->async_wait(Descriptor::wait_read, [this, self, &s, gen](const boost::system::error_code& ec) {
      if (!ec && s.generation == gen && s.pid > 0) on_exit(*self, s);
    });
  }

  void arm_read(StackState& st, Svc& s, Stream which) {
    auto& d = which == Stream::out ? s.out : s.err;
    if (!d) return;
    auto self = st.shared_from_this();
    unsigned gen = s.generation;
    d->async_wait(Descriptor::wait_read, [this, self, &s, which, gen](const boost::system::error_code& ec) {
      if (ec || s.generation != gen) return;
      if (drain(*self, s, which, 16)) arm_read(*self, s, which);
    });
  }

  // Reads what is there (at most `rounds` buffers, for fairness between chatty services).
  // Returns false at end of stream, after closing it.
  bool drain(StackState& st, Svc& s, Stream which, int rounds) {
    auto& d = which == Stream::out ? s.out : s.err;
    auto& split = which == Stream::out ? s.out_split : s.err_split;
    while (d && rounds-- > 0) {
      ssize_t n = ::read(d->native_handle(), read_buf.data(), read_buf.size());
      if (n > 0) {
        split.feed(std::string_view(read_buf.data(), static_cast<std::size_t>(n)),
                   [&](std::string_view line) { record_line(st, s, which, line); });
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      split.finish([&](std::string_view line) { record_line(st, s, which, line); });
      boost::system::error_code ignored;
      d->close(ignored);
      d.reset();
      return false;
    }
    return static_cast<bool>(d);
  }

  // ---- checks -----------------------------------------------------------------------------

  void open_notify(StackState& st, Svc& s) {
    if (s.notify) return;
    s.notify_path = ensure_stack_tmpdir(st) + "/" + s.spec.name.substr(0, 40) + ".notify";
    ::unlink(s.notify_path.c_str());
    s.notify = std::make_unique<asio::local::datagram_protocol::socket>(io);
    s.notify->open();
    s.notify->bind(asio::local::datagram_protocol::endpoint(s.notify_path));
    arm_notify(st, s);
  }

  void arm_notify(StackState& st, Svc& s) {
    auto self = st.shared_from_this();
    s.notify->async_receive(asio::buffer(s.notify_buf),
                            [this, self, &s](const boost::system::error_code& ec, std::size_t n) {
                              if (ec) return;
                              std::string_view msg(s.notify_buf.data(), n);
                              // sd_notify: newline-separated assignments; READY=1 is ours.
                              std::size_t pos = 0;
                              while (pos <= msg.size()) {
                                auto end = msg.find('\n', pos);
                                if (end == std::string_view::npos) end = msg.size();
                                if (msg.substr(pos, end - pos) == "READY=1" && s.state == State::starting)
                                  mark_ready(*self, s);
                                pos = end + 1;
                              }
                              arm_notify(*self, s);
                            });
  }

  int check_port(const Svc& s, const CheckSpec& c) {
    if (c.port.empty()) return s.ports.empty() ? 0 : s.ports.begin()->second;
    if (is_port_number(c.port)) return std::stoi(c.port);
    auto it = s.ports.find(c.port);
    return it == s.ports.end() ? 0 : it->second;
  }

  void begin_checks(StackState& st, Svc& s, bool readiness) {
    const CheckSpec& c = readiness ? *s.spec.ready : *s.spec.health;
    unsigned gen = ++s.check_gen;
    auto self = st.shared_from_this();
    if (readiness) {
      if (!s.budget) {
        s.budget = true;
        s.budget_end = Clock::now() + seconds(c.start_timeout);
      }
      arm_deadline(st, s);
      if (c.kind == CheckSpec::Kind::log) {
        s.ready_regex.emplace(c.pattern, std::regex::ECMAScript);
        return;
      }
      if (c.kind == CheckSpec::Kind::notify) return;
      attempt(st, s, readiness, gen);
    } else {
      schedule_attempt(st, s, false, gen, c.interval);
    }
  }

  void arm_deadline(StackState& st, Svc& s) {
    auto self = st.shared_from_this();
    unsigned gen = ++s.deadline_gen;
    s.deadline.expires_at(s.budget_end);
    s.deadline.async_wait([this, self, &s, gen](const boost::system::error_code& ec) {
      if (!ec && s.deadline_gen == gen && (s.state == State::starting || s.state == State::backoff))
        on_deadline(*self, s);
    });
  }

  void end_budget(Svc& s) {
    s.budget = false;
    ++s.deadline_gen;
    s.deadline.cancel();
  }

  void schedule_attempt(StackState& st, Svc& s, bool readiness, unsigned gen, double delay) {
    auto self = st.shared_from_this();
    s.check_timer.expires_after(seconds(delay));
    s.check_timer.async_wait([this, self, &s, readiness, gen](const boost::system::error_code& ec) {
      if (!ec && s.check_gen == gen) attempt(*self, s, readiness, gen);
    });
  }

  void attempt(StackState& st, Svc& s, bool readiness, unsigned gen) {
    const CheckSpec& c = readiness ? *s.spec.ready : *s.spec.health;
    auto self = st.shared_from_this();
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
        } catch (const std::exception& e) {
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

  void on_probe(StackState& st, Svc& s, bool readiness, unsigned gen, bool ok, std::string detail) {
    const CheckSpec& c = readiness ? *s.spec.ready : *s.spec.health;
    if (readiness) {
      if (s.state != State::starting) return;
      // Someone answering is not enough: it must be the service (not an orphan of an
      // earlier run that still holds the port).
      // Only for a fixed port number: a port corral allocated was free when the kernel gave
      // it out and held by us until the spawn, so no impostor can hold it (and the
      // /proc/net/tcp read costs ms on a busy machine).
      if (ok && (c.kind == CheckSpec::Kind::tcp || c.kind == CheckSpec::Kind::http) && is_port_number(c.port)) {
        if (auto who = foreign_listener(check_port(s, c), s.pid)) {
          ok = false;
          detail = std::move(*who);
        }
      }
      if (ok) return mark_ready(st, s);
      s.last_check = std::move(detail);
      // The first attempts come fast (1, 2, 4 ms ... up to `interval`): a server usually
      // listens a few ms after exec, and a dependency chain pays this wait at every link.
      double delay = std::min(c.interval, 0.001 * std::ldexp(1.0, std::min(s.ready_attempts++, 30)));
      return schedule_attempt(st, s, true, gen, delay);
    }
    if (ok) {
      s.health_failures = 0;
      if (s.state == State::unhealthy && apply(st, s, Event::became_ready)) changed(st, s);
    } else if (++s.health_failures >= c.retries && s.state == State::ready) {
      apply(st, s, Event::health_failed, fmt::format("liveness check failed {} times: {}", s.health_failures, detail));
      // A liveness failure means "restart me" when the policy restarts at all: stop the
      // group; the exit then goes through the restart policy like any crash.
      if (s.spec.restart.policy != RestartSpec::Policy::no) {
        s.health_kill = true;  // however it exits now, it failed
        signal_group(s, s.spec.stop_signal, true);
      }
      changed(st, s);
    }
    schedule_attempt(st, s, false, gen, c.interval);
  }

  void mark_ready(StackState& st, Svc& s) {
    ++s.check_gen;  // readiness attempts still in flight are moot
    end_budget(s);
    s.check_timer.cancel();
    s.ready_regex.reset();
    if (!apply(st, s, Event::became_ready)) return;
    s.ever_ready = true;
    s.ready_wall = wall_seconds();
    if (s.spec.health) begin_checks(st, s, false);
    changed(st, s);
  }

  void on_deadline(StackState& st, Svc& s) {
    const CheckSpec& c = *s.spec.ready;
    std::string detail = s.last_check.empty() ? (c.kind == CheckSpec::Kind::log
                                                     ? fmt::format("no log line matched '{}'", c.pattern)
                                                     : c.kind == CheckSpec::Kind::notify ? "no READY=1 notification"
                                                                                          : "no attempt finished")
                                              : s.last_check;
    ++s.check_gen;
    s.want_up = false;
    s.budget = false;
    s.timer.cancel();  // a pending restart (backoff) is moot
    apply(st, s, Event::ready_deadline,
          fmt::format("not ready within {}s ({} check: {})", c.start_timeout, to_string(c.kind), detail));
    signal_group(s, SIGKILL, false);
    changed(st, s);
  }

  // ---- signals, exits, restarts -------------------------------------------------------------

  // To the whole process group. Safe because we have not reaped the leader: its pid, and so
  // the group id, cannot have been recycled. SIGCONT wakes a stopped group so it can die.
  void signal_group(Svc& s, int sig, bool with_timer) {
    if (s.pid <= 0) return;
    ::kill(-s.pid, sig);
    if (sig != SIGKILL) ::kill(-s.pid, SIGCONT);
    if (with_timer) {
      s.timer.expires_after(seconds(s.spec.stop_timeout));
      unsigned gen = s.generation;
      s.timer.async_wait([&s, gen](const boost::system::error_code& ec) {
        if (!ec && s.generation == gen && s.pid > 0) ::kill(-s.pid, SIGKILL);
      });
    }
  }

  void on_exit(StackState& st, Svc& s) {
    siginfo_t info{};
    // Kill what the service left in its group while the leader is still unreaped (the
    // group id is then guaranteed to be ours); leftovers of a dead service are never wanted.
    ::kill(-s.pid, SIGKILL);
    if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s.pidfd->native_handle()), &info,
                 WEXITED | WNOHANG) != 0 ||
        info.si_pid == 0) {
      arm_exit(st, s);  // spurious wake-up: wait again
      return;
    }
    if (watcher) watcher->unwatch(s.pid);
    ExitInfo exit;
    if (info.si_code == CLD_EXITED) {
      exit.code = info.si_status;
    } else {
      exit.signaled = true;
      exit.signal = info.si_status;
      exit.code = 128 + info.si_status;
    }
    s.exit_code = exit.signaled ? -exit.signal : exit.code;
    s.pid = 0;
    boost::system::error_code ignored;
    s.pidfd->close(ignored);
    s.pidfd.reset();
    // Take what is still in the pipes now, so the last lines are there for whoever looks
    // at the exit; then close them (a grandchild holding the write end was just killed).
    drain(st, s, Stream::out, 64);
    drain(st, s, Stream::err, 64);
    for (auto* d : {&s.out, &s.err})
      if (*d) {
        (*d)->close(ignored);
        d->reset();
      }
    s.out_split.finish([&](std::string_view line) { record_line(st, s, Stream::out, line); });
    s.err_split.finish([&](std::string_view line) { record_line(st, s, Stream::err, line); });
    s.timer.cancel();
    handle_exit(st, s, exit);
  }

  void handle_exit(StackState& st, Svc& s, const ExitInfo& exit) {
    ++s.check_gen;
    s.check_timer.cancel();
    s.ready_regex.reset();
    if (s.state == State::stopping) {
      end_budget(s);
      apply(st, s, Event::exit_after_stop);
      s.want_down = false;
      if (s.want_up) {  // started again while it was stopping
        apply(st, s, Event::reset);
        try_start(st, s);
      }
      return changed(st, s);
    }
    if (s.state == State::failed) return changed(st, s);  // killed after its deadline
    if (Clock::now() - s.spawned_at >= seconds(s.spec.restart.reset_after)) s.streak = 0;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    ExitInfo judged = exit;
    if (s.health_kill && !exit.signaled && exit.code == 0) judged.code = 1;  // a clean exit on our TERM
    s.health_kill = false;
    auto d = decide_restart(s.spec.restart, judged, s.streak, s.ever_ready, s.spec.ready.has_value(), unit(rng));
    std::string why;
    if (d.event == Event::exit_failed)
      why = exit.signaled ? fmt::format("{} (killed by signal {})", d.why, exit.signal)
                          : fmt::format("{} (exit code {})", d.why, exit.code);
    if (d.event != Event::exit_restart) {
      s.want_up = false;
      end_budget(s);  // a restart keeps the start budget running
    }
    apply(st, s, d.event, why);
    if (d.event == Event::exit_restart) {
      auto self = st.shared_from_this();
      unsigned gen = s.generation;
      s.timer.expires_after(seconds(d.delay));
      s.timer.async_wait([this, self, &s, gen](const boost::system::error_code& ec) {
        if (ec || s.generation != gen || s.state != State::backoff) return;
        ++s.restarts;
        ++s.streak;
        spawn_service(*self, s);
      });
    }
    changed(st, s);
  }

  // ---- stop -------------------------------------------------------------------------------

  void try_stop(StackState& st, Svc& s) {
    if (!s.want_down) return;
    if (s.state == State::pending || s.state == State::backoff) {
      s.timer.cancel();
      end_budget(s);
      apply(st, s, Event::stop_requested);
      s.want_down = false;
      return changed(st, s);
    }
    if (!(s.state == State::starting || s.state == State::ready || s.state == State::unhealthy)) {
      if (s.state != State::stopping) s.want_down = false;
      return;
    }
    // Dependents first: wait while any dependent that is being stopped still runs.
    for (auto d : st.graph.dependents(s.index)) {
      const Svc& dep = *st.services[d];
      if (dep.want_down && (is_running(dep.state) || dep.state == State::pending)) return;
    }
    ++s.check_gen;
    end_budget(s);
    s.check_timer.cancel();
    apply(st, s, Event::stop_requested);
    signal_group(s, s.spec.stop_signal, true);
    changed(st, s);
  }

  std::vector<std::size_t> indices(StackState& st, const std::vector<std::string>& names) {
    std::vector<std::size_t> out;
    if (names.empty()) {
      for (std::size_t i = 0; i < st.services.size(); ++i) out.push_back(i);
      return out;
    }
    for (const auto& n : names) out.push_back(st.at(n).index);
    return out;
  }

  static bool is_down(const Svc& s) {
    return !s.want_down && (s.state == State::stopped || s.state == State::exited || s.state == State::failed ||
                            (s.state == State::pending && !s.want_up));
  }

  void request_start(StackState& st, const std::vector<std::string>& names,
                     const std::shared_ptr<Pending<Outcome>>& result) {
    if (st.closed) throw Error(fmt::format("stack '{}' is closed", st.spec.name));
    auto mask = st.graph.with_dependencies(indices(st, names));
    std::vector<std::size_t> targets;
    for (std::size_t i = 0; i < mask.size(); ++i)
      if (mask[i]) targets.push_back(i);
    // Every port first, so that {{other.port.x}} resolves whatever the spawn order.
    for (auto i : targets) ensure_ports(*st.services[i]);
    for (auto i : targets) {
      Svc& s = *st.services[i];
      s.want_down = false;
      if (is_settled(s.state)) {
        s.spawned_once = false;
        s.streak = 0;
        s.budget = false;
        apply(st, s, Event::reset);
        s.reason.clear();
      }
      if (s.state == State::pending) s.want_up = true;
      if (s.state == State::stopping) s.want_up = true;  // restarts once the stop is done
    }
    auto w = std::make_shared<Waiter>();
    w->result = result;
    w->bad = [](const Svc& s) -> std::optional<Outcome> {
      if (s.state == State::failed) return Outcome{false, s.spec.name, s.reason};
      if (s.state == State::exited && s.exit_code != 0)
        return Outcome{false, s.spec.name, fmt::format("exited with code {}", s.exit_code.value_or(-1))};
      if (s.state == State::stopped && !s.want_up)
        return Outcome{false, s.spec.name, "stopped while the stack was starting"};
      return std::nullopt;
    };
    w->good = [](const Svc& s) {
      return s.state == State::ready || s.state == State::unhealthy || (s.state == State::exited && s.exit_code == 0);
    };
    add_waiter(st, w, targets);
    for (auto i : targets) try_start(st, *st.services[i]);
  }

  void request_stop(StackState& st, const std::vector<std::string>& names,
                    const std::shared_ptr<Pending<Outcome>>& result) {
    auto targets = indices(st, names);
    for (auto i : targets) {
      Svc& s = *st.services[i];
      s.want_up = false;
      if (!is_settled(s.state)) s.want_down = true;
    }
    auto w = std::make_shared<Waiter>();
    w->result = result;
    w->good = [](const Svc& s) { return is_down(s); };
    // Once they are all down, whatever escaped their process groups goes too: one /proc
    // scan per stop request, before the caller hears that the stop is done.
    auto self = st.shared_from_this();
    w->on_success = [this, self, targets] { kill_escapees(*self, targets); };
    add_waiter(st, w, targets);
    for (auto i : targets) try_stop(st, *st.services[i]);
  }

  // Processes that escaped their service's group (double fork + setsid) still carry the
  // stack's marker in their environment: find them, say so in the service's log, kill them.
  // Through a pidfd, re-checked, so a pid recycled meanwhile is never signalled.
  // `only`: service indices to clean up after (empty: all).
  void kill_escapees(StackState& st, const std::vector<std::size_t>& only = {}) {
    const std::string marker = "CORRAL_STACK=" + st.id;
    for (const auto& m : find_marked(marker)) {
      auto it = st.index.find(m.service);
      if (!only.empty() && (it == st.index.end() || std::find(only.begin(), only.end(), it->second) == only.end()))
        continue;
      int fd = static_cast<int>(::syscall(SYS_pidfd_open, m.pid, 0));
      if (fd < 0) continue;
      Fd pidfd(fd);
      if (!has_marker(m.pid, marker)) continue;  // the pid we hold may have been recycled
      ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
      if (it != st.index.end())
        record_line(st, *st.services[it->second], Stream::err,
                    fmt::format("corral: killed pid {} ({}), which had escaped the service's process group",
                                m.pid, m.command));
    }
  }

  void finish_close(StackState& st) {
    st.closed = true;
    if (watcher) watcher->unwatch_stack(st.id);
    for (auto& s : st.services) {
      s->leases.clear();
      s->notify.reset();
      boost::system::error_code ignored;
      s->timer.cancel();
      s->deadline.cancel();
      s->check_timer.cancel();
    }
    if (!st.tmpdir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(st.tmpdir, ec);
      st.tmpdir.clear();
    }
    for (auto& w : st.waiters)
      if (!w->lapsed()) w->finish(Outcome{false, "", "the stack was closed"});
    st.waiters.clear();
    for (auto& s : st.services) s->waiters.clear();
    std::erase_if(stacks, [&](const auto& p) { return p.get() == &st; });
    {
      std::lock_guard lock(st.ev_mutex);
      st.subscribed = false;
    }
    st.ev_cv.notify_all();
  }

  // Last resort (interpreter exit, engine teardown): SIGKILL every group and reap.
  void kill_all() noexcept {
    for (auto& st : stacks)
      for (auto& s : st->services)
        if (s->pid > 0) {
          ::kill(-s->pid, SIGKILL);
          siginfo_t info{};
          ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s->pidfd->native_handle()), &info, WEXITED);
          if (watcher) watcher->unwatch(s->pid);
          s->pid = 0;
        }
  }
};

// ---- Engine ---------------------------------------------------------------------------------

Engine::Engine() : impl_(std::make_unique<Impl>()) {}

std::shared_ptr<Engine> Engine::create(const std::string& watcher_program) {
  std::shared_ptr<Engine> e(new Engine());
  auto& impl = *e->impl_;
  raise_fd_limit();
  // The engine thread takes no asynchronous signals: they belong to the host program
  // (Python handles them on its main thread), and none should interrupt our syscalls.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_BLOCK, &all, &old);
  std::promise<void> started;
  auto ready = started.get_future();
  impl.thread = std::thread([&impl, &started, &watcher_program] {
    impl.thread_id = std::this_thread::get_id();
    // The watcher is forked from this thread, like every service.
    impl.watcher = std::make_unique<DeathWatcher>(impl.io, watcher_program);
    started.set_value();
    impl.io.run();
  });
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ready.wait();
  return e;
}

void Engine::shutdown() noexcept {
  auto& impl = *impl_;
  if (!impl.alive.exchange(false)) return;
  if (impl.thread.joinable()) {
    asio::post(impl.io, [&impl] {
      impl.kill_all();
      for (auto& st : std::vector(impl.stacks)) {
        impl.kill_escapees(*st);
        impl.finish_close(*st);
      }
      impl.watcher.reset();
      impl.work.reset();
      impl.io.stop();
    });
    if (std::this_thread::get_id() == impl.thread_id)
      impl.thread.detach();
    else
      impl.thread.join();
  }
}

void Engine::abandon_after_fork() noexcept {
  impl_->alive = false;
  if (impl_->watcher) impl_->watcher->abandon();
  // Never destroy this engine here: its thread object names a thread of the parent
  // (destroying a joinable std::thread terminates), and its io_context still owns the
  // handlers of inherited stacks. One deliberate leak per fork.
  new std::shared_ptr<Engine>(shared_from_this());
}

Engine::~Engine() {
  // An engine abandoned after fork has no thread here: leave it be.
  if (impl_->alive) shutdown();
}

std::unique_ptr<Stack> Engine::create_stack(StackSpec spec) {
  validate_stack(spec);
  Graph graph(spec.services);
  auto st = std::make_shared<StackState>(std::move(spec), std::move(graph));
  return impl_->call([this, st]() {
    auto& impl = *impl_;
    st->id = fmt::format("{}-{}-{}", st->spec.name.empty() ? "stack" : st->spec.name, ::getpid(), ++impl.next_stack);
    if (impl.watcher) impl.watcher->watch_stack(st->id);
    for (std::size_t i = 0; i < st->spec.services.size(); ++i) {
      st->services.push_back(std::make_unique<Svc>(impl.io, st->spec.services[i], i));
      st->index.emplace(st->spec.services[i].name, i);
    }
    impl.stacks.push_back(st);
    return std::unique_ptr<Stack>(new Stack(shared_from_this(), st));
  });
}

// ---- Stack ----------------------------------------------------------------------------------

Stack::Stack(std::shared_ptr<Engine> engine, std::shared_ptr<StackState> state)
    : engine_(std::move(engine)), state_(std::move(state)) {}

Stack::~Stack() {
  if (!engine_->impl().alive) return;
  try {
    close()->wait_for(-1);
  } catch (...) {
    // The engine went away underneath us; its shutdown killed everything.
  }
}

const std::string& Stack::name() const noexcept { return state_->spec.name; }

std::vector<std::string> Stack::service_names() const {
  std::vector<std::string> out;
  for (const auto& s : state_->spec.services) out.push_back(s.name);
  return out;
}

std::vector<std::vector<std::string>> Stack::levels() const {
  std::vector<std::vector<std::string>> out;
  for (const auto& level : state_->graph.levels()) {
    out.emplace_back();
    for (auto i : level) out.back().push_back(state_->spec.services[i].name);
  }
  return out;
}

std::vector<Dependency> Stack::dependencies(const std::string& name) const {
  for (const auto& s : state_->spec.services)
    if (s.name == name) return s.depends_on;
  throw Error(fmt::format("stack '{}' has no service '{}'", state_->spec.name, name));
}

std::shared_ptr<Pending<Outcome>> Stack::start(const std::vector<std::string>& names) {
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] { engine_->impl().request_start(*state_, names, result); });
  return result;
}

std::shared_ptr<Pending<Outcome>> Stack::stop(const std::vector<std::string>& names) {
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] { engine_->impl().request_stop(*state_, names, result); });
  return result;
}

std::shared_ptr<Pending<Outcome>> Stack::wait_state(const std::string& name, State state) {
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] {
    auto& st = *state_;
    Svc& s = st.at(name);
    auto w = std::make_shared<Waiter>();
    w->result = result;
    w->good = [state](const Svc& x) { return x.state == state; };
    w->bad = [state](const Svc& x) -> std::optional<Outcome> {
      if (x.state != state && is_settled(x.state) && !x.want_up)
        return Outcome{false, x.spec.name,
                       fmt::format("is {}{}{}", to_string(x.state), x.reason.empty() ? "" : ": ", x.reason)};
      return std::nullopt;
    };
    engine_->impl().add_waiter(st, w, {s.index});
  });
  return result;
}

std::shared_ptr<Pending<Outcome>> Stack::wait_log(const std::string& name, const std::string& regex,
                                                  std::uint64_t from_seq) {
  std::regex re;
  try {
    re = std::regex(regex, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw ConfigError(fmt::format("'{}' is not a valid regex: {}", regex, e.what()));
  }
  auto result = std::make_shared<Pending<Outcome>>();
  engine_->impl().call([&] {
    Svc& s = state_->at(name);
    for (const auto& line : s.logs.lines())
      if (line.seq >= from_seq && std::regex_search(line.text, re)) {
        result->set(Outcome{true, name, line.text});
        return;
      }
    s.log_waiters.push_back({std::move(re), from_seq, result});
  });
  return result;
}

namespace {
ServiceStatus status_of(const Svc& s) {
  ServiceStatus r;
  r.name = s.spec.name;
  r.state = s.state;
  r.pid = s.pid;
  r.restarts = s.restarts;
  r.exit_code = s.exit_code;
  r.ports = s.ports;
  r.reason = s.reason;
  r.started_at = s.started_wall;
  r.ready_at = s.ready_wall;
  r.log_lines = s.logs.next_seq();
  r.log_dropped = s.logs.dropped();
  return r;
}
}  // namespace

std::vector<ServiceStatus> Stack::status() {
  return engine_->impl().call([&] {
    std::vector<ServiceStatus> out;
    out.reserve(state_->services.size());
    for (const auto& s : state_->services) out.push_back(status_of(*s));
    return out;
  });
}

ServiceStatus Stack::status(const std::string& name) {
  return engine_->impl().call([&] { return status_of(state_->at(name)); });
}

std::vector<LogLine> Stack::logs(const std::string& name, long tail) {
  return engine_->impl().call([&] { return state_->at(name).logs.tail(tail); });
}

bool Stack::signal(const std::string& name, int sig) {
  return engine_->impl().call([&] {
    Svc& s = state_->at(name);
    if (s.pid <= 0 || !s.pidfd) return false;
    // Through the pidfd: never a bare pid that might have been recycled.
    return ::syscall(SYS_pidfd_send_signal, s.pidfd->native_handle(), sig, nullptr, 0) == 0;
  });
}

std::vector<ProcessSample> Stack::sample() {
  auto groups = engine_->impl().call([&] {
    std::vector<std::pair<std::string, pid_t>> out;
    for (const auto& s : state_->services) out.emplace_back(s->spec.name, s->pid);
    return out;
  });
  return sample_groups(groups);
}

std::vector<EngineEvent> Stack::events(double timeout, std::size_t max) {
  auto& st = *state_;
  std::unique_lock lock(st.ev_mutex);
  if (!st.subscribed.exchange(true) && st.closed) return {};
  auto have = [&] { return !st.events.empty() || st.ev_dropped > 0 || st.closed; };
  if (timeout < 0)
    st.ev_cv.wait(lock, have);
  else
    st.ev_cv.wait_for(lock, std::chrono::duration<double>(timeout), have);
  std::vector<EngineEvent> out;
  if (st.ev_dropped > 0) {
    EngineEvent e;
    e.kind = EngineEvent::Kind::dropped;
    e.text = std::to_string(st.ev_dropped);
    e.time_ns = wall_ns();
    out.push_back(std::move(e));
    st.ev_dropped = 0;
  }
  while (!st.events.empty() && out.size() < max) {
    out.push_back(std::move(st.events.front()));
    st.events.pop_front();
  }
  return out;
}

std::shared_ptr<Pending<Outcome>> Stack::close() {
  auto stopped = std::make_shared<Pending<Outcome>>();
  auto done = std::make_shared<Pending<Outcome>>();
  auto st = state_;
  // Raw pointer on purpose: a handler that owned the Engine could end up destroying it on
  // its own thread. The Engine outlives this close because ~Stack waits for it.
  Engine::Impl* impl = &engine_->impl();
  impl->call([&] {
    if (st->closed) return done->set(Outcome{});
    impl->request_stop(*st, {}, stopped);
    // Once everything is down, close on a later turn of the loop (not from inside the
    // notification that noticed it); `done` is set only then. The waiter holds its own
    // result, so the close completes even if the caller stops waiting.
    auto w = std::make_shared<Waiter>();
    auto finished = std::make_shared<Pending<Outcome>>();
    w->result = finished;
    w->hold = finished;
    w->good = [](const Svc& s) { return Engine::Impl::is_down(s); };
    // Holding `stopped` keeps the stop request (and its clean-up of escapees) alive.
    w->on_success = [impl, st, done, stopped] {
      asio::post(impl->io, [impl, st, done] {
        impl->finish_close(*st);
        done->set(Outcome{});
      });
    };
    std::vector<std::size_t> all(st->services.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
    impl->add_waiter(*st, w, all);
  });
  return done;
}

}  // namespace corral
