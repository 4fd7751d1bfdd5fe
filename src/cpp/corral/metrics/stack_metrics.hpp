// Everything a stack measures about its services, kept off the engine's own state so that
// any thread can read it: counters and histograms (written by one-line hooks on the engine
// thread), rings of raw samples (written by the sampler thread), and the bounded buffer of
// history records that a history writer drains. One mutex guards it all; every hook holds
// it for a few hundred nanoseconds, and readers copy out what they need.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace corral {

// A Prometheus-style histogram: cumulative counts are computed when rendered.
struct Histogram {
  std::vector<double> bounds;  // upper bounds, ascending; +Inf is implicit
  std::vector<std::uint64_t> counts;  // per bucket (not cumulative), bounds.size() + 1
  double sum = 0;
  std::uint64_t count = 0;

  explicit Histogram(std::vector<double> b = {}) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double v);
};

// Default buckets, in seconds: readiness from 5 ms to 2 min, probes from 0.5 ms to 10 s.
std::vector<double> ready_buckets();
std::vector<double> check_buckets();

// Why a run began after the first one.
enum class RestartReason : std::uint8_t { exit, health, manual, dependency };
inline constexpr int restart_reason_count = 4;
const char* to_string(RestartReason r) noexcept;

struct CheckCounters {
  std::string kind;  // tcp, http, exec, log, notify
  Histogram duration{check_buckets()};
  std::uint64_t failures = 0;
};

struct ServiceCounters {
  std::uint64_t starts = 0;  // successful spawns
  std::array<std::uint64_t, restart_reason_count> restarts{};
  std::map<int, std::uint64_t> exit_codes;    // exits by code
  std::map<int, std::uint64_t> exit_signals;  // exits by signal
  Histogram ready{ready_buckets()};           // spawn to ready, seconds
  double last_ready_seconds = -1;             // of the last run that became ready
  CheckCounters ready_check, health_check;
  // For the health score: when the last restarts happened (wall clock, at most 32), and
  // the last 32 liveness attempts (bit set = failed; `recent_checks` how many there were).
  std::deque<double> restart_times;
  std::uint32_t recent_failures = 0;
  int recent_checks = 0;
};

// One raw sample of a service's whole process tree.
struct MetricSample {
  double time = 0;  // wall clock, seconds since the epoch
  std::size_t service = 0;
  pid_t pid = 0;  // leader of the run sampled (never exported as a label)
  double cpu_user = 0, cpu_system = 0;  // seconds, cumulative over every run of the service
  double cpu_percent = 0;  // of one core, since the previous sample of the same run
  std::uint64_t rss_bytes = 0, pss_bytes = 0;  // pss only when asked for
  int processes = 0, threads = 0, open_fds = 0;
  std::uint64_t read_bytes = 0, write_bytes = 0;  // cumulative over every run
};

// What the tree sampler read for one running service in one tick.
struct TreeReading {
  std::size_t service = 0;
  pid_t leader = 0;
  double user = 0, system = 0;  // this run's tree: live members plus the children they reaped
  std::uint64_t rss = 0, pss = 0;
  int processes = 0, threads = 0, fds = 0;
  std::uint64_t read = 0, write = 0;
};

// A record for the history store, appended where the event happens.
struct HistoryRecord {
  enum class Kind : std::uint8_t { state, spawn, ready, exit, check };
  Kind kind = Kind::state;
  double time = 0;  // wall clock
  std::size_t service = 0;
  std::string state;   // state: the new state; check: "ready" or "health"
  std::string reason;  // state: why (failures); spawn: restart reason or "start"
  pid_t pid = 0;
  int code = 0;    // exit: code (0 when signaled); check: 1 ok, 0 failed
  int signal = 0;  // exit: signal number, 0 when it exited
  double seconds = 0;  // ready: spawn to ready; exit: run time; check: duration
};
const char* to_string(HistoryRecord::Kind k) noexcept;

class StackMetrics {
 public:
  explicit StackMetrics(std::vector<std::string> services);

  const std::vector<std::string>& names() const noexcept { return names_; }

  // Engine-thread hooks.
  void on_spawn(std::size_t svc, pid_t pid, const char* restart_reason);  // nullptr: a first start
  void on_ready(std::size_t svc, double seconds);
  void on_exit(std::size_t svc, pid_t pid, bool signaled, int code_or_signal, double run_seconds);
  void on_state(std::size_t svc, const char* state, const std::string& reason);
  void on_check(std::size_t svc, bool readiness, const char* kind, double seconds, bool ok);
  void on_manual_restart(std::size_t svc);  // counted, and a restart for the health score
  // Log lines and bytes by stream: relaxed atomics, as record_line runs once per line.
  void on_log_line(std::size_t svc, int stream, std::size_t bytes) noexcept {
    auto* c = &log_[svc * 4];
    c[stream].fetch_add(1, std::memory_order_relaxed);
    c[2 + stream].fetch_add(bytes, std::memory_order_relaxed);
  }

  // Sampler-thread side: turns one tick's readings into samples (cumulative counters that
  // survive restarts and members that die, CPU % from the previous sample of the run).
  void add_readings(const std::vector<TreeReading>& readings, double wall, double mono);
  // The sampler's own cost, for corral_metrics_* and the benchmark.
  void add_tick_cost(double cpu_seconds, std::size_t processes);

  // Any thread.
  std::vector<MetricSample> samples(std::optional<std::size_t> svc, double since_wall) const;
  std::vector<MetricSample> latest() const;  // one per service that was ever sampled
  std::vector<ServiceCounters> counters() const;
  std::array<std::uint64_t, 4> log_counts(std::size_t svc) const noexcept;  // lines out/err, bytes out/err
  struct TickCost {
    std::uint64_t ticks = 0;
    double cpu_seconds = 0;
    std::uint64_t processes = 0;  // processes read, summed over ticks
  };
  TickCost tick_cost() const;

  // History: off until enabled, so a stack without history pays nothing. The buffer is
  // bounded; past `capacity` the oldest records go (and are counted).
  void enable_history(std::size_t capacity);
  std::vector<HistoryRecord> drain_history(std::uint64_t* lost = nullptr);

  // The ring's length per service: about 200k samples in all (~20 MB), at least 60 each,
  // at most an hour at 1 s.
  std::size_t ring_capacity() const noexcept { return ring_capacity_; }

 private:
  void push_history(HistoryRecord r);  // mutex held
  std::vector<std::string> names_;
  mutable std::mutex mutex_;
  std::vector<ServiceCounters> counters_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> log_;

  struct Series {
    pid_t pid = 0;
    double run_user = 0, run_system = 0;  // last reading of this run
    std::uint64_t run_read = 0, run_write = 0;
    double last_mono = 0;
    double user = 0, system = 0;  // cumulative
    std::uint64_t read = 0, write = 0;
    std::deque<MetricSample> ring;
  };
  std::vector<Series> series_;
  std::size_t ring_capacity_;
  TickCost cost_;

  std::atomic<bool> history_{false};  // on_state reads it without the lock
  std::size_t history_capacity_ = 0;
  std::deque<HistoryRecord> history_buf_;
  std::uint64_t history_lost_ = 0;
};

double wall_now() noexcept;

}  // namespace corral
