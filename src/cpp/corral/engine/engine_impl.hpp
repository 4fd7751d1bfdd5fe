// The engine's inside, shared by its .cpp files and by nothing else. Everything here is
// touched only on the engine thread, except StackState::events (its own lock) and the
// atomics of Impl. The files, by what they do:
//   engine.cpp       the loop, cross-thread calls, engine lifecycle
//   stack.cpp        the public Stack handle: posts requests, reads state
//   requests.cpp     start/stop/close requests, waiters, dependency gating
//   actions.cpp      the service machine: dispatch() and the actions of its table
//   capture.cpp      pipes, log lines, the event stream
//   check_runner.cpp readiness and liveness checks, sd_notify
//   environment.cpp  ports, private directories, templates, the child's environment
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/datagram_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "corral/checks/pattern.hpp"
#include "corral/core/duration.hpp"
#include "corral/engine/chores.hpp"
#include "corral/engine/closer.hpp"
#include "corral/engine/engine.hpp"
#include "corral/engine/event_queue.hpp"
#include "corral/engine/watcher.hpp"
#include "corral/graph/graph.hpp"
#include "corral/logs/log_file.hpp"
#include "corral/metrics/procfs.hpp"
#include "corral/metrics/stack_metrics.hpp"
#include "corral/metrics/tree_sampler.hpp"
#include "corral/resources/ports.hpp"
#include "corral/resources/registry.hpp"
#include "corral/supervise/machine.hpp"
#include "corral/supervise/restart.hpp"
#include "corral/template/template.hpp"

namespace corral {
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using Descriptor = asio::posix::stream_descriptor;

std::int64_t wall_ns();
double wall_seconds();

struct LogWaiter {
  Pattern re;
  std::uint64_t from = 0;
  std::weak_ptr<Pending<Outcome>> result;
};

struct Waiter;

// The one process a service may have. It is filled by the spawn action and emptied only
// when that process has been reaped, and a spawn never happens while it is full: so a
// service never has two processes, and a killed one is never left unreaped.
struct Slot {
  pid_t pid = 0;  // also its process group: the leader is unreaped while the slot is full
  std::unique_ptr<Descriptor> pidfd, out, err;
  LineSplitter out_split, err_split;
  bool full() const noexcept { return pid > 0; }
};

// The live side of one service. Owned by its StackState; handlers capture the stack's
// shared_ptr and compare a generation so that a callback of an earlier run is ignored.
// The pid clock with corral's own spawns beside it (sweep.cpp): what opens a sweep window.
std::optional<procfs::PidClock> sweep_clock();

struct Svc {
  Svc(asio::io_context& io, ServiceSpec s, std::size_t i)
      : spec(std::move(s)), index(i), timer(io), deadline(io), check_timer(io), claim_timer(io),
        logs(spec.log_lines, spec.log_bytes) {}

  ServiceSpec spec;
  std::size_t index;
  State state = State::pending;
  Slot proc;
  std::unique_ptr<LogFile> log_file;  // [logs] dir: the lines on disk too
  pid_t last_pid = 0;  // of the last run, whose group may still have members dying
  // Where pid allocation stood before this service's first spawn since its last sweep:
  // whatever it left behind was created after that (see procfs::PidClock).
  std::optional<procfs::PidClock> sweep_since;
  // Spawns so far, counted before each clone: a sweep on the chores thread that sees it move
  // knows a new run exists, whose processes it must not take for the old run's escapees.
  std::atomic<unsigned> spawns{0};
  bool unswept = false;  // it ran since its last stop or close sweep

  // What the requests want. A start sets want_up until the service is running (or can
  // no longer get there); a stop sets want_down until it is down. `intent_gen` moves when
  // a request reverses the last one (start after stop or stop after start), so a request
  // that was overtaken completes as superseded instead of waiting forever.
  bool want_up = false;
  bool want_down = false;
  bool intent_up = false;
  unsigned intent_gen = 0;

  unsigned generation = 0;  // bumped on every spawn
  unsigned check_gen = 0;   // bumped whenever running checks must be forgotten

