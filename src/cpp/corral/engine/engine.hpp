// The engine: one Boost.Asio io_context on one long-lived thread that owns every process,
// pipe, timer and state. Other threads never touch that state; they post commands and wait
// on Pending results. This header keeps Asio out so the bindings compile quickly.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "corral/core/types.hpp"
#include "corral/engine/event_queue.hpp"
#include "corral/engine/pending.hpp"
#include "corral/logs/log_buffer.hpp"
#include "corral/metrics/stack_metrics.hpp"

namespace corral {

struct ServiceStatus {
  std::string name;
  State state = State::pending;
  pid_t pid = 0;                 // 0 when not running
  int restarts = 0;
  std::optional<int> exit_code;  // last exit: code, or -N when killed by signal N
  std::map<std::string, int> ports;
  std::map<std::string, std::vector<std::string>> resources;  // claimed values by resource name
  std::string reason;            // why it failed, when it did
  double started_at = 0;         // wall clock (seconds since the epoch) of the last spawn
  double ready_at = 0;           // wall clock of the last readiness
  std::uint64_t log_lines = 0;   // lines captured so far
  std::uint64_t log_dropped = 0; // lines that fell out of the ring
};

// What a blocking request ended with.
// Every request completes: with its result, as superseded by a later request that
// reversed it (a start overtaken by a stop fails, a stop overtaken by a start succeeds),
// or with the stack closed.
struct Outcome {
  bool ok = true;
  std::string service;  // the service that made it fail
  std::string message;  // why; for wait_for_log, the matching line
  bool superseded = false;
};

struct ProcessSample {
  std::string service;
  pid_t pid = 0;
  int processes = 0;        // processes in the service's process group
  double cpu_seconds = 0;   // user + system, whole group
  std::uint64_t rss_bytes = 0;
  int open_fds = 0;
  int threads = 0;
};

class Engine;
struct StackState;

// A handle on a stack inside the engine. Thread-safe. Destroying it starts closing the
// stack without waiting (every service is stopped, then its resources are released);
// call close() and wait on its result to know when nothing is left running.
class Stack {
 public:
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  const std::string& name() const noexcept;
  std::vector<std::string> service_names() const;
  // Start order by level (level 0 first).
  std::vector<std::vector<std::string>> levels() const;
  // The dependencies of `name`, with their conditions.
  std::vector<Dependency> dependencies(const std::string& name) const;

  // Starts `names` (all when empty) and what they depend on. The result is set once every
  // one of them is ready (or has completed), or as soon as one of them fails.
  std::shared_ptr<Pending<Outcome>> start(const std::vector<std::string>& names);
  // Stops `names` (all when empty), dependents before their dependencies.
  std::shared_ptr<Pending<Outcome>> stop(const std::vector<std::string>& names);
  // Set when `name` is in `state`; fails when it settles in another state first.
  std::shared_ptr<Pending<Outcome>> wait_state(const std::string& name, State state);
  // Set when a log line of `name` with seq >= `from_seq` matches `regex`.
  std::shared_ptr<Pending<Outcome>> wait_log(const std::string& name, const std::string& regex,
                                             std::uint64_t from_seq);

  std::vector<ServiceStatus> status();
  ServiceStatus status(const std::string& name);
  std::vector<LogLine> logs(const std::string& name, long tail);
  // Signals the service's main process through its pidfd. False when it is not running.
  bool signal(const std::string& name, int sig);
  std::vector<ProcessSample> sample();

  // Metrics of each service's whole process tree (metrics/, engine/metrics_tick.cpp).
  // Samples every `interval` seconds on the engine's sampler thread; 0 turns the timer off
  // (then metrics_now() reads on the caller's thread). `pss` adds the proportional set
  // size (smaps_rollup, ~180 us per process).
  void configure_metrics(double interval, bool pss);
  // The latest sample of each service that was sampled; reads /proc now when the interval is 0.
  std::vector<MetricSample> metrics_now();
  // Raw samples of `service` (all when empty) taken at or after `since` (wall clock), oldest first.
  std::vector<MetricSample> samples(const std::string& service, double since);
  // The Prometheus text exposition; callable from any thread (the control server's too).
  std::string prometheus();
  std::shared_ptr<StackMetrics> metrics() const;
  // A restart requested by the user (stop then start), counted as reason="manual".
  void note_manual_restart(const std::string& name);
  // History records (state changes, spawns, readiness, exits, check results) are buffered
  // from now on, at most `capacity`, for a writer to drain.
  void enable_history(std::size_t capacity);
  std::vector<HistoryRecord> drain_history(std::uint64_t* lost = nullptr);

  // The event stream for CLIs and notebooks: log lines and state changes, oldest first.
  // Enabled by subscribe() or by the first events() call (lossy). Bounded by bytes: a
  // lossy reader that falls behind loses the oldest log lines (counted in a `dropped`
  // event, never a state event); a lossless one slows the services down instead (see
  // EventQueue). Waits up to `timeout` seconds for at least one event.
  void subscribe(bool lossless);
  std::vector<EngineEvent> events(double timeout, std::size_t max = 4096);
  // The same, as one chunk (texts in one buffer), for readers that convert in bulk.
  EventChunk take_events(double timeout, std::size_t max);

  // A listener sees every event from now on, on the engine thread, beside the event
  // stream above (it takes nothing from events()). It must only copy the event and hand it
  // off: never block, never add or remove a listener. After remove_listener returns it is
  // not running and will not run again. For the control server's feeds.
  std::uint64_t add_listener(std::function<void(const EngineEvent&)> f);
  void remove_listener(std::uint64_t id);

  // Stops everything and releases the stack's ports and private directories.
  std::shared_ptr<Pending<Outcome>> close();

 private:
  friend class Engine;
  Stack(std::shared_ptr<Engine> engine, std::shared_ptr<StackState> state);
  std::shared_ptr<Engine> engine_;
  std::shared_ptr<StackState> state_;
};

class Engine : public std::enable_shared_from_this<Engine> {
 public:
  // Starts the engine thread. `watcher_program`: path of the corral-watch binary (see
  // DeathWatcher); empty or missing means the watcher is a fork of this process.
  static std::shared_ptr<Engine> create(const std::string& watcher_program = {});
  ~Engine();

  // Validates the spec (ConfigError naming the service and key) and registers the stack.
  // Nothing runs until Stack::start.
  std::unique_ptr<Stack> create_stack(StackSpec spec);

  // Kills every process of every stack at once (SIGKILL to each group) and stops the
  // thread. For interpreter exit and after fork; normal code closes its stacks instead.
  void shutdown() noexcept;

  // In a child forked from the owner (without exec): the engine thread does not exist
  // here. Drop this process's copy of the watcher socket and never touch the engine again.
  void abandon_after_fork() noexcept;

  struct Impl;
  Impl& impl() noexcept { return *impl_; }

 private:
  Engine();
  std::unique_ptr<Impl> impl_;
};

// Checks a spec without an engine: graph, templates, values. Throws ConfigError.
void validate_stack(const StackSpec& spec);

}  // namespace corral
