// Seconds given by users (floats, possibly 1e10 or inf) as steady_clock durations. A
// nanosecond clock overflows above ~9.2e9 s, and an overflowed deadline lies in the past:
// `stop_timeout=1e10` would SIGKILL at once and `timeout=inf` would expire immediately.
// So every conversion goes through here and is clamped to ~31 years ("forever").
#pragma once

#include <chrono>

namespace corral {

inline constexpr double forever_seconds = 1e9;

inline std::chrono::steady_clock::duration to_duration(double seconds) noexcept {
  if (!(seconds > 0)) return std::chrono::steady_clock::duration::zero();  // also NaN
  if (seconds > forever_seconds) seconds = forever_seconds;
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace corral
