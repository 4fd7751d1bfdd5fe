// The spec structs as plain Python classes; corral.spec fills them from validated input.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "edge.hpp"
#include "corral/checks/pattern.hpp"
#include "corral/core/types.hpp"
#include "corral/engine/engine.hpp"
#include "corral/graph/graph.hpp"
#include "corral/resources/registry.hpp"

#include <chrono>

namespace py = pybind11;

namespace corral::bindings {

void register_specs(py::module_& m) {
  py::class_<CheckSpec>(m, "CheckSpec")
      .def(py::init<>())
      .def_property(
          "kind", [](const CheckSpec& c) { return std::string(to_string(c.kind)); },
          [](CheckSpec& c, const std::string& k) {
            static const std::pair<const char*, CheckSpec::Kind> kinds[] = {
                {"tcp", CheckSpec::Kind::tcp},   {"http", CheckSpec::Kind::http},
                {"log", CheckSpec::Kind::log},   {"exec", CheckSpec::Kind::exec},
                {"notify", CheckSpec::Kind::notify}};
            for (auto& [name, kind] : kinds)
              if (k == name) {
                c.kind = kind;
                return;
              }
            throw ConfigError("unknown check kind '" + k + "'");
          })
      .def_readwrite("port", &CheckSpec::port)
      .def_readwrite("path", &CheckSpec::path)
      .def_readwrite("status", &CheckSpec::status)
      .def_readwrite("pattern", &CheckSpec::pattern)
      .def_readwrite("command", &CheckSpec::command)
      .def_readwrite("interval", &CheckSpec::interval)
      .def_readwrite("timeout", &CheckSpec::timeout)
      .def_readwrite("start_timeout", &CheckSpec::start_timeout)
      .def_readwrite("retries", &CheckSpec::retries);

  py::class_<RestartSpec>(m, "RestartSpec")
      .def(py::init<>())
      .def_property(
          "policy", [](const RestartSpec& r) { return std::string(to_string(r.policy)); },
          [](RestartSpec& r, const std::string& p) {
            if (p == "no") r.policy = RestartSpec::Policy::no;
            else if (p == "on-failure") r.policy = RestartSpec::Policy::on_failure;
            else if (p == "always") r.policy = RestartSpec::Policy::always;
            else throw ConfigError("unknown restart policy '" + p + "'");
          })
      .def_readwrite("backoff", &RestartSpec::backoff)
      .def_readwrite("max_backoff", &RestartSpec::max_backoff)
      .def_readwrite("max_restarts", &RestartSpec::max_restarts)
      .def_readwrite("reset_after", &RestartSpec::reset_after)
      .def_readwrite("jitter", &RestartSpec::jitter);

  py::class_<ResourceTypeSpec>(m, "ResourceTypeSpec")
      .def(py::init<>())
      .def_readwrite("name", &ResourceTypeSpec::name)
      .def_property(
          "range",
          [](const ResourceTypeSpec& t) -> std::optional<std::pair<long, long>> {
            if (!t.has_range) return std::nullopt;
            return std::make_pair(t.range_lo, t.range_hi);
          },
          [](ResourceTypeSpec& t, std::optional<std::pair<long, long>> r) {
            t.has_range = r.has_value();
            if (r) std::tie(t.range_lo, t.range_hi) = *r;
          })
      .def_readwrite("values", &ResourceTypeSpec::values)
      .def_readwrite("check", &ResourceTypeSpec::check)
      .def_readwrite("env", &ResourceTypeSpec::env)
      .def_readwrite("timeout", &ResourceTypeSpec::timeout);

  py::class_<ResourceClaimSpec>(m, "ResourceClaimSpec")
      .def(py::init<>())
      .def_readwrite("name", &ResourceClaimSpec::name)
      .def_readwrite("count", &ResourceClaimSpec::count)
      .def_readwrite("values", &ResourceClaimSpec::values)
      .def_readwrite("wait", &ResourceClaimSpec::wait);

  py::class_<ServiceSpec>(m, "ServiceSpec")
      .def(py::init<>())
      .def_readwrite("name", &ServiceSpec::name)
      .def_readwrite("argv", &ServiceSpec::argv)
      .def_readwrite("env", &ServiceSpec::env)
      .def_readwrite("cwd", &ServiceSpec::cwd)
      .def_readwrite("ports", &ServiceSpec::ports)
      .def_readwrite("pinned_ports", &ServiceSpec::pinned_ports)
      .def_readwrite("listen", &ServiceSpec::listen)
      .def_readwrite("resources", &ServiceSpec::resources)
      .def_property(
          "depends_on",
          [](const ServiceSpec& s) {
            std::vector<std::pair<std::string, std::string>> out;
            for (const auto& d : s.depends_on) out.emplace_back(d.name, std::string(to_string(d.condition)));
            return out;
          },
          [](ServiceSpec& s, const std::vector<std::pair<std::string, std::string>>& deps) {
            s.depends_on.clear();
            for (const auto& [name, cond] : deps) {
              auto c = condition_from_string(cond);
              if (!c) throw ConfigError("service '" + s.name + "': depends_on: unknown condition '" + cond + "'");
              s.depends_on.push_back({name, *c});
            }
          })
      .def_readwrite("ready", &ServiceSpec::ready)
      .def_readwrite("health", &ServiceSpec::health)
      .def_readwrite("restart", &ServiceSpec::restart)
      .def_readwrite("stop_signal", &ServiceSpec::stop_signal)
      .def_readwrite("stop_timeout", &ServiceSpec::stop_timeout)
      .def_readwrite("log_lines", &ServiceSpec::log_lines)
      .def_readwrite("log_bytes", &ServiceSpec::log_bytes);

  py::class_<StackSpec>(m, "StackSpec")
      .def(py::init<>())
      .def_readwrite("name", &StackSpec::name)
      .def_readwrite("services", &StackSpec::services)
      .def_readwrite("base_env", &StackSpec::base_env)
      .def_readwrite("resource_types", &StackSpec::resource_types)
      .def_readwrite("log_dir", &StackSpec::log_dir)
      .def_readwrite("log_max_size", &StackSpec::log_max_size)
      .def_readwrite("log_keep", &StackSpec::log_keep);

  m.def(
      "claims",
      [] {
        // Reads a directory and /proc/locks: without the GIL.
        std::vector<ClaimRecord> rows = without_gil([] { return list_claims(); });
        py::list out;
        for (const auto& r : rows) {
          py::dict d;
          d["type"] = text(r.type);
          d["value"] = text(r.value);
          d["stack"] = text(r.stack);
          d["service"] = text(r.service);
          d["pid"] = r.pid;
          d["start_time"] = r.start_time;
          d["boot_id"] = r.boot_id;
          out.append(d);
        }
        return out;
      },
      "Every live resource claim on this machine (this user's runtime directory).");
  // For bench/claims.py: `count` claims of a range type [first, last], all held until the
  // end; returns the seconds each one took, so a cost that grows with the live claims shows.
  m.def(
      "_bench_claims",
      [](const std::string& type, long first, long last, int count) {
        return without_gil([&] {
          ResourceType t;
          t.name = type;
          t.kind = ResourceType::Kind::range;
          t.lo = first;
          t.hi = last;
          std::vector<Claim> held;
          std::vector<double> took;
          for (int i = 0; i < count; ++i) {
            auto t0 = std::chrono::steady_clock::now();
            auto r = allocate(t, ClaimRequest{1, {}}, ClaimOwner{"bench", "claims"});
            took.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            for (auto& c : r.claims) held.push_back(std::move(c));
          }
          return took;
        });
      },
      py::arg("type"), py::arg("first"), py::arg("last"), py::arg("count"));

  m.def(
      "check_regex",
      [](const std::string& pattern) {
        // The engine's own judge (Boost.Regex, ECMAScript), so a pattern accepted here
        // compiles when the check starts.
        if (auto why = Pattern::error_of(pattern)) throw ConfigError(*why);
      },
      py::arg("pattern"), "Raise ConfigError unless `pattern` is a valid ECMAScript regex.");
  m.def("validate", &validate_stack, py::arg("spec"), "Raise ConfigError if the stack spec is invalid.");
  m.def(
      "levels",
      [](const StackSpec& spec) {
        validate_stack(spec);
        Graph graph(spec.services);
        std::vector<std::vector<std::string>> out;
        for (const auto& level : graph.levels()) {
          out.emplace_back();
          for (auto i : level) out.back().push_back(spec.services[i].name);
        }
        return out;
      },
      py::arg("spec"), "The start order by level; raises ConfigError like validate().");
}

}  // namespace corral::bindings