  int restarts = 0;  // shown to users
  int streak = 0;    // consecutive restarts, drives the backoff; reset by a stable run
  int health_failures = 0;
  int ready_attempts = 0;    // failed readiness attempts of this run
  bool health_kill = false;  // this run was stopped because its liveness check failed
  std::optional<int> exit_code;
  bool ever_ready = false;    // this run became ready
  bool spawned_once = false;  // spawned since the last start request
  double restart_delay = 0;   // of the pending restart (set with exit_restart)
  std::string reason;
  bool reason_is_deadline = false;  // `reason` only says when the readiness deadline is
  std::string last_check;  // what the last failed readiness attempt said
  Clock::time_point spawned_at{};
  Clock::time_point check_started{};  // of the probe attempt in flight, for its duration
  const char* restart_cause = "exit";  // of the next restart: "exit" or "health"
  double started_wall = 0, ready_wall = 0;

  asio::steady_timer timer;     // backoff, or the SIGKILL after stop_timeout
  asio::steady_timer deadline;  // readiness deadline (the start budget)
  // The start budget: from the first spawn of a start until ready, across crashes and
  // restarts, so that a crash loop before readiness still ends at `start_timeout`.
  bool budget = false;
  Clock::time_point budget_end{};
  unsigned deadline_gen = 0;
  asio::steady_timer check_timer;  // next check attempt

  std::vector<PortLease> leases;
  // A port of this service was held by someone else when its last run ended (a listener
  // that escaped the group): readiness must then check who listens.
  bool ports_contested = false;
  std::map<std::string, int> ports;
  std::string port_error;  // a pinned port could not be had: the spawn fails with this
  // Resource claims (resources/registry.hpp): made before the first spawn of a start, kept
  // across restarts and backoff, released when the service settles with an empty slot.
  std::vector<Claim> claims;
  std::map<std::string, std::vector<std::string>> resources;  // name -> values, in claim order
  bool claims_held = false;
  bool claiming = false;     // a claim job (check commands) runs on claim_jobs
  unsigned claim_gen = 0;    // bumped when claims are dropped: a late job's result is ignored
  asio::steady_timer claim_timer;  // next try of a `wait` claim on an exhausted pool
  // listen=[...]: bound, listening sockets handed to every run as fds 3.. (LISTEN_FDS).
  std::vector<Fd> listen_fds;
  LogRing logs;
  std::optional<Pattern> ready_regex;
  std::vector<LogWaiter> log_waiters;
  std::vector<std::shared_ptr<Waiter>> waiters;  // those watching this service
  std::string tmpdir;
  std::string notify_path;
  std::unique_ptr<asio::local::datagram_protocol::socket> notify;
};

// A blocking request (start, stop, wait_state, close) waiting on a set of services. It is
// told only about changes of the services it watches and keeps a count of those in a good
// state, so each event costs O(1) however large the stack: no rescans, no polling.
struct Waiter {
  std::function<bool(const Svc&)> good;                   // this target is where we want it
  std::function<std::optional<Outcome>(const Svc&)> bad;  // this target makes it fail
  // How the outcome reaches the caller; the default sets `result`. A stop delivers only
  // after its sweep for escaped processes (off the engine thread).
  std::function<void(Outcome)> deliver;
  // start (true) or stop (false) request: it is superseded when a target's intent turns.
  std::optional<bool> up;
  std::vector<char> is_good;         // by service index
  std::vector<unsigned> intent_at;   // by service index, for requests
  std::size_t targets = 0, good_count = 0;
  // Weak: a caller that gave up waiting (timeout) lets its waiter lapse.
  std::weak_ptr<Pending<Outcome>> result;
  std::shared_ptr<Pending<Outcome>> hold;  // set for waiters nobody else keeps (close)
  bool done = false;

