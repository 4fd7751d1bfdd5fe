// Metrics, counters and the history buffer of a stack, added to the Stack class that
// bind_engine.cpp defines. Plain reads: each copies out under the metrics' own lock (GIL
// released) and builds Python objects afterwards.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "edge.hpp"
#include "corral/engine/engine.hpp"

namespace py = pybind11;

namespace corral::bindings {
namespace {

py::dict sample_dict(const MetricSample& m, const std::vector<std::string>& names) {
  py::dict d;
  d["time"] = m.time;
  d["service"] = names[m.service];
  d["pid"] = m.pid;
  d["cpu_seconds"] = m.cpu_user + m.cpu_system;
  d["cpu_user_seconds"] = m.cpu_user;
  d["cpu_system_seconds"] = m.cpu_system;
  d["cpu_percent"] = m.cpu_percent;
  d["rss_bytes"] = m.rss_bytes;
  d["pss_bytes"] = m.pss_bytes;
  d["processes"] = m.processes;
  d["threads"] = m.threads;
  d["open_fds"] = m.open_fds;
  d["read_bytes"] = m.read_bytes;
  d["write_bytes"] = m.write_bytes;
  return d;
}

py::list sample_list(const std::vector<MetricSample>& samples, const std::vector<std::string>& names) {
  py::list out;
  for (const auto& m : samples) out.append(sample_dict(m, names));
  return out;
}

py::dict histogram_dict(const Histogram& h) {
  py::dict d;
  d["bounds"] = h.bounds;
  d["counts"] = h.counts;
  d["sum"] = h.sum;
  d["count"] = h.count;
  return d;
}

py::dict check_dict(const CheckCounters& c) {
  py::dict d;
  d["kind"] = c.kind;
  d["failures"] = c.failures;
  d["duration"] = histogram_dict(c.duration);
  return d;
}

template <class F, class... Extra>
void method(py::object& cls, const char* name, F&& f, const char* doc, Extra&&... extra) {
  cls.attr(name) = py::cpp_function(std::forward<F>(f), py::name(name), py::is_method(cls),
                                    py::sibling(py::getattr(cls, name, py::none())), doc,
                                    std::forward<Extra>(extra)...);
}

}  // namespace

void register_metrics(py::module_& m) {
  py::object cls = m.attr("Stack");
  method(cls, "configure_metrics",
         [](Stack& s, double interval, bool pss) { without_gil([&] { s.configure_metrics(interval, pss); }); },
         "Samples every `interval` seconds (0: off); `pss` adds PSS.", py::arg("interval"), py::arg("pss") = false);
  method(cls, "metrics_now",
         [](Stack& s) {
           auto latest = without_gil([&] { return s.metrics_now(); });
           return sample_list(latest, s.metrics()->names());
         },
         "The latest sample of each sampled service (read now when the interval is 0).");
  method(cls, "samples",
         [](Stack& s, const std::string& service, double since) {
           auto samples = without_gil([&] { return s.samples(service, since); });
           return sample_list(samples, s.metrics()->names());
         },
         "Raw samples since `since` (wall clock), oldest first.", py::arg("service") = std::string(),
         py::arg("since") = 0.0);
  method(cls, "counters",
         [](Stack& s) {
           auto metrics = s.metrics();
           auto counters = without_gil([&] { return metrics->counters(); });
           py::list out;
           for (std::size_t i = 0; i < counters.size(); ++i) {
             const auto& c = counters[i];
             py::dict d;
             d["service"] = metrics->names()[i];
             d["starts"] = c.starts;
             py::dict restarts;
             for (int r = 0; r < restart_reason_count; ++r)
               restarts[to_string(static_cast<RestartReason>(r))] = c.restarts[r];
             d["restarts"] = restarts;
             d["exit_codes"] = c.exit_codes;
             d["exit_signals"] = c.exit_signals;
             d["ready_seconds"] = c.last_ready_seconds >= 0 ? py::object(py::float_(c.last_ready_seconds)) : py::none();
             d["ready"] = histogram_dict(c.ready);
             d["ready_check"] = check_dict(c.ready_check);
             d["restart_times"] = std::vector<double>(c.restart_times.begin(), c.restart_times.end());
             d["recent_checks"] = c.recent_checks;
             d["recent_check_failures"] = __builtin_popcount(c.recent_failures & (c.recent_checks >= 32 ? ~0u : (1u << c.recent_checks) - 1));
             d["health_check"] = check_dict(c.health_check);
             auto logs = metrics->log_counts(i);
             d["log_lines"] = py::dict(py::arg("stdout") = logs[0], py::arg("stderr") = logs[1]);
             d["log_bytes"] = py::dict(py::arg("stdout") = logs[2], py::arg("stderr") = logs[3]);
             out.append(std::move(d));
           }
           return out;
         },
         "Counters and histograms per service.");
  method(cls, "sampler_cost",
         [](Stack& s) {
           auto c = s.metrics()->tick_cost();
           return py::make_tuple(c.ticks, c.cpu_seconds, c.processes);
         },
         "(ticks, cpu seconds, processes read) of the sampler for this stack.");
  method(cls, "note_manual_restart", [](Stack& s, const std::string& name) { s.note_manual_restart(name); },
         "Counts a user-requested restart.", py::arg("name"));
  method(cls, "enable_history", [](Stack& s, std::size_t capacity) { s.enable_history(capacity); },
         "Buffers history records from now on, at most `capacity`.", py::arg("capacity"));
  method(cls, "drain_history",
         [](Stack& s) {
           std::uint64_t lost = 0;
           auto records = without_gil([&] { return s.drain_history(&lost); });
           const auto& names = s.metrics()->names();
           py::list out;
           for (const auto& r : records)
             out.append(py::make_tuple(to_string(r.kind), r.time, names[r.service], r.state, text(r.reason), r.pid,
                                       r.code, r.signal, r.seconds));
           return py::make_tuple(out, lost);
         },
         "(records, lost): (kind, time, service, state, reason, pid, code, signal, seconds) tuples.");
}

}  // namespace corral::bindings
