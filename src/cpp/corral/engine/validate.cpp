// Up-front validation of a whole stack: everything that can be known before a process runs
// is checked here, so a bad spec never starts half a stack.
#include <fmt/format.h>

#include <set>

#include "corral/checks/pattern.hpp"
#include "corral/engine/engine.hpp"
#include "corral/graph/graph.hpp"
#include "corral/template/template.hpp"

namespace corral {
namespace {

void check_template(const StackSpec& stack, const ServiceSpec& svc, const std::string& where,
                    const std::string& text) {
  auto own_port = [&](std::string_view name) {
    for (const auto& p : svc.ports)
      if (p == name) return true;
    return false;
  };
  auto resolve = [&](std::string_view key) -> std::optional<std::string> {
    if (key == "name" || key == "tmpdir") return std::string("x");
    if (key.rfind("port.", 0) == 0) {
      if (own_port(key.substr(5))) return std::string("1");
      throw ConfigError(fmt::format("service '{}': {}: template '{{{{{}}}}}': the service has no port named '{}'",
                                    svc.name, where, key, key.substr(5)));
    }
    auto dot = key.find(".port.");
    if (dot != std::string_view::npos) {
      auto other = key.substr(0, dot);
      auto port = key.substr(dot + 6);
      for (const auto& o : stack.services) {
        if (o.name != other) continue;
        for (const auto& p : o.ports)
          if (p == port) return std::string("1");
        throw ConfigError(fmt::format("service '{}': {}: template '{{{{{}}}}}': service '{}' has no port named '{}'",
                                      svc.name, where, key, other, port));
      }
      throw ConfigError(fmt::format("service '{}': {}: template '{{{{{}}}}}': unknown service '{}'",
                                    svc.name, where, key, other));
    }
    return std::nullopt;
  };
  try {
    render_template(text, resolve);
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    if (msg.rfind("service '", 0) == 0) throw;
    throw ConfigError(fmt::format("service '{}': {}: {}", svc.name, where, msg));
  }
}

void check_check(const StackSpec& stack, const ServiceSpec& svc, const CheckSpec& c, const char* key) {
  auto fail = [&](std::string what) {
    throw ConfigError(fmt::format("service '{}': {}: {}", svc.name, key, what));
  };
  if (!(c.interval > 0)) fail("interval must be > 0");
  if (!(c.timeout > 0)) fail("timeout must be > 0");
  if (!(c.start_timeout > 0)) fail("start_timeout must be > 0");
  if (c.retries < 1) fail("retries must be >= 1");
  switch (c.kind) {
    case CheckSpec::Kind::tcp:
    case CheckSpec::Kind::http: {
      if (c.port.empty()) {
        if (svc.ports.size() != 1)
          fail(fmt::format("{} check needs a port (the service has {} ports)", to_string(c.kind), svc.ports.size()));
      } else if (is_port_number(c.port)) {
        long n = std::stol(c.port);
        if (n < 1 || n > 65535) fail(fmt::format("port {} is out of range", c.port));
      } else {
        bool found = false;
        for (const auto& p : svc.ports) found = found || p == c.port;
        if (!found) fail(fmt::format("the service has no port named '{}'", c.port));
      }
      if (c.kind == CheckSpec::Kind::http) {
        if (c.status != 0 && (c.status < 100 || c.status > 599)) fail(fmt::format("status {} is not an HTTP status", c.status));
        check_template(stack, svc, std::string(key) + ".path", c.path);
      }
      break;
    }
    case CheckSpec::Kind::log:
      if (auto why = Pattern::error_of(c.pattern))
        fail(fmt::format("log pattern '{}' is not a valid regex: {}", c.pattern, *why));
      break;
    case CheckSpec::Kind::exec:
      if (c.command.empty()) fail("exec check needs a command");
      for (const auto& a : c.command) check_template(stack, svc, std::string(key) + ".exec", a);
      break;
    case CheckSpec::Kind::notify: break;
  }
}

}  // namespace

void validate_stack(const StackSpec& spec) {
  Graph graph(spec.services);  // duplicates, unknown dependencies, cycles
  for (const auto& svc : spec.services) {
    auto fail = [&](std::string what) { throw ConfigError(fmt::format("service '{}': {}", svc.name, what)); };
    if (svc.name.empty()) throw ConfigError("a service needs a name");
    if (svc.argv.empty() || svc.argv[0].empty()) fail("command: must not be empty");
    for (const auto& a : svc.argv) check_template(spec, svc, "command", a);
    for (const auto& [k, v] : svc.env) {
      if (k.empty() || k.find('=') != std::string::npos) fail(fmt::format("env: invalid variable name '{}'", k));
      check_template(spec, svc, fmt::format("env.{}", k), v);
    }
    check_template(spec, svc, "cwd", svc.cwd);
    std::set<std::string> seen;
    for (const auto& p : svc.ports)
      if (p.empty() || !seen.insert(p).second) fail(fmt::format("ports: duplicate or empty port name '{}'", p));
    if (svc.ready) check_check(spec, svc, *svc.ready, "ready");
    if (svc.health) {
      if (svc.health->kind == CheckSpec::Kind::notify || svc.health->kind == CheckSpec::Kind::log)
        fail(fmt::format("health: a {} check cannot be a liveness check", to_string(svc.health->kind)));
      check_check(spec, svc, *svc.health, "health");
    }
    if (svc.stop_signal < 1 || svc.stop_signal > 64) fail(fmt::format("stop_signal: {} is not a signal", svc.stop_signal));
    if (!(svc.stop_timeout >= 0)) fail("stop_timeout: must be >= 0");
    const auto& r = svc.restart;
    if (!(r.backoff >= 0)) fail("restart.backoff: must be >= 0");
    if (!(r.max_backoff >= r.backoff)) fail("restart.max_backoff: must be >= backoff");
    if (!(r.jitter >= 0 && r.jitter < 1)) fail("restart.jitter: must be in [0, 1)");
    if (!(r.reset_after >= 0)) fail("restart.reset_after: must be >= 0");
  }
}

}  // namespace corral
