// The supervision state machine as one table of states x events (the s6-supervise way):
// the engine decides *which* event happened, this table alone decides where it leads.
#pragma once

#include <optional>
#include <string_view>

#include "corral/core/types.hpp"

namespace corral {

enum class Event : std::uint8_t {
  reset,              // a start was requested for a settled service
  spawned,            // the program was exec'd
  spawn_failed,       // exec failed for good (missing binary, not executable...)
  became_ready,       // readiness check passed, or liveness check passed again
  health_failed,      // liveness check failed `retries` times in a row
  ready_deadline,     // readiness deadline passed (the engine kills the group)
  stop_requested,     // stop() on this service
  exit_restart,       // the process ended and the restart policy wants another run
  exit_final,         // the process ended and stays ended
  exit_failed,        // the process ended before ready, or the restart limit was hit
  exit_after_stop,    // the process ended after a stop request
  dependency_failed,  // a dependency can no longer satisfy its condition
};
inline constexpr int event_count = 12;

std::string_view to_string(Event e) noexcept;

// The next state, or nullopt when the event has no meaning in that state (the engine
// then ignores it: e.g. a check result arriving after the service was stopped).
std::optional<State> transition(State from, Event event) noexcept;

}  // namespace corral
