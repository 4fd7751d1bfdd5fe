// Plain data shared by every area of libcorral: the specs a user writes (already
// validated and normalised by the caller) and the states a service moves through.
#pragma once

#include <csignal>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace corral {

// The states of PRODUCT.md. The order matters only for display.
enum class State : std::uint8_t {
  pending,    // not started, or waiting for its dependencies
  starting,   // spawned, not ready yet
  ready,      // ready (or no readiness check and exec'd)
  unhealthy,  // running, liveness check failing
  stopping,   // stop signal sent, waiting for the exit
  stopped,    // stopped on request
  exited,     // ended by itself and not restarted
  backoff,    // waiting to restart
  failed,     // could not run / not ready in time / restart limit / dependency failed
};
inline constexpr int state_count = 9;

std::string_view to_string(State s) noexcept;
std::optional<State> state_from_string(std::string_view s) noexcept;

// A service whose process is alive (it may still be starting).
constexpr bool is_running(State s) noexcept {
  return s == State::starting || s == State::ready || s == State::unhealthy || s == State::stopping;
}
// A state that nothing will leave without a new request.
constexpr bool is_settled(State s) noexcept {
  return s == State::stopped || s == State::exited || s == State::failed;
}

enum class Condition : std::uint8_t { started, ready, completed };
std::string_view to_string(Condition c) noexcept;
std::optional<Condition> condition_from_string(std::string_view s) noexcept;

struct CheckSpec {
  enum class Kind : std::uint8_t { tcp, http, log, exec, notify };
  Kind kind = Kind::tcp;
  std::string port;                  // tcp/http: a port name of the service or a number
  std::string path = "/";            // http
  int status = 0;                    // http: expected status, 0 = any 2xx or 3xx
  std::string pattern;               // log: ECMAScript regex searched in each line
  std::vector<std::string> command;  // exec: argv
  double interval = 0.1;             // seconds between attempts
  double timeout = 1.0;              // seconds for one attempt
  double start_timeout = 60.0;       // readiness deadline in seconds (ready checks only)
  int retries = 3;                   // health: consecutive failures before unhealthy
};
std::string_view to_string(CheckSpec::Kind k) noexcept;

// A check's `port` given as a number ("8080") rather than as a port name ("http").
constexpr bool is_port_number(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

struct RestartSpec {
  enum class Policy : std::uint8_t { no, on_failure, always };
  Policy policy = Policy::no;
  double backoff = 0.1;       // first delay, seconds; doubles on each consecutive restart
  double max_backoff = 30.0;  // cap of the delay
  int max_restarts = -1;      // -1: unlimited; then `failed`
  double reset_after = 10.0;  // a run this long (seconds) resets the backoff and the count
  double jitter = 0.1;        // +-fraction of each delay, spreads restarts of many services
};
std::string_view to_string(RestartSpec::Policy p) noexcept;

struct Dependency {
  std::string name;
  Condition condition = Condition::ready;
};

// A pool of resource values declared by the stack (stack.resource_type, [resources.NAME]).
// Exactly one of range / values, or neither for a free-form type (the claim gives values).
struct ResourceTypeSpec {
  std::string name;
  bool has_range = false;
  long range_lo = 0, range_hi = -1;  // inclusive
  std::vector<std::string> values;
  std::string check;    // /bin/sh -c, {{value}} filled in; exit 0 = usable
  std::string env;      // extra variable name for the values, comma-joined
  double timeout = 10.0;  // seconds for one check
};

// What a service claims of one resource: `count` values of the pool, or the given ones.
struct ResourceClaimSpec {
  std::string name;
  int count = 1;
  std::vector<std::string> values;  // given values; then count is their number
  bool wait = false;                // an exhausted pool keeps the service pending
};

struct ServiceSpec {
  std::string name;
  std::vector<std::string> argv;           // a shell command arrives as {"/bin/sh","-c",cmd}
  std::map<std::string, std::string> env;  // the service's own variables (templated)
  std::string cwd;                         // templated; empty = the owner's cwd
  std::vector<std::string> ports;          // names of ports to allocate
  std::map<std::string, int> pinned_ports; // names among `ports` with a fixed number
  std::vector<std::string> listen;         // port names bound+listening, passed as fds 3..
  std::vector<ResourceClaimSpec> resources;
  std::vector<Dependency> depends_on;
  std::optional<CheckSpec> ready;
  std::optional<CheckSpec> health;
  RestartSpec restart;
  int stop_signal = SIGTERM;
  double stop_timeout = 10.0;
  std::size_t log_lines = 10000;          // ring buffer bound, lines
  std::size_t log_bytes = 4 * 1024 * 1024;  // ring buffer bound, bytes
};

struct StackSpec {
  std::string name;
  std::vector<ServiceSpec> services;
  // The environment every service starts from (the owner's, captured by the caller so the
  // engine thread never reads `environ` while another thread may be changing it).
  std::map<std::string, std::string> base_env;
  std::vector<ResourceTypeSpec> resource_types;
  // [logs]: when `log_dir` is set, every service's lines also go to <log_dir>/<name>.log,
  // stamped, rotated past `log_max_size` bytes (0: never) keeping `log_keep` old files.
  std::string log_dir;
  std::uint64_t log_max_size = 10u << 20;
  int log_keep = 3;
};

// Bad specs. The message names the service and the key.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A wait ran out of time.
class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Anything else that went wrong in the engine (unknown service, engine stopped...).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace corral
