// What the control API returns, as JSON values: service rows, log lines, events, errors.
// Only names, states, pids, ports, counters and captured output: never a service's
// environment, command line or any other part of its spec.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <string>
#include <string_view>
#include <vector>

#include "corral/engine/engine.hpp"

namespace corral::control {

// `s` with every invalid UTF-8 sequence replaced by U+FFFD: a service's bytes are written
// into JSON, which must be valid UTF-8 for any client to read it.
std::string valid_utf8(std::string_view s);

boost::json::object service_json(const ServiceStatus& s);
boost::json::object stack_json(std::string_view name, const std::vector<ServiceStatus>& rows);
boost::json::object log_line_json(const std::string& service, const LogLine& line);
// Whether a state event's reason is one of the engine's check failures: a liveness check
// that failed its retries (-> unhealthy), a readiness deadline passed while a check kept
// failing, or a log check's regex beyond its cost limit (-> failed). The engine gives
// these reasons in fixed words (engine/check_runner.cpp, capture.cpp, checks/pattern.cpp);
// a dependency's failure ("dependency 'db' failed: ...") is not this service's check.
bool is_check_failure(State state, std::string_view reason);
// The `data:` of a Server-Sent Event, and its `event:` name ("log", "state").
boost::json::object event_json(const EngineEvent& e);
std::string_view event_name(const EngineEvent& e);
// {"error": message} plus `extra` fields.
std::string error_body(std::string_view message, boost::json::object extra = {});

}  // namespace corral::control
