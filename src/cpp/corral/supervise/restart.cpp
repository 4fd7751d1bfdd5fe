#include "corral/supervise/restart.hpp"

#include <algorithm>
#include <cmath>

namespace corral {

double restart_delay(const RestartSpec& spec, int restarts, double u) noexcept {
  // 2^restarts overflows nothing: the exponent is clamped long before double runs out.
  double base = spec.backoff * std::ldexp(1.0, std::min(restarts, 60));
  double capped = std::min(base, spec.max_backoff);
  double jittered = capped * (1.0 + spec.jitter * (2.0 * u - 1.0));
  return std::max(0.0, jittered);
}

RestartDecision decide_restart(const RestartSpec& spec, const ExitInfo& exit, int restarts,
                               bool was_ready, bool has_ready_check, double u) noexcept {
  const bool success = !exit.signaled && exit.code == 0;
  bool wants = spec.policy == RestartSpec::Policy::always ||
               (spec.policy == RestartSpec::Policy::on_failure && !success);
  if (!wants) {
    // An exit before readiness is a failure to start, whatever the code: the readiness
    // check can no longer pass.
    if (has_ready_check && !was_ready) return {Event::exit_failed, 0, "exited before it was ready"};
    return {Event::exit_final, 0, ""};
  }
  if (spec.max_restarts >= 0 && restarts >= spec.max_restarts) {
    // Out of restarts: a clean exit is still a clean exit.
    if (success && (was_ready || !has_ready_check)) return {Event::exit_final, 0, ""};
    return {Event::exit_failed, 0, "restart limit reached"};
  }
  return {Event::exit_restart, restart_delay(spec, restarts, u), ""};
}

}  // namespace corral
