// The engine and stack handles. Every call that waits releases the GIL (safely at interpreter
// exit, see edge.hpp), and waits in short slices so that Ctrl+C (a Python signal handler on
// the main thread) interrupts it. Every string that can carry service output is decoded
// with U+FFFD for invalid bytes.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <optional>

#include "bindings.hpp"
#include "edge.hpp"
#include "event_conversion.hpp"
#include "corral/engine/engine.hpp"
#include "corral/metrics/proc_sample.hpp"

namespace py = pybind11;

namespace corral::bindings {
namespace {

// (ok, service, message); the message may quote a log line, so it is decoded.
using OutcomeTuple = std::tuple<bool, std::string, py::str>;
using Clock = std::chrono::steady_clock;
constexpr double slice_seconds = 0.05;

// The deadline of a wait of `timeout` seconds (past already when it is negative); none when
// it is None, infinite, or so long (over 30 years) that the clock would overflow.
std::optional<Clock::time_point> deadline_after(std::optional<double> timeout) {
  if (!timeout || std::isnan(*timeout) || *timeout > 1e9) return std::nullopt;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*timeout));
}

// Only the main thread runs Python's signal handlers, so only there does a wait need to
// come back every `slice_seconds` to let a Ctrl+C through; any other thread waits in one
// piece and costs no wake-ups while it is idle (a `corral up` reader, a start thread, an
// async twin's worker).
bool on_main_thread() {
  static PyObject* main_ident = [] {
    py::object threading = py::module_::import("threading");
    return py::object(threading.attr("main_thread")().attr("ident")).release().ptr();
  }();
  return PyLong_AsUnsignedLong(main_ident) == PyThread_get_thread_ident();
}

// The next slice to wait: at most `slice_seconds` on the main thread, never past the
// deadline; -1 (forever) when there is neither a deadline nor a reason to come back.
double next_slice(const std::optional<Clock::time_point>& deadline, bool sliced) {
  if (!deadline) return sliced ? slice_seconds : -1;
  double left = std::chrono::duration<double>(*deadline - Clock::now()).count();
  return std::max(0.0, sliced ? std::min(slice_seconds, left) : left);
}

