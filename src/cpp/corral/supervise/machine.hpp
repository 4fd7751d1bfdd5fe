// The per-service supervision machine, the s6-supervise way: one table maps each
// (state, event) to the next state and to the *action* that carries out the side effects.
// The engine only decides which event happened (a pipe, a timer, a request); this table
// alone decides what it means. An event with no entry is ignored, with no side effect at
// all: a check result that arrives after a stop, a timer of an earlier run.
//
// The process itself lives in a slot beside the state (see engine/engine_impl.hpp): the
// slot is refilled only after the old process is reaped, so no state or event here can
// leave two processes of one service alive.
#pragma once

#include <optional>
#include <string_view>

#include "corral/core/types.hpp"

namespace corral {

enum class Event : std::uint8_t {
  start,          // a start request reached a service that is not running
  go,             // dependencies satisfied and the process slot free: spawn now
  dep_failed,     // a dependency can no longer reach its condition
  spawned,        // the program was exec'd
  spawn_failed,   // exec failed for good (missing binary, not executable...)
  ready,          // the readiness check passed (or there is none)
  health_failed,  // the liveness check failed `retries` times in a row
  health_ok,      // the liveness check passed again
  deadline,       // the start budget ran out before readiness
  stop,           // a stop request reached it (its dependents are down)
  kill_due,       // stop_timeout passed since the stop signal
  // A fork that fails for want of resources (EAGAIN, ENOMEM) counts as a run that ended
  // at once, so it is one of these three too: the policy's limit and backoff hold.
  exit_restart,   // the process was reaped and the restart policy wants another run
  exit_final,     // the process was reaped and stays ended
  exit_failed,    // the process was reaped before ready, or the restart limit was hit
  exit_stopped,   // the process was reaped after a stop
  backoff_done,   // the restart delay passed
};
inline constexpr int event_count = 16;

// What the engine does on a transition. Each names one function of the engine
// (engine/actions.cpp); `none` changes the state only.
enum class Action : std::uint8_t {
  none,
  reset,           // a new start: counters and the start budget begin again
  spawn,           // fill the process slot: exec, pipes, exit watch, checks
  became_ready,    // end the start budget, begin liveness checks
  unhealthy,       // stop the group when the policy restarts it (its exit then counts)
  terminate,       // stop signal + SIGCONT to the group, arm the SIGKILL after stop_timeout
  kill,            // SIGKILL to the group (stop_timeout passed)
  abort,           // the readiness deadline passed: checks off, no restart, SIGKILL the group
  cancel,          // a service without a process stops: timers off
  schedule_restart,  // arm the backoff timer
  settle,          // ended for good: start budget, checks and timers off
  stopped,         // reaped after a stop: settle, and start again if a start came meanwhile
};
inline constexpr int action_count = 12;

struct Step {
  State next;
  Action action;
};

std::string_view to_string(Event e) noexcept;
std::string_view to_string(Action a) noexcept;

// The step for `event` in `from`, or nullopt when the event means nothing there.
std::optional<Step> step(State from, Event event) noexcept;

}  // namespace corral
