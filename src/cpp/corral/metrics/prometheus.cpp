#include "corral/metrics/prometheus.hpp"

#include <fmt/format.h>

#include <cmath>

namespace corral {

std::string escape_label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

namespace {

// Numbers as Go's strconv would print them: shortest round-trip, +Inf / NaN spelled out.
std::string num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

class Writer {
 public:
  explicit Writer(const MetricsView& v) : view_(v), stack_(escape_label(v.stack)) {
    for (const auto& s : v.status) services_.push_back(escape_label(s.name));
  }

  void family(const char* name, const char* type, const char* help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  // One sample of service `i`; `extra` holds further labels, already formatted ("a=\"b\"").
  void sample(const char* name, std::size_t i, const std::string& extra, double v) {
    out_ += fmt::format("{}{{stack=\"{}\",service=\"{}\"{}{}}} {}\n", name, stack_, services_[i],
                        extra.empty() ? "" : ",", extra, num(v));
  }
  void histogram(const char* name, std::size_t i, const std::string& extra, const Histogram& h) {
    std::uint64_t cumulative = 0;
    std::string bucket = fmt::format("{}_bucket", name);
    std::string sep = extra.empty() ? "" : extra + ",";
    for (std::size_t b = 0; b < h.bounds.size(); ++b) {
      cumulative += h.counts[b];
      sample(bucket.c_str(), i, fmt::format("{}le=\"{}\"", sep, num(h.bounds[b])), static_cast<double>(cumulative));
    }
    sample(bucket.c_str(), i, fmt::format("{}le=\"+Inf\"", sep), static_cast<double>(h.count));
    sample(fmt::format("{}_sum", name).c_str(), i, extra, h.sum);
    sample(fmt::format("{}_count", name).c_str(), i, extra, static_cast<double>(h.count));
  }
  std::size_t size() const { return services_.size(); }
  std::string take() { return std::move(out_); }
  const MetricsView& view() const { return view_; }

 private:
  const MetricsView& view_;
  std::string stack_;
  std::vector<std::string> services_;
  std::string out_;
};

constexpr const char* state_names[] = {"pending", "starting", "ready",  "unhealthy", "stopping",
                                       "stopped", "exited",   "backoff", "failed"};

}  // namespace

std::string prometheus_text(const MetricsView& v) {
  Writer w(v);
  const std::size_t n = w.size();
  auto each = [&](auto&& f) {
    for (std::size_t i = 0; i < n; ++i) f(i);
  };
  auto sampled = [&](std::size_t i) -> const MetricSample* {
    return i < v.latest.size() && v.latest[i] ? &*v.latest[i] : nullptr;
  };
  auto running = [&](std::size_t i) { return v.status[i].pid > 0; };

  w.family("corral_service_up", "gauge", "1 when the service runs and is ready (or unhealthy), else 0.");
  each([&](std::size_t i) {
    auto s = v.status[i].state;
    w.sample("corral_service_up", i, "", s == State::ready || s == State::unhealthy ? 1 : 0);
  });
  w.family("corral_service_state", "gauge", "1 for the service's current state, 0 for the others.");
  each([&](std::size_t i) {
    for (int k = 0; k < state_count; ++k)
      w.sample("corral_service_state", i, fmt::format("state=\"{}\"", state_names[k]),
               static_cast<int>(v.status[i].state) == k ? 1 : 0);
  });
  w.family("corral_service_start_time_seconds", "gauge", "Start of the current run, seconds since the epoch (0 when not running).");
  each([&](std::size_t i) { w.sample("corral_service_start_time_seconds", i, "", running(i) ? v.status[i].started_at : 0); });
  w.family("corral_service_starts_total", "counter", "Processes started for the service (first starts and restarts).");
  each([&](std::size_t i) { w.sample("corral_service_starts_total", i, "", static_cast<double>(v.counters[i].starts)); });
  w.family("corral_service_restarts_total", "counter", "Restarts of the service, by reason (exit, health, manual, dependency).");
  each([&](std::size_t i) {
    for (int r = 0; r < restart_reason_count; ++r)
      w.sample("corral_service_restarts_total", i,
               fmt::format("reason=\"{}\"", to_string(static_cast<RestartReason>(r))),
               static_cast<double>(v.counters[i].restarts[r]));
  });
  w.family("corral_service_exits_total", "counter", "Exits of the service's main process by exit code.");
  each([&](std::size_t i) {
    for (const auto& [code, count] : v.counters[i].exit_codes)
      w.sample("corral_service_exits_total", i, fmt::format("code=\"{}\"", code), static_cast<double>(count));
  });
  w.family("corral_service_signal_exits_total", "counter", "Exits of the service's main process by the signal that killed it.");
  each([&](std::size_t i) {
    for (const auto& [sig, count] : v.counters[i].exit_signals)
      w.sample("corral_service_signal_exits_total", i, fmt::format("signal=\"{}\"", sig), static_cast<double>(count));
  });
  w.family("corral_service_ready_duration_seconds", "histogram", "Time from spawn to ready, per run.");
  each([&](std::size_t i) { w.histogram("corral_service_ready_duration_seconds", i, "", v.counters[i].ready); });
  w.family("corral_check_duration_seconds", "histogram", "Duration of readiness and liveness probe attempts.");
  each([&](std::size_t i) {
    for (const auto* c : {&v.counters[i].ready_check, &v.counters[i].health_check}) {
      if (c->kind.empty()) continue;  // never attempted
      const char* check = c == &v.counters[i].ready_check ? "ready" : "health";
      w.histogram("corral_check_duration_seconds", i, fmt::format("check=\"{}\",kind=\"{}\"", check, c->kind), c->duration);
    }
  });
  w.family("corral_check_failures_total", "counter", "Failed probe attempts.");
  each([&](std::size_t i) {
    for (const auto* c : {&v.counters[i].ready_check, &v.counters[i].health_check}) {
      if (c->kind.empty()) continue;
      const char* check = c == &v.counters[i].ready_check ? "ready" : "health";
      w.sample("corral_check_failures_total", i, fmt::format("check=\"{}\",kind=\"{}\"", check, c->kind),
               static_cast<double>(c->failures));
    }
  });
  w.family("corral_log_lines_total", "counter", "Log lines captured from the service, by stream.");
  each([&](std::size_t i) {
    w.sample("corral_log_lines_total", i, "stream=\"stdout\"", static_cast<double>(v.logs[i][0]));
    w.sample("corral_log_lines_total", i, "stream=\"stderr\"", static_cast<double>(v.logs[i][1]));
  });
  w.family("corral_log_bytes_total", "counter", "Bytes of log lines captured from the service, by stream (without newlines).");
  each([&](std::size_t i) {
    w.sample("corral_log_bytes_total", i, "stream=\"stdout\"", static_cast<double>(v.logs[i][2]));
    w.sample("corral_log_bytes_total", i, "stream=\"stderr\"", static_cast<double>(v.logs[i][3]));
  });
  w.family("corral_log_dropped_lines_total", "counter",
           "Lines lost between the service's pipes and its log ring. Pipes are drained continuously, so this stays 0.");
  each([&](std::size_t i) { w.sample("corral_log_dropped_lines_total", i, "", 0); });
  w.family("corral_log_evicted_lines_total", "counter", "Lines that fell out of the bounded in-memory log ring (still in log files).");
  each([&](std::size_t i) { w.sample("corral_log_evicted_lines_total", i, "", static_cast<double>(v.status[i].log_dropped)); });

  // Resource use, from the last sample of each service that was ever sampled.
  w.family("corral_service_cpu_seconds_total", "counter", "CPU time of the service's process tree, all runs, by mode.");
  each([&](std::size_t i) {
    if (auto* s = sampled(i)) {
      w.sample("corral_service_cpu_seconds_total", i, "mode=\"user\"", s->cpu_user);
      w.sample("corral_service_cpu_seconds_total", i, "mode=\"system\"", s->cpu_system);
    }
  });
  w.family("corral_service_memory_bytes", "gauge", "Memory of the service's process tree (rss; pss when enabled).");
  each([&](std::size_t i) {
    if (auto* s = sampled(i)) {
      w.sample("corral_service_memory_bytes", i, "memtype=\"rss\"", running(i) ? static_cast<double>(s->rss_bytes) : 0);
      if (v.pss) w.sample("corral_service_memory_bytes", i, "memtype=\"pss\"", running(i) ? static_cast<double>(s->pss_bytes) : 0);
    }
  });
  w.family("corral_service_processes", "gauge", "Processes in the service's tree.");
  each([&](std::size_t i) {
    if (auto* s = sampled(i)) w.sample("corral_service_processes", i, "", running(i) ? s->processes : 0);
  });
  w.family("corral_service_threads", "gauge", "Threads in the service's tree.");
  each([&](std::size_t i) {
    if (auto* s = sampled(i)) w.sample("corral_service_threads", i, "", running(i) ? s->threads : 0);
  });
  w.family("corral_service_open_fds", "gauge", "Open file descriptors in the service's tree.");
  each([&](std::size_t i) {
    if (auto* s = sampled(i)) w.sample("corral_service_open_fds", i, "", running(i) ? s->open_fds : 0);
  });
  w.family("corral_service_io_bytes_total", "counter", "Bytes read and written by the service's tree through system calls, all runs.");
  each([&](std::size_t i) {
    if (auto* s = sampled(i)) {
      w.sample("corral_service_io_bytes_total", i, "direction=\"read\"", static_cast<double>(s->read_bytes));
      w.sample("corral_service_io_bytes_total", i, "direction=\"write\"", static_cast<double>(s->write_bytes));
    }
  });

  // The sampler's own cost, per stack (no service label).
  std::string stack = escape_label(v.stack);
  std::string out = w.take();
  out += "# HELP corral_metrics_sample_ticks_total Sampling ticks run for the stack.\n"
         "# TYPE corral_metrics_sample_ticks_total counter\n";
  out += fmt::format("corral_metrics_sample_ticks_total{{stack=\"{}\"}} {}\n", stack, v.cost.ticks);
  out += "# HELP corral_metrics_sample_cpu_seconds_total CPU time the sampler spent reading /proc for the stack.\n"
         "# TYPE corral_metrics_sample_cpu_seconds_total counter\n";
  out += fmt::format("corral_metrics_sample_cpu_seconds_total{{stack=\"{}\"}} {}\n", stack, num(v.cost.cpu_seconds));
  return out;
}

}  // namespace corral