// Waits for `p`; None when `timeout` (seconds, None = forever) ran out first.
std::optional<OutcomeTuple> wait_outcome(const std::shared_ptr<Pending<Outcome>>& p, std::optional<double> timeout) {
  auto deadline = deadline_after(timeout);
  const bool sliced = on_main_thread();
  while (true) {
    double slice = next_slice(deadline, sliced);
    if (without_gil([&] { return p->wait_for(slice); })) {
      const auto& o = p->get();
      return OutcomeTuple{o.ok, o.service, text(o.message)};
    }
    // The deadline first: a zero timeout (posting a close from a finalizer or a signal
    // handler) must not run, and there swallow, a pending Ctrl+C.
    if (deadline && Clock::now() >= *deadline) return std::nullopt;
    if (sliced && PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
}

struct PendingStart {
  std::shared_ptr<Pending<Outcome>> outcome;
};

// Posts a request (GIL released) and waits for its outcome.
template <class F>
std::optional<OutcomeTuple> request(F&& post, std::optional<double> timeout) {
  auto p = without_gil(std::forward<F>(post));
  return wait_outcome(p, timeout);
}

// events(timeout) in slices on the main thread, so that Ctrl+C interrupts it. The engine
// returns early with nothing only when the stack is closed: then nothing more will come,
// and waiting on would spin.
EventChunk wait_events(Stack& s, double timeout, std::size_t max) {
  auto deadline = timeout < 0 ? std::nullopt : deadline_after(timeout);  // < 0: forever
  const bool sliced = on_main_thread();
  while (true) {
    double slice = next_slice(deadline, sliced);
    auto began = Clock::now();
    auto events = without_gil([&] { return s.take_events(slice, max); });
    if (!events.empty() || slice == 0) return events;
    if (slice < 0) return events;  // a wait without end came back empty: closed
    if (std::chrono::duration<double>(Clock::now() - began).count() < slice) return events;
    if (sliced && PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (deadline && Clock::now() >= *deadline) return events;
  }
}

// Destroying a native stack waits until it is closed; never with the GIL held, which would
// freeze every Python thread for a stop_timeout.
struct ReleasingDelete {
  void operator()(Stack* s) const {
    if (Py_IsInitialized() && PyGILState_Check()) {
      without_gil([s] { delete s; });
    } else {
      delete s;
    }
  }
};
using StackHolder = std::unique_ptr<Stack, ReleasingDelete>;

py::dict status_dict(const ServiceStatus& s) {
  py::dict d;
  d["name"] = s.name;
  d["state"] = std::string(to_string(s.state));
  d["pid"] = s.pid > 0 ? py::object(py::int_(s.pid)) : py::object(py::none());
  d["restarts"] = s.restarts;
  d["exit_code"] = s.exit_code ? py::object(py::int_(*s.exit_code)) : py::object(py::none());
  d["ports"] = s.ports;
  d["resources"] = s.resources;
  d["reason"] = text(s.reason);
  d["started_at"] = s.started_at > 0 ? py::object(py::float_(s.started_at)) : py::object(py::none());
  d["ready_at"] = s.ready_at > 0 ? py::object(py::float_(s.ready_at)) : py::object(py::none());
  d["log_lines"] = s.log_lines;
  d["log_dropped"] = s.log_dropped;
  return d;
}

const char* stream_name(Stream s) { return s == Stream::out ? "stdout" : "stderr"; }

}  // namespace

void register_engine(py::module_& m) {
  py::class_<PendingStart>(m, "PendingStart")
      .def(
          "wait", [](const PendingStart& p, std::optional<double> timeout) { return wait_outcome(p.outcome, timeout); },
          py::arg("timeout") = py::none());

  // The last corral atexit handler to run (registered before _engine's): from then on a
  // thread that finishes a wait parks instead of meeting a finalizing interpreter.
  py::module_::import("atexit").attr("register")(py::cpp_function([] { begin_exit(); }));

  py::class_<Stack, StackHolder>(m, "Stack")
      .def_property_readonly("name", &Stack::name)
      .def("service_names", &Stack::service_names)
      .def("levels", &Stack::levels)
      .def("dependencies",
           [](const Stack& s, const std::string& name) {
             std::vector<std::pair<std::string, std::string>> out;
             for (const auto& d : s.dependencies(name)) out.emplace_back(d.name, std::string(to_string(d.condition)));
             return out;
           })
      .def(
          "start",
          [](Stack& s, const std::vector<std::string>& names, std::optional<double> timeout) {
            return request([&] { return s.start(names); }, timeout);
          },
          py::arg("names"), py::arg("timeout") = py::none())
      // A start that runs while the caller does something else (the first start serves the
      // control API meanwhile); its wait() returns what start() would.
      .def("begin_start",
           [](Stack& s, const std::vector<std::string>& names) {
             return PendingStart{without_gil([&] { return s.start(names); })};
           })
      .def(
          "stop",
          [](Stack& s, const std::vector<std::string>& names, std::optional<double> timeout) {
            return request([&] { return s.stop(names); }, timeout);
          },
          py::arg("names"), py::arg("timeout") = py::none())
      .def(
          "wait_state",
          [](Stack& s, const std::string& name, const std::string& state, std::optional<double> timeout) {
            auto st = state_from_string(state);
            if (!st) throw ConfigError("unknown state '" + state + "'");
            return request([&] { return s.wait_state(name, *st); }, timeout);
          },
          py::arg("name"), py::arg("state"), py::arg("timeout") = py::none())
      .def(
          "wait_log",
          [](Stack& s, const std::string& name, const std::string& regex, std::uint64_t from_seq,
             std::optional<double> timeout) {
            return request([&] { return s.wait_log(name, regex, from_seq); }, timeout);
          },
          py::arg("name"), py::arg("regex"), py::arg("from_seq") = 0, py::arg("timeout") = py::none())
      .def("status",
           [](Stack& s) {
             // Keeps the GIL: the copy takes microseconds under a lock the engine holds
             // only for a move, and giving the GIL away would make the caller queue for it
             // behind every other Python thread (up to a 5 ms switch interval each).
             auto rows = s.status();
             py::list out;
             for (const auto& r : rows) out.append(status_dict(r));
             return out;
           })
      .def("service_status",
           [](Stack& s, const std::string& name) {
             auto r = s.status(name);  // keeps the GIL, as status() does
             return status_dict(r);
           })
      .def(
          "logs",
          [](Stack& s, const std::string& name, long tail) {
            auto lines = without_gil([&] { return s.logs(name, tail); });
            py::list out;
            for (const auto& l : lines)
              out.append(py::make_tuple(static_cast<double>(l.time_ns) / 1e9, stream_name(l.stream), text(l.text), l.seq));
            return out;
          },
          py::arg("name"), py::arg("tail") = -1)
      .def("signal",
           [](Stack& s, const std::string& name, int sig) { return without_gil([&] { return s.signal(name, sig); }); })
      // The first subscriber decides: lossy (a reader that falls behind loses the oldest log
      // lines) or lossless (the engine stops reading the services' pipes instead).
      .def("subscribe", [](Stack& s, bool lossless) { s.subscribe(lossless); }, py::arg("lossless") = false)
      .def(
          "events",
          [](Stack& s, double timeout, std::size_t max) {
            auto events = wait_events(s, timeout, max);
            return event_list(events);
          },
          py::arg("timeout") = 0.0, py::arg("max") = 4096)
      .def(
          "event_columns",
          [](Stack& s, double timeout, std::size_t max) {
            auto events = wait_events(s, timeout, max);
            return event_columns(events);
          },
          py::arg("timeout") = 0.0, py::arg("max") = 1u << 20)
      .def("sample",
           [](Stack& s) {
             auto samples = without_gil([&] { return s.sample(); });
             py::list out;
             for (const auto& x : samples) {
               py::dict d;
               d["name"] = x.service;
               d["pid"] = x.pid > 0 ? py::object(py::int_(x.pid)) : py::object(py::none());
               d["processes"] = x.processes;
               d["cpu_seconds"] = x.cpu_seconds;
               d["rss_bytes"] = x.rss_bytes;
               d["open_fds"] = x.open_fds;
               d["threads"] = x.threads;
               out.append(std::move(d));
             }
             return out;
           })
      .def("prometheus",
           [](Stack& s) { return without_gil([&] { return s.prometheus(); }); })
      .def(
          "close",
          [](Stack& s, std::optional<double> timeout) {
            return request([&] { return s.close(); }, timeout);
          },
          py::arg("timeout") = py::none());

  py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine")
      .def(py::init([](const std::string& watcher) { return Engine::create(watcher); }),
           py::arg("watcher") = std::string())
      .def(
          "create_stack",
          [](Engine& e, StackSpec spec) {
            return StackHolder(without_gil([&] { return e.create_stack(std::move(spec)); }).release());
          })
      .def("shutdown", [](Engine& e) { without_gil([&] { e.shutdown(); }); })
      .def("abandon_after_fork", &Engine::abandon_after_fork);
}

}  // namespace corral::bindings