  bool lapsed() const { return done || (!hold && result.expired()); }
  void finish(Outcome o);
  // Re-judges one target; finishes the waiter when that settles it.
  void update(const Svc& s);
};

struct StackState : std::enable_shared_from_this<StackState> {
  StackState(StackSpec s, Graph g)
      : spec(std::move(s)), graph(std::move(g)), metrics(std::make_shared<StackMetrics>(names(spec))) {}
  static std::vector<std::string> names(const StackSpec& spec) {
    std::vector<std::string> out;
    for (const auto& s : spec.services) out.push_back(s.name);
    return out;
  }
  StackSpec spec;
  Graph graph;
  std::string id;
  std::vector<std::unique_ptr<Svc>> services;
  std::unordered_map<std::string, std::size_t> index;
  std::vector<std::shared_ptr<Waiter>> waiters;  // every live waiter, to fail them on close
  std::string tmpdir;
  // spec.base_env as "KEY=value" entries, sorted by key, without what must not leak into
  // services (environment.cpp): made at the first spawn, shared by every spawn after it.
  std::vector<std::string> inherited_env;
  bool inherited_env_made = false;
  bool closing = false;
  std::vector<std::shared_ptr<Pending<Outcome>>> close_results;  // set once it is closed
  std::atomic<bool> closed{false};
  EventQueue events;
  // What status() returns, published by the engine whenever a service changes (changed()),
  // so that a status() from another thread never waits for the engine thread: under a crash
  // loop that thread's queue holds a spawn per service, and a posted call waited behind
  // them all (p99 ~120 ms). The log counters, which change with every line, are atomics.
  mutable std::mutex status_mutex;
  std::vector<ServiceStatus> status_snapshot;
  std::vector<std::unique_ptr<std::atomic<std::uint64_t>[]>> log_counters;  // lines, dropped
  // Pipes not re-armed while a lossless reader is behind: (service, stream, generation).
  std::vector<std::tuple<std::size_t, Stream, unsigned>> paused_reads;

  // Counters, sample rings and the history buffer (metrics/stack_metrics.hpp): shared with
  // the sampler thread and readable from any thread.
  std::shared_ptr<StackMetrics> metrics;
  std::shared_ptr<SamplerState> sampler = std::make_shared<SamplerState>();
  double metrics_interval = 0;  // seconds; 0: no timer, samples only on demand
  std::atomic<bool> metrics_pss{false};
  std::unique_ptr<asio::steady_timer> metrics_timer;

  Svc& at(const std::string& name);
};

struct Engine::Impl {
  // Hint 1: one thread runs it. Not an UNSAFE hint: the closer, sampler and chores threads
  // post to it and close descriptors registered with its reactor, which needs its locks.
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  std::thread thread;
  std::thread::id thread_id;
  std::unique_ptr<DeathWatcher> watcher;
  std::vector<std::shared_ptr<StackState>> stacks;
  std::mt19937_64 rng{std::random_device{}()};
  std::array<char, 65536> read_buf{};
  bool draining = false;  // inside drain(): log files are flushed once per read, not per line
  int sweeps_in_flight = 0;  // escapee sweeps posted to the chores thread, not yet back
  std::atomic<bool> alive{true};
  unsigned long next_stack = 0;
  Chores claim_jobs;  // allocations that run check commands (blocking, off the thread)
  // Reads /proc for the metrics ticks of every stack, so the engine thread never does.
  Chores sampler;
  Closer closer{io};  // spent pipes and pidfds (only the engine thread hands them over)
  Chores chores;  // declared last: joined first, while everything it posts to still exists

  // Runs `f` on the engine thread and returns its result (or rethrows its exception).
  template <class F>
  auto call(F f) -> decltype(f());

  // requests.cpp
  void publish_status(StackState& st, const Svc& s);
  void add_waiter(StackState& st, const std::shared_ptr<Waiter>& w, const std::vector<std::size_t>& targets);
  void notify_waiters(Svc& s);
  void changed(StackState& st, Svc& s);
  static bool satisfied(const Svc& d, Condition c);
  static std::optional<std::string> hopeless(const Svc& d, Condition c);
  static bool is_down(const Svc& s);
  void try_start(StackState& st, Svc& s);
  void try_stop(StackState& st, Svc& s);
  std::vector<std::size_t> indices(StackState& st, const std::vector<std::string>& names);
  void set_intent(Svc& s, bool up);
  void request_start(StackState& st, const std::vector<std::string>& names,
                     const std::shared_ptr<Pending<Outcome>>& result);
  void request_stop(StackState& st, const std::vector<std::string>& names,
                    const std::shared_ptr<Pending<Outcome>>& result, std::shared_ptr<Pending<Outcome>> hold = {});
  void request_close(const std::shared_ptr<StackState>& st, const std::shared_ptr<Pending<Outcome>>& done);
  void sweep_escapees(const std::shared_ptr<StackState>& st, std::vector<std::size_t> only, std::function<void()> then);
  void sweep_run(StackState& st, Svc& s, procfs::PidClock since, procfs::PidClock upto);
  void post_sweep_lines(const std::shared_ptr<StackState>& st, std::vector<std::pair<std::string, std::string>> lines,
                        std::function<void()> then);
  void finish_close(const std::shared_ptr<StackState>& st);
  void kill_all() noexcept;

