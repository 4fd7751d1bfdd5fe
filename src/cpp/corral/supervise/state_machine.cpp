#include "corral/supervise/state_machine.hpp"

#include <array>

namespace corral {
namespace {

using S = State;
constexpr std::optional<State> x = std::nullopt;  // no transition

// rows: current state; columns: events in the order of the Event enum:
//  reset     spawned      spawn_failed became_ready health_failed ready_deadline
//  stop_req  exit_restart exit_final   exit_failed  exit_after_stop dependency_failed
constexpr std::array<std::array<std::optional<State>, event_count>, state_count> table = {{
    /* pending   */ {{x, S::starting, S::failed, x, x, x,
                      S::stopped, S::backoff, x, S::failed, x, S::failed}},
    /* starting  */ {{x, x, x, S::ready, x, S::failed,
                      S::stopping, S::backoff, S::exited, S::failed, x, x}},
    /* ready     */ {{x, x, x, x, S::unhealthy, x,
                      S::stopping, S::backoff, S::exited, S::failed, x, x}},
    /* unhealthy */ {{x, x, x, S::ready, x, x,
                      S::stopping, S::backoff, S::exited, S::failed, x, x}},
    /* stopping  */ {{x, x, x, x, x, x,
                      x, x, x, x, S::stopped, x}},
    /* stopped   */ {{S::pending, x, x, x, x, x,
                      x, x, x, x, x, x}},
    /* exited    */ {{S::pending, x, x, x, x, x,
                      S::stopped, x, x, x, x, x}},
    /* backoff   */ {{x, S::starting, S::failed, x, x, S::failed,
                      S::stopped, S::backoff, x, S::failed, x, x}},
    /* failed    */ {{S::pending, x, x, x, x, x,
                      x, x, x, x, x, x}},
}};

constexpr std::array<std::string_view, event_count> event_names = {
    "reset",        "spawned",    "spawn_failed", "became_ready",    "health_failed",
    "ready_deadline", "stop_requested", "exit_restart", "exit_final", "exit_failed",
    "exit_after_stop", "dependency_failed"};

}  // namespace

std::string_view to_string(Event e) noexcept { return event_names[static_cast<int>(e)]; }

std::optional<State> transition(State from, Event event) noexcept {
  return table[static_cast<int>(from)][static_cast<int>(event)];
}

}  // namespace corral
