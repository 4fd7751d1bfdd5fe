#include "corral/control/views.hpp"

#include <boost/json/serialize.hpp>

#include <map>

namespace corral::control {
namespace json = boost::json;

namespace {
double seconds(std::int64_t ns) { return static_cast<double>(ns) / 1e9; }
const char* stream_name(Stream s) { return s == Stream::out ? "stdout" : "stderr"; }

// Length of the valid UTF-8 sequence at the start of `s`, 0 when there is none (overlong
// forms, surrogates and code points past U+10FFFF are invalid too).
std::size_t sequence_length(std::string_view s) {
  auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  std::size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
  if (n == 0 || c > 0xF4 || s.size() < n) return 0;
  for (std::size_t i = 1; i < n; ++i)
    if ((b(i) & 0xC0) != 0x80) return 0;
  if (n == 3 && c == 0xE0 && b(1) < 0xA0) return 0;  // overlong
  if (n == 3 && c == 0xED && b(1) >= 0xA0) return 0;  // surrogate
  if (n == 4 && c == 0xF0 && b(1) < 0x90) return 0;  // overlong
  if (n == 4 && c == 0xF4 && b(1) >= 0x90) return 0;  // past U+10FFFF
  return n;
}
}  // namespace

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    std::size_t n = sequence_length(s);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      n = 1;
    } else {
      out.append(s.substr(0, n));
    }
    s.remove_prefix(n);
  }
  return out;
}

json::object service_json(const ServiceStatus& s) {
  json::object o;
  o["name"] = s.name;
  o["state"] = std::string(to_string(s.state));
  o["pid"] = s.pid > 0 ? json::value(s.pid) : json::value(nullptr);
  o["restarts"] = s.restarts;
  o["exit_code"] = s.exit_code ? json::value(*s.exit_code) : json::value(nullptr);
  json::object ports;
  for (const auto& [k, v] : s.ports) ports[k] = v;
  o["ports"] = std::move(ports);
  o["reason"] = valid_utf8(s.reason);
  o["started_at"] = s.started_at > 0 ? json::value(s.started_at) : json::value(nullptr);
  o["ready_at"] = s.ready_at > 0 ? json::value(s.ready_at) : json::value(nullptr);
  o["log_lines"] = s.log_lines;
  o["log_dropped"] = s.log_dropped;
  return o;
}

json::object stack_json(std::string_view name, const std::vector<ServiceStatus>& rows) {
  json::object o;
  o["name"] = name;
  std::map<std::string, int> counts;
  bool ready = !rows.empty();
  for (const auto& r : rows) {
    ++counts[std::string(to_string(r.state))];
    if (r.state != State::ready && r.state != State::exited) ready = false;
  }
  json::object states;
  for (const auto& [k, v] : counts) states[k] = v;
  o["services"] = rows.size();
  o["states"] = std::move(states);
  o["ready"] = ready;
  return o;
}

json::object log_line_json(const std::string& service, const LogLine& line) {
  json::object o;
  o["service"] = service;
  o["seq"] = line.seq;
  o["time"] = seconds(line.time_ns);
  o["stream"] = stream_name(line.stream);
  o["text"] = valid_utf8(line.text);
  return o;
}

bool is_check_failure(State state, std::string_view reason) {
  if (state == State::unhealthy) return reason.starts_with("liveness check failed");
  if (state != State::failed) return false;
  if (reason.starts_with("not ready within ")) return reason.find(" check: ") != std::string_view::npos;
  return reason.starts_with("log pattern '") && reason.find("' is too costly to match") != std::string_view::npos;
}

std::string_view event_name(const EngineEvent& e) {
  switch (e.kind) {
    case EngineEvent::Kind::log: return "log";
    case EngineEvent::Kind::state: return "state";
    case EngineEvent::Kind::dropped: return "dropped";
  }
  return "log";
}

json::object event_json(const EngineEvent& e) {
  json::object o;
  o["service"] = e.service;
  o["time"] = seconds(e.time_ns);
  if (e.kind == EngineEvent::Kind::log) {
    o["stream"] = stream_name(e.stream);
    o["text"] = valid_utf8(e.text);
  } else {
    o["state"] = std::string(to_string(e.state));
    // The engine's detail of a `starting` event is the command line, which is part of the
    // spec and never leaves the stack (docs/security.md); other states' text is a reason.
    o["reason"] = e.state == State::starting ? std::string() : valid_utf8(e.text);
    o["exit_code"] = e.exit_code ? json::value(*e.exit_code) : json::value(nullptr);
    // So that the dashboard can list check failures apart from other changes.
    o["check_failed"] = is_check_failure(e.state, e.text);
  }
  return o;
}

std::string error_body(std::string_view message, json::object extra) {
  extra["error"] = valid_utf8(message);
  return json::serialize(extra);
}

}  // namespace corral::control