  // actions.cpp
  bool dispatch(StackState& st, Svc& s, Event ev, std::string why = {}, std::string detail = {});
  void run_action(StackState& st, Svc& s, Action a, const std::string& detail);
  void act_spawn(StackState& st, Svc& s);
  void act_became_ready(StackState& st, Svc& s);
  void signal_group(Svc& s, int sig);
  void arm_kill_timer(StackState& st, Svc& s);
  void schedule_restart(StackState& st, Svc& s);
  void end_budget(Svc& s);
  void settle(Svc& s);
  void stop_checks(Svc& s);
  void arm_exit(StackState& st, Svc& s);
  void on_exit(StackState& st, Svc& s);
  Event classify_exit(Svc& s, const ExitInfo& exit, std::string& why);

  // capture.cpp
  void publish_state(StackState& st, Svc& s, std::string detail);
  // `now`: when the bytes were read; every line of one read() shares it (a clock read per
  // line was an eighth of the capture's cost on a VM whose clock is not in the vDSO); 0 = now.
  void record_line(StackState& st, Svc& s, Stream stream, std::string_view text, std::int64_t now = 0);
  void flush_log_file(StackState& st, Svc& s);
  void arm_read(StackState& st, Svc& s, Stream which);
  bool drain(StackState& st, Svc& s, Stream which, int rounds);
  void resume_reads(StackState& st);
  void close_pipes(StackState& st, Svc& s);

  // check_runner.cpp
  void open_notify(StackState& st, Svc& s);
  void arm_notify(StackState& st, Svc& s);
  void on_notify(StackState& st, Svc& s);
  int check_port(const Svc& s, const CheckSpec& c);
  void begin_checks(StackState& st, Svc& s, bool readiness);
  void arm_deadline(StackState& st, Svc& s);
  void schedule_attempt(StackState& st, Svc& s, bool readiness, unsigned gen, double delay);
  void attempt(StackState& st, Svc& s, bool readiness, unsigned gen);
  void on_probe(StackState& st, Svc& s, bool readiness, unsigned gen, bool ok, std::string detail);
  void on_deadline(StackState& st, Svc& s);

  // resources.cpp
  bool claim_resources(StackState& st, Svc& s);
  void on_claims(StackState& st, Svc& s, std::vector<std::pair<std::string, AllocationResult>> got, bool waits);
  void release_claims(Svc& s);
  std::string open_listeners(Svc& s);
  bool is_listen_port(const Svc& s, std::size_t lease) const;
  // metrics_tick.cpp
  std::vector<SampleTarget> sample_targets(StackState& st);
  void arm_metrics(const std::shared_ptr<StackState>& st);

  // environment.cpp
  void ensure_ports(Svc& s);
  std::string ensure_stack_tmpdir(StackState& st);
  std::string ensure_tmpdir(StackState& st, Svc& s);
  TemplateResolver resolver(StackState& st, Svc& s);
  std::vector<std::string> build_env(StackState& st, Svc& s, const TemplateResolver& resolve);
};

template <class F>
auto Engine::Impl::call(F f) -> decltype(f()) {
  if (!alive) throw Error("the corral engine is not running");
  if (std::this_thread::get_id() == thread_id) return f();
  std::packaged_task<decltype(f())()> task(std::move(f));
  auto fut = task.get_future();
  asio::post(io, [&task] { task(); });
  return fut.get();
}

// The command as a shell would need it typed, for --verbose.
std::string shell_join(const std::vector<std::string>& argv);

}  // namespace corral
