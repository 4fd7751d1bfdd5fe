#include "corral/metrics/stack_metrics.hpp"

#include <algorithm>
#include <chrono>

namespace corral {

double wall_now() noexcept {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void Histogram::observe(double v) {
  // First bucket whose bound is >= v; the last one is +Inf.
  auto i = static_cast<std::size_t>(std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin());
  ++counts[i];
  sum += v;
  ++count;
}

std::vector<double> ready_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

std::vector<double> check_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

const char* to_string(RestartReason r) noexcept {
  switch (r) {
    case RestartReason::exit: return "exit";
    case RestartReason::health: return "health";
    case RestartReason::manual: return "manual";
    case RestartReason::dependency: return "dependency";
  }
  return "?";
}

const char* to_string(HistoryRecord::Kind k) noexcept {
  switch (k) {
    case HistoryRecord::Kind::state: return "state";
    case HistoryRecord::Kind::spawn: return "spawn";
    case HistoryRecord::Kind::ready: return "ready";
    case HistoryRecord::Kind::exit: return "exit";
    case HistoryRecord::Kind::check: return "check";
  }
  return "?";
}

StackMetrics::StackMetrics(std::vector<std::string> services)
    : names_(std::move(services)),
      counters_(names_.size()),
      log_(new std::atomic<std::uint64_t>[names_.size() * 4]),
      series_(names_.size()),
      ring_capacity_(std::clamp<std::size_t>(200000 / std::max<std::size_t>(1, names_.size()), 60, 3600)) {
  for (std::size_t i = 0; i < names_.size() * 4; ++i) log_[i].store(0, std::memory_order_relaxed);
}

void StackMetrics::push_history(HistoryRecord r) {
  if (!history_) return;
  if (history_buf_.size() >= history_capacity_) {
    history_buf_.pop_front();
    ++history_lost_;
  }
  history_buf_.push_back(std::move(r));
}

void StackMetrics::on_spawn(std::size_t svc, pid_t pid, const char* restart_reason) {
  std::lock_guard lock(mutex_);
  auto& c = counters_[svc];
  ++c.starts;
  if (restart_reason) {
    if (c.restart_times.size() >= 32) c.restart_times.pop_front();
    c.restart_times.push_back(wall_now());
  }
  if (restart_reason)
    for (int r = 0; r < restart_reason_count; ++r)
      if (std::string_view(restart_reason) == to_string(static_cast<RestartReason>(r))) ++c.restarts[r];
  if (history_) {
    HistoryRecord h;
    h.kind = HistoryRecord::Kind::spawn;
    h.time = wall_now();
    h.service = svc;
    h.pid = pid;
    h.reason = restart_reason ? restart_reason : "start";
    push_history(std::move(h));
  }
}

void StackMetrics::on_manual_restart(std::size_t svc) {
  std::lock_guard lock(mutex_);
  ++counters_[svc].restarts[static_cast<int>(RestartReason::manual)];
}

void StackMetrics::on_ready(std::size_t svc, double seconds) {
  std::lock_guard lock(mutex_);
  counters_[svc].ready.observe(seconds);
  counters_[svc].last_ready_seconds = seconds;
  if (history_) {
    HistoryRecord h;
    h.kind = HistoryRecord::Kind::ready;
    h.time = wall_now();
    h.service = svc;
    h.seconds = seconds;
    push_history(std::move(h));
  }
}

void StackMetrics::on_exit(std::size_t svc, pid_t pid, bool signaled, int code_or_signal, double run_seconds) {
  std::lock_guard lock(mutex_);
  auto& c = counters_[svc];
  ++(signaled ? c.exit_signals : c.exit_codes)[code_or_signal];
  if (history_) {
    HistoryRecord h;
    h.kind = HistoryRecord::Kind::exit;
    h.time = wall_now();
    h.service = svc;
    h.pid = pid;
    (signaled ? h.signal : h.code) = code_or_signal;
    h.seconds = run_seconds;
    push_history(std::move(h));
  }
}

void StackMetrics::on_state(std::size_t svc, const char* state, const std::string& reason) {
  if (!history_) return;  // read without the lock: set once, before the first start
  std::lock_guard lock(mutex_);
  HistoryRecord h;
  h.kind = HistoryRecord::Kind::state;
  h.time = wall_now();
  h.service = svc;
  h.state = state;
  h.reason = reason;
  push_history(std::move(h));
}

void StackMetrics::on_check(std::size_t svc, bool readiness, const char* kind, double seconds, bool ok) {
  std::lock_guard lock(mutex_);
  auto& c = readiness ? counters_[svc].ready_check : counters_[svc].health_check;
  if (c.kind.empty()) c.kind = kind;
  c.duration.observe(seconds);
  if (!ok) ++c.failures;
  if (!readiness) {
    auto& s = counters_[svc];
    s.recent_failures = (s.recent_failures << 1) | (ok ? 0u : 1u);
    s.recent_checks = std::min(s.recent_checks + 1, 32);
  }
  // Only changes of a check's result go to history: a healthy check every 100 ms would
  // otherwise write a row per attempt.
  if (history_) {
    HistoryRecord h;
    h.kind = HistoryRecord::Kind::check;
    h.time = wall_now();
    h.service = svc;
    h.state = readiness ? "ready" : "health";
    h.code = ok ? 1 : 0;
    h.seconds = seconds;
    push_history(std::move(h));
  }
}

void StackMetrics::add_readings(const std::vector<TreeReading>& readings, double wall, double mono) {
  std::lock_guard lock(mutex_);
  for (const auto& r : readings) {
    auto& s = series_[r.service];
    bool same_run = s.pid == r.leader && s.last_mono > 0;
    if (s.pid != r.leader) {
      // A new run: its counters start from zero.
      s.pid = r.leader;
      s.run_user = s.run_system = 0;
      s.run_read = s.run_write = 0;
    }
    // A member reaped by init takes its CPU time and I/O with it, and the tree's sum
    // drops: the cumulative values only ever grow, by what grew since the last reading.
    double du = std::max(0.0, r.user - s.run_user), ds = std::max(0.0, r.system - s.run_system);
    s.user += du;
    s.system += ds;
    s.read += r.read > s.run_read ? r.read - s.run_read : 0;
    s.write += r.write > s.run_write ? r.write - s.run_write : 0;
    MetricSample m;
    m.time = wall;
    m.service = r.service;
    m.pid = r.leader;
    m.cpu_user = s.user;
    m.cpu_system = s.system;
    m.cpu_percent = same_run && mono > s.last_mono ? 100.0 * (du + ds) / (mono - s.last_mono) : 0.0;
    m.rss_bytes = r.rss;
    m.pss_bytes = r.pss;
    m.processes = r.processes;
    m.threads = r.threads;
    m.open_fds = r.fds;
    m.read_bytes = s.read;
    m.write_bytes = s.write;
    s.run_user = r.user;
    s.run_system = r.system;
    s.run_read = r.read;
    s.run_write = r.write;
    s.last_mono = mono;
    if (s.ring.size() >= ring_capacity_) s.ring.pop_front();
    s.ring.push_back(m);
  }
}

void StackMetrics::add_tick_cost(double cpu_seconds, std::size_t processes) {
  std::lock_guard lock(mutex_);
  ++cost_.ticks;
  cost_.cpu_seconds += cpu_seconds;
  cost_.processes += processes;
}

std::vector<MetricSample> StackMetrics::samples(std::optional<std::size_t> svc, double since_wall) const {
  std::lock_guard lock(mutex_);
  std::vector<MetricSample> out;
  for (std::size_t i = 0; i < series_.size(); ++i) {
    if (svc && *svc != i) continue;
    const auto& ring = series_[i].ring;
    auto from = std::lower_bound(ring.begin(), ring.end(), since_wall,
                                 [](const MetricSample& m, double t) { return m.time < t; });
    out.insert(out.end(), from, ring.end());
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.time < b.time; });
  return out;
}

std::vector<MetricSample> StackMetrics::latest() const {
  std::lock_guard lock(mutex_);
  std::vector<MetricSample> out;
  for (const auto& s : series_)
    if (!s.ring.empty()) out.push_back(s.ring.back());
  return out;
}

std::vector<ServiceCounters> StackMetrics::counters() const {
  std::lock_guard lock(mutex_);
  return counters_;
}

std::array<std::uint64_t, 4> StackMetrics::log_counts(std::size_t svc) const noexcept {
  std::array<std::uint64_t, 4> out{};
  for (int k = 0; k < 4; ++k) out[k] = log_[svc * 4 + k].load(std::memory_order_relaxed);
  return out;
}

StackMetrics::TickCost StackMetrics::tick_cost() const {
  std::lock_guard lock(mutex_);
  return cost_;
}

void StackMetrics::enable_history(std::size_t capacity) {
  std::lock_guard lock(mutex_);
  history_ = true;
  history_capacity_ = std::max<std::size_t>(capacity, 16);
}

std::vector<HistoryRecord> StackMetrics::drain_history(std::uint64_t* lost) {
  std::lock_guard lock(mutex_);
  std::vector<HistoryRecord> out(std::make_move_iterator(history_buf_.begin()),
                                 std::make_move_iterator(history_buf_.end()));
  history_buf_.clear();
  if (lost) *lost = history_lost_;
  return out;
}

}  // namespace corral
