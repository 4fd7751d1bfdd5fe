#include "corral/supervise/machine.hpp"

#include <array>

namespace corral {
namespace {

using S = State;
using A = Action;
constexpr std::optional<Step> x = std::nullopt;  // the event means nothing in this state
constexpr Step to(State s, Action a = A::none) { return Step{s, a}; }

// Rows: the current state. Columns, in the order of the Event enum:
//   start  go  dep_failed  spawned  spawn_failed  ready  health_failed  health_ok
//   deadline  stop  kill_due  exit_restart  exit_final  exit_failed  exit_stopped  backoff_done
//
// The three exits of a running process lead to the same places from every running state;
// from `pending` and `backoff` they come from a fork that failed for want of resources.
constexpr std::array<std::array<std::optional<Step>, event_count>, state_count> table = {{
    /* pending */
    {{x, to(S::pending, A::spawn), to(S::failed, A::settle), to(S::starting), to(S::failed, A::settle), x, x, x,
      x, to(S::stopped, A::cancel), x, to(S::backoff, A::schedule_restart), to(S::exited, A::settle),
      to(S::failed, A::settle), x, x}},
    /* starting */
    {{x, x, x, x, x, to(S::ready, A::became_ready), x, x,
      to(S::failed, A::abort), to(S::stopping, A::terminate), x, to(S::backoff, A::schedule_restart),
      to(S::exited, A::settle), to(S::failed, A::settle), x, x}},
    /* ready */
    {{x, x, x, x, x, x, to(S::unhealthy, A::unhealthy), x,
      x, to(S::stopping, A::terminate), x, to(S::backoff, A::schedule_restart),
      to(S::exited, A::settle), to(S::failed, A::settle), x, x}},
    /* unhealthy */
    {{x, x, x, x, x, x, x, to(S::ready),
      x, to(S::stopping, A::terminate), to(S::unhealthy, A::kill), to(S::backoff, A::schedule_restart),
      to(S::exited, A::settle), to(S::failed, A::settle), x, x}},
    /* stopping: only the exit (and the SIGKILL when it is late) */
    {{x, x, x, x, x, x, x, x,
      x, x, to(S::stopping, A::kill), x, x, x, to(S::stopped, A::stopped), x}},
    /* stopped */
    {{to(S::pending, A::reset), x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}},
    /* exited */
    {{to(S::pending, A::reset), x, x, x, x, x, x, x, x, to(S::stopped), x, x, x, x, x, x}},
    /* backoff: no process; the timer spawns, a stop or the deadline ends it */
    {{x, x, x, to(S::starting), to(S::failed, A::settle), x, x, x,
      to(S::failed, A::settle), to(S::stopped, A::cancel), x, to(S::backoff, A::schedule_restart),
      to(S::exited, A::settle), to(S::failed, A::settle), x, to(S::backoff, A::spawn)}},
    /* failed */
    {{to(S::pending, A::reset), x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}},
}};

constexpr std::array<std::string_view, event_count> event_names = {
    "start",    "go",   "dep_failed",   "spawned",    "spawn_failed", "ready",      "health_failed", "health_ok",
    "deadline", "stop", "kill_due",     "exit_restart", "exit_final", "exit_failed", "exit_stopped", "backoff_done"};

constexpr std::array<std::string_view, action_count> action_names = {
    "none", "reset", "spawn", "became_ready", "unhealthy", "terminate",
    "kill", "abort", "cancel", "schedule_restart", "settle", "stopped"};

}  // namespace

std::string_view to_string(Event e) noexcept { return event_names[static_cast<int>(e)]; }
std::string_view to_string(Action a) noexcept { return action_names[static_cast<int>(a)]; }

std::optional<Step> step(State from, Event event) noexcept {
  return table[static_cast<int>(from)][static_cast<int>(event)];
}

}  // namespace corral
