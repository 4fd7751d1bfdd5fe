// Up-front validation of a whole stack: everything that can be known before a process runs
// is checked here, so a bad spec never starts half a stack.
#include <fmt/format.h>

#include <set>
#include <string_view>

#include "corral/checks/pattern.hpp"
#include "corral/engine/engine.hpp"
#include "corral/graph/graph.hpp"
#include "corral/spawn/spawn.hpp"
#include "corral/template/template.hpp"

namespace corral {
namespace {

// The longest duration accepted, in seconds (~31.7 years). Deadlines are signed 64-bit
// nanoseconds on steady_clock, which overflow above ~9.2e9 s; the Python layer clamps
// "forever" (inf) to this value, so anything larger is a caller's bug, refused here.
constexpr double max_seconds = 1e9;

// Names reach file and socket names, log prefixes and Prometheus labels: ASCII letters,
// digits, '_', '.', '-', not starting with '.' or '-' (so never "." or ".."), and short.
// The Python layer allows 64 characters; replicas add up to "-10000".
constexpr std::size_t max_name_length = 64 + 6;

bool is_valid_name(std::string_view name) {
  if (name.empty() || name.size() > max_name_length || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// A duration in [minimum, max_seconds] (minimum excluded when `strict`); NaN fails every
// comparison, so it is refused too.
bool is_duration(double seconds, bool strict) {
  return (strict ? seconds > 0 : seconds >= 0) && seconds <= max_seconds;
}

// A NUL byte would silently cut a string on its way to execve() or chdir().
bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

void check_template(const StackSpec& stack, const ServiceSpec& svc, const std::string& where,
                    const std::string& text) {
  auto own_port = [&](std::string_view name) {
    for (const auto& p : svc.ports)
      if (p == name) return true;
    return false;
  };
  auto resolve = [&](std::string_view key) -> std::optional<std::string> {
    if (key == "name" || key == "tmpdir") return std::string("x");
    if (key.rfind("res.", 0) == 0) {
      // {{res.NAME}} or {{res.NAME.I}}: NAME must be claimed, I below its count.
      std::string_view rest = key.substr(4);
      auto dot = rest.find('.');
      std::string name(rest.substr(0, dot));
      for (const auto& r : svc.resources) {
        if (r.name != name) continue;
        if (dot == std::string_view::npos) return std::string("1");
        std::string_view idx = rest.substr(dot + 1);
        int count = r.values.empty() ? r.count : static_cast<int>(r.values.size());
        if (is_port_number(idx) && idx.size() < 6 && std::stoi(std::string(idx)) < count) return std::string("1");
        throw ConfigError(fmt::format("service '{}': {}: template '{{{{{}}}}}': resource '{}' has {} value{}",
                                      svc.name, where, key, name, count, count == 1 ? "" : "s"));
      }
      throw ConfigError(fmt::format("service '{}': {}: template '{{{{{}}}}}': the service claims no resource '{}'",
                                    svc.name, where, key, name));
    }
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
  if (!is_duration(c.interval, true)) fail(fmt::format("interval must be in (0, {:g}] seconds", max_seconds));
  if (!is_duration(c.timeout, true)) fail(fmt::format("timeout must be in (0, {:g}] seconds", max_seconds));
  if (!is_duration(c.start_timeout, true))
    fail(fmt::format("start_timeout must be in (0, {:g}] seconds", max_seconds));
  if (c.retries < 1) fail("retries must be >= 1");
  switch (c.kind) {
    case CheckSpec::Kind::tcp:
    case CheckSpec::Kind::http: {
      if (c.port.empty()) {
        if (svc.ports.size() != 1)
          fail(fmt::format("{} check needs a port (the service has {} ports)", to_string(c.kind), svc.ports.size()));
      } else if (is_port_number(c.port)) {
        // Length first: std::stol throws out_of_range on a long run of digits.
        if (c.port.size() > 5 || std::stol(c.port) < 1 || std::stol(c.port) > 65535)
          fail(fmt::format("port {} is out of range", c.port));
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
      for (const auto& a : c.command)
        if (has_nul(a)) fail("exec: a command argument contains a NUL character");
      for (const auto& a : c.command) check_template(stack, svc, std::string(key) + ".exec", a);
      break;
    case CheckSpec::Kind::notify: break;
  }
}

}  // namespace

void validate_stack(const StackSpec& spec) {
  if (!spec.name.empty() && !is_valid_name(spec.name))
    throw ConfigError(fmt::format("invalid stack name '{}': use up to 64 letters, digits, '_', '.' and '-', "
                                  "not starting with '.' or '-'",
                                  spec.name));
  // Names before the graph: its messages quote them.
  for (const auto& svc : spec.services) {
    if (svc.name.empty()) throw ConfigError("a service needs a name");
    if (!is_valid_name(svc.name))
      throw ConfigError(fmt::format("invalid service name '{}': use up to 64 letters, digits, '_', '.' and '-', "
                                    "not starting with '.' or '-'",
                                    svc.name));
  }
  std::set<std::string> types;
  for (const auto& t : spec.resource_types) {
    auto fail = [&](std::string what) { throw ConfigError(fmt::format("resources.{}: {}", t.name, what)); };
    if (!is_valid_name(t.name)) fail("invalid resource type name");
    if (!types.insert(t.name).second) fail("declared twice");
    if (t.has_range && !t.values.empty()) fail("give either range or values, not both");
    if (t.has_range && t.range_lo > t.range_hi) fail(fmt::format("range: {} > {}", t.range_lo, t.range_hi));
    if (t.has_range && t.range_hi - t.range_lo >= 1000000) fail("range: more than 1000000 values");
    for (const auto& v : t.values)
      if (v.empty() || has_nul(v)) fail("values: empty value or NUL character");
    if (!is_duration(t.timeout, true)) fail(fmt::format("timeout: must be in (0, {:g}] seconds", max_seconds));
    if (!t.env.empty() && (t.env.find('=') != std::string::npos || has_nul(t.env))) fail("env: invalid variable name");
  }
  Graph graph(spec.services);  // duplicates, unknown dependencies, cycles
  for (const auto& svc : spec.services) {
    auto fail = [&](std::string what) { throw ConfigError(fmt::format("service '{}': {}", svc.name, what)); };
    if (svc.argv.empty() || svc.argv[0].empty()) fail("command: must not be empty");
    for (const auto& a : svc.argv)
      if (has_nul(a)) fail("command: an argument contains a NUL character");
    if (has_nul(svc.cwd)) fail("cwd: contains a NUL character");
    for (const auto& a : svc.argv) check_template(spec, svc, "command", a);
    for (const auto& [k, v] : svc.env) {
      if (k.empty() || k.find('=') != std::string::npos || has_nul(k))
        fail(fmt::format("env: invalid variable name '{}'", k));
      if (has_nul(v)) fail(fmt::format("env.{}: contains a NUL character", k));
      check_template(spec, svc, fmt::format("env.{}", k), v);
    }
    check_template(spec, svc, "cwd", svc.cwd);
    std::set<std::string> seen;
    for (const auto& p : svc.ports)
      if (p.empty() || !seen.insert(p).second) fail(fmt::format("ports: duplicate or empty port name '{}'", p));
    for (const auto& [p, n] : svc.pinned_ports) {
      if (!seen.contains(p)) fail(fmt::format("ports.{}: not a port of the service", p));
      if (n < 1 || n > 65535) fail(fmt::format("ports.{}: {} is out of range", p, n));
    }
    for (const auto& l : svc.listen)
      if (!seen.contains(l)) fail(fmt::format("listen: the service has no port named '{}'", l));
    if (svc.listen.size() > static_cast<std::size_t>(kMaxPassedFds))
      fail(fmt::format("listen: at most {} ports can be handed over as sockets", kMaxPassedFds));
    std::set<std::string> claimed;
    for (const auto& r : svc.resources) {
      if (!is_valid_name(r.name) || !claimed.insert(r.name).second)
        fail(fmt::format("resources: invalid or repeated resource name '{}'", r.name));
      if (r.values.empty() && (r.count < 1 || r.count > 100000))
        fail(fmt::format("resources.{}: count must be in [1, 100000]", r.name));
      for (const auto& v : r.values)
        if (v.empty() || has_nul(v)) fail(fmt::format("resources.{}: empty value or NUL character", r.name));
      bool pooled = r.name == "port" || r.name == "tcpport" || r.name == "vncport" || r.name == "serialport";
      for (const auto& t : spec.resource_types) pooled = pooled || (t.name == r.name && (t.has_range || !t.values.empty()));
      if (r.values.empty() && !pooled && r.name != "port")
        fail(fmt::format("resources.{}: '{}' has no pool of values (declare a range or values), so the claim must "
                         "give the value",
                         r.name, r.name));
    }
    if (svc.ready) check_check(spec, svc, *svc.ready, "ready");
    if (svc.health) {
      if (svc.health->kind == CheckSpec::Kind::notify || svc.health->kind == CheckSpec::Kind::log)
        fail(fmt::format("health: a {} check cannot be a liveness check", to_string(svc.health->kind)));
      check_check(spec, svc, *svc.health, "health");
    }
    if (svc.stop_signal < 1 || svc.stop_signal > 64) fail(fmt::format("stop_signal: {} is not a signal", svc.stop_signal));
    if (!is_duration(svc.stop_timeout, false)) fail(fmt::format("stop_timeout: must be in [0, {:g}] seconds", max_seconds));
    if (svc.log_lines < 1) fail("log_lines: must be >= 1");
    const auto& r = svc.restart;
    if (!is_duration(r.backoff, false)) fail(fmt::format("restart.backoff: must be in [0, {:g}] seconds", max_seconds));
    if (!is_duration(r.max_backoff, false) || !(r.max_backoff >= r.backoff))
      fail(fmt::format("restart.max_backoff: must be >= backoff and <= {:g} seconds", max_seconds));
    if (!(r.jitter >= 0 && r.jitter < 1)) fail("restart.jitter: must be in [0, 1)");
    if (!is_duration(r.reset_after, false))
      fail(fmt::format("restart.reset_after: must be in [0, {:g}] seconds", max_seconds));
    if (r.max_restarts < -1) fail("restart.max_restarts: must be >= 0, or -1 for no limit");
  }
}

}  // namespace corral
