#include "corral/core/types.hpp"

#include <array>

namespace corral {
namespace {
constexpr std::array<std::string_view, state_count> state_names = {
    "pending", "starting", "ready", "unhealthy", "stopping", "stopped", "exited", "backoff", "failed"};
constexpr std::array<std::string_view, 3> condition_names = {"started", "ready", "completed"};
}  // namespace

std::string_view to_string(State s) noexcept { return state_names[static_cast<int>(s)]; }

std::optional<State> state_from_string(std::string_view s) noexcept {
  for (int i = 0; i < state_count; ++i)
    if (state_names[i] == s) return static_cast<State>(i);
  if (s == "healthy") return State::ready;
  return std::nullopt;
}

std::string_view to_string(Condition c) noexcept { return condition_names[static_cast<int>(c)]; }

std::optional<Condition> condition_from_string(std::string_view s) noexcept {
  for (int i = 0; i < 3; ++i)
    if (condition_names[i] == s) return static_cast<Condition>(i);
  if (s == "healthy") return Condition::ready;  // docker compose's name for it
  return std::nullopt;
}

std::string_view to_string(CheckSpec::Kind k) noexcept {
  switch (k) {
    case CheckSpec::Kind::tcp: return "tcp";
    case CheckSpec::Kind::http: return "http";
    case CheckSpec::Kind::log: return "log";
    case CheckSpec::Kind::exec: return "exec";
    case CheckSpec::Kind::notify: return "notify";
  }
  return "?";
}

std::string_view to_string(RestartSpec::Policy p) noexcept {
  switch (p) {
    case RestartSpec::Policy::no: return "no";
    case RestartSpec::Policy::on_failure: return "on-failure";
    case RestartSpec::Policy::always: return "always";
  }
  return "?";
}

}  // namespace corral
