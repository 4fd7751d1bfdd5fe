// The Prometheus text exposition (format 0.0.4) of a stack: conventional names with base
// units (seconds, bytes), labels `stack` and `service` (never a pid: it would make a new
// series at every restart), label values escaped. A pure function of copied-out values, so
// any thread (the bindings, the control server) can render it.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "corral/engine/engine.hpp"
#include "corral/metrics/stack_metrics.hpp"

namespace corral {

struct MetricsView {
  std::string stack;
  std::vector<ServiceStatus> status;     // by service index
  std::vector<ServiceCounters> counters;  // by service index
  std::vector<std::optional<MetricSample>> latest;  // by service index; none when never sampled
  std::vector<std::array<std::uint64_t, 4>> logs;   // by service index: lines out/err, bytes out/err
  StackMetrics::TickCost cost;
  bool pss = false;
};

std::string prometheus_text(const MetricsView& view);

// A label value as the format wants it: backslash, double quote and newline escaped.
std::string escape_label(std::string_view v);

}  // namespace corral
