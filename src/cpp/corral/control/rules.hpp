// The control server's request rules as pure functions, so that each can be tested without
// a socket: the route a target names, and the checks that keep a browser page (DNS
// rebinding, cross-site "simple requests") and other users out. No Beast, no engine here.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace corral::control {

// A request target split into its decoded path segments and query parameters.
struct Target {
  std::vector<std::string> segments;  // "/v1/services/web" -> {"v1", "services", "web"}
  std::map<std::string, std::string> query;
};
// nullopt when the target is not an absolute path or holds a bad %-escape, a NUL, or a
// "." / ".." segment (a name never needs them; refusing them keeps routing unambiguous).
std::optional<Target> parse_target(std::string_view target);

// What a request asks for, from its method and path (the handler checks the rest).
enum class Endpoint {
  stack,          // GET  /v1/stack
  stack_stop,     // POST /v1/stack/stop
  services,       // GET  /v1/services
  service,        // GET  /v1/services/{name}
  service_action, // POST /v1/services/{name}/start|stop|restart|signal|wait|wait_log
  service_logs,   // GET  /v1/services/{name}/logs
  events,         // GET  /v1/events
  metrics,        // GET  /metrics (Prometheus text)
  metrics_json,   // GET  /v1/metrics
  openapi,        // GET  /v1/openapi.json
  login_url,      // POST /v1/login_url: a one-time browser login link (TCP on)
  login,          // GET  /v1/login?nonce=...: spends the link, sets the session cookie
  samples,        // GET  /v1/samples?since=S[&service=NAME]: recent metric samples, by column
  runs,           // GET  /v1/runs: the start-up timelines of the last runs, from history
  page,           // GET  / and /static/NAME: the dashboard's files (the name is in `action`)
};
struct Route {
  Endpoint endpoint;
  std::string service;  // for the service endpoints
  std::string action;   // for service_action
};
// The route, or an HTTP status: 404 (no such path), 405 (the path exists, not the method).
struct Routed {
  std::optional<Route> route;
  int status = 0;
};
Routed route(std::string_view method, const Target& target);

// The Host header of a loopback TCP request must name the loopback itself ("localhost",
// "127.0.0.1", "[::1]", with an optional port): a DNS-rebinding page reaches 127.0.0.1
// under its own host name, and this is what tells the two apart.
bool host_allowed(std::string_view host);
// No Origin (scripts, curl) or a loopback origin ("http://localhost:PORT", ...) only.
bool origin_allowed(std::string_view origin);
// Constant-time comparison: the time taken does not depend on where the bytes differ.
bool token_equal(std::string_view a, std::string_view b);
// "application/json", with optional parameters (charset); nothing else is a JSON body.
// Refusing every other type is what turns away a cross-site `text/plain` POST, which a
// browser sends without asking the server first.
bool is_json_type(std::string_view content_type);
// "TERM", "SIGTERM", "term" or a number in 1..64; nullopt otherwise.
std::optional<int> signal_number(std::string_view name);
// A bearer token from "Authorization: Bearer X"; empty when absent.
std::string bearer_token(std::string_view authorization);
// The value of cookie `name` in a Cookie header; empty when absent.
std::string cookie_value(std::string_view cookie_header, std::string_view name);

}  // namespace corral::control
