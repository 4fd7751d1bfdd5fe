// The restart policy as pure functions of the past, so it can be tested without processes:
// which event an exit is, and how long to wait before the next run.
#pragma once

#include "corral/core/types.hpp"
#include "corral/supervise/machine.hpp"

namespace corral {

struct ExitInfo {
  int code = 0;        // exit status, or 128 + signal number when killed
  bool signaled = false;
  int signal = 0;
};

struct RestartDecision {
  Event event;             // exit_restart, exit_final or exit_failed
  double delay = 0;        // seconds before the next spawn (exit_restart only)
  const char* why = "";    // reason, for exit_failed
};

// `restarts` counts restarts since the last reset; `was_ready` says whether this run ever
// became ready; `has_ready_check` whether it had to; `u` is a uniform random number in
// [0, 1) for the jitter.
RestartDecision decide_restart(const RestartSpec& spec, const ExitInfo& exit, int restarts,
                               bool was_ready, bool has_ready_check, double u) noexcept;

// Delay before restart number `restarts` + 1: backoff * 2^restarts, capped, +-jitter.
double restart_delay(const RestartSpec& spec, int restarts, double u) noexcept;

}  // namespace corral
