// What each endpoint of the control API does (docs/api.md; the contract is
// src/python/corral/openapi.json). Every request passes the same gate first: on TCP a
// loopback Host and the token; everywhere no foreign Origin, and a JSON body for a POST.
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <map>

#include "corral/control/rules.hpp"
#include "corral/control/server_impl.hpp"
#include "corral/control/views.hpp"
#include "corral/metrics/proc_sample.hpp"
#include "corral/metrics/stack_metrics.hpp"

namespace corral::control {
namespace json = boost::json;

Response error_response(int status, std::string_view message) {
  Response res{static_cast<http::status>(status), 11};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.body() = error_body(message);
  return res;
}

namespace {

Response json_response(int status, const json::value& body) {
  Response res{static_cast<http::status>(status), 11};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = json::serialize(body);
  return res;
}

Reply reply(Response res) { return Reply{std::move(res), std::nullopt}; }
Reply error(int status, std::string_view message) { return reply(error_response(status, message)); }

// A number of seconds from the body: nullopt when absent, -2 when not a number >= 0.
std::optional<double> seconds_field(const json::object& body, std::string_view key) {
  auto it = body.find(key);
  if (it == body.end() || it->value().is_null()) return std::nullopt;
  const auto& v = it->value();
  double d = v.is_int64() ? static_cast<double>(v.as_int64())
             : v.is_uint64() ? static_cast<double>(v.as_uint64())
             : v.is_double() ? v.as_double() : -2;
  return d >= 0 ? d : -2;
}

bool truthy(const std::map<std::string, std::string>& q, const std::string& key) {
  auto it = q.find(key);
  return it != q.end() && (it->second == "1" || it->second == "true" || it->second == "yes" || it->second.empty());
}

json::array tail_json(Stack& stack, const std::string& service, long n) {
  json::array out;
  for (const auto& l : stack.logs(service, n)) out.push_back(log_line_json(service, l));
  return out;
}

// The answer to a finished start/stop/restart.
Reply outcome_reply(ControlServer::Core& core, const std::string& service, const Outcome& o) {
  json::object body;
  if (o.ok) {
    body["ok"] = true;
    if (!service.empty()) body["state"] = std::string(to_string(core.stack.status(service).state));
    return reply(json_response(200, body));
  }
  body["ok"] = false;
  body["error"] = valid_utf8(o.message);
  body["service"] = o.service;
  // The failing service's last lines, as StartError shows them.
  if (!o.service.empty() && core.names.count(o.service)) body["logs"] = tail_json(core.stack, o.service, 20);
  return reply(json_response(409, body));
}

Reply timeout_reply(double timeout) {
  json::object body;
  body["ok"] = false;
  body["error"] = fmt::format("not done within {}s (the request goes on)", timeout);
  body["timeout"] = true;
  return reply(json_response(504, body));
}

// wait: until the service is in a state; wait_log: until one of its lines matches a regex
// (the engine's ECMAScript matcher, as Service.wait_for_log). Neither changes anything.
asio::awaitable<Reply> wait_for(ControlServer::Core& core, const Route& r, const json::object& body, double limit) {
  auto& stack = core.stack;
  std::shared_ptr<Pending<Outcome>> p;
  if (r.action == "wait") {
    auto it = body.find("state");
    std::optional<State> state = State::ready;
    if (it != body.end()) {
      state = it->value().is_string() ? state_from_string(std::string(it->value().as_string())) : std::nullopt;
      if (!state) co_return error(400, "\"state\" must be the name of a state");
    }
    p = stack.wait_state(r.service, *state);
  } else {
    auto it = body.find("regex");
    if (it == body.end() || !it->value().is_string()) co_return error(400, "\"regex\" must be a string");
    std::uint64_t from = 0;
    if (auto n = body.find("new_only"); n != body.end() && n->value().is_bool() && n->value().as_bool()) {
      auto last = stack.logs(r.service, 1);
      from = last.empty() ? 0 : last.back().seq + 1;
    }
    try {
      p = stack.wait_log(r.service, std::string(it->value().as_string()), from);
    } catch (const ConfigError& e) {
      co_return error(400, e.what());
    }
  }
  if (!co_await core.await_ready(p, limit)) co_return timeout_reply(limit);
  const Outcome& o = p->get();
  json::object out;
  out["ok"] = o.ok;
  if (o.ok) {
    if (r.action == "wait_log") out["line"] = valid_utf8(o.message);
    co_return reply(json_response(200, out));
  }
  out["error"] = valid_utf8(o.message);
  out["service"] = o.service;
  co_return reply(json_response(409, out));
}

asio::awaitable<Reply> service_action(ControlServer::Core& core, const Route& r, const json::object& body) {
  auto& stack = core.stack;
  if (r.action == "signal") {
    auto it = body.find("signal");
    std::optional<int> sig;
    if (it != body.end() && it->value().is_string()) sig = signal_number(std::string(it->value().as_string()));
    if (it != body.end() && it->value().is_int64() && it->value().as_int64() >= 1 && it->value().as_int64() <= 64)
      sig = static_cast<int>(it->value().as_int64());
    if (!sig) co_return error(400, "\"signal\" must be a signal name (\"TERM\") or number (15)");
    json::object out;
    out["delivered"] = stack.signal(r.service, *sig);
    co_return reply(json_response(200, out));
  }
  auto timeout = seconds_field(body, "timeout");
  if (timeout && *timeout < 0) co_return error(400, "\"timeout\" must be a number of seconds >= 0");
  double limit = timeout.value_or(-1);
  if (r.action == "wait" || r.action == "wait_log") co_return co_await wait_for(core, r, body, limit);
  bool wait = true;
  if (auto it = body.find("wait"); it != body.end()) {
    if (!it->value().is_bool()) co_return error(400, "\"wait\" must be true or false");
    wait = it->value().as_bool();
  }
  std::vector<std::string> names{r.service};
  std::shared_ptr<Pending<Outcome>> p;
  if (r.action == "start") p = stack.start(names);
  else p = stack.stop(names);
  if (r.action == "restart") {
    // Stop, then start: the second half is posted only once the first is done.
    auto began = std::chrono::steady_clock::now();
    if (!co_await core.await_ready(p, limit)) co_return timeout_reply(limit);
    if (!p->get().ok) co_return outcome_reply(core, r.service, p->get());
    if (limit >= 0) limit = std::max(0.0, limit - std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count());
    p = stack.start(names);
  }
  if (!wait) {
    json::object out;
    out["ok"] = true;
    out["accepted"] = true;
    co_return reply(json_response(202, out));
  }
  if (!co_await core.await_ready(p, limit)) co_return timeout_reply(limit);
  co_return outcome_reply(core, r.service, p->get());
}

// A status row plus what the dashboard needs to say why a service waits: the services it
// depends on with their conditions, and the values of the resources it holds.
json::object row_json(ControlServer::Core& core, const ServiceStatus& s) {
  json::object o = service_json(s);
  json::array deps;
  for (const auto& d : core.stack.dependencies(s.name)) {
    json::object x;
    x["service"] = d.name;
    x["condition"] = std::string(to_string(d.condition));
    deps.push_back(std::move(x));
  }
  o["depends_on"] = std::move(deps);
  json::object res;
  for (const auto& [k, values] : s.resources) {
    json::array a;
    for (const auto& v : values) a.push_back(json::string(valid_utf8(v)));
    res[k] = std::move(a);
  }
  o["resources"] = std::move(res);
  return o;
}

// One of the dashboard's files, from memory. The page may run scripts from this server
// only, and never inside another site's frame.
Reply page_reply(ControlServer::Core& core, const Request& req, const std::string& name) {
  auto it = core.files.find(name);
  if (it == core.files.end()) return error(404, "no such file");
  const StaticFile& f = it->second;
  bool fresh = etag_matches(req[http::field::if_none_match], f.etag);
  Response res{fresh ? http::status::not_modified : http::status::ok, 11};
  res.set(http::field::content_type, f.content_type);
  res.set(http::field::etag, f.etag);
  // Revalidated on every load (a 304 costs nothing): a newer corral's page is never mixed
  // with an older script from the cache.
  res.set(http::field::cache_control, "no-cache");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("X-Frame-Options", "DENY");
  res.set("Referrer-Policy", "no-referrer");
  res.set("Content-Security-Policy",
          "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
  if (!fresh) res.body() = f.body;
  return reply(std::move(res));
}

// Recent samples by column, per service: {"now", "services": {name: {"time": [...],
// "cpu_percent": [...], "rss_bytes": [...]}}}, for sparklines. `since` is seconds ago.
Reply samples_reply(ControlServer::Core& core, const Target& t) {
  double since = 300;
  if (auto it = t.query.find("since"); it != t.query.end()) {
    std::size_t used = 0;
    try {
      since = std::stod(it->second, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != it->second.size() || !(since >= 0)) return error(400, "since must be a number of seconds >= 0");
  }
  std::string only;
  if (auto it = t.query.find("service"); it != t.query.end()) {
    if (!core.names.count(it->second)) return error(404, fmt::format("no service '{}'", it->second));
    only = it->second;
  }
  double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  auto metrics = core.stack.metrics();
  const auto& names = metrics->names();
  std::map<std::size_t, std::array<json::array, 3>> columns;
  for (const auto& m : core.stack.samples(only, now - since)) {
    auto& c = columns[m.service];
    c[0].push_back(m.time);
    c[1].push_back(m.cpu_percent);
    c[2].push_back(m.rss_bytes);
  }
  // With what the health score needs (docs/metrics.md), for every service asked about.
  auto counters = metrics->counters();
  json::object services;
  for (std::size_t i = 0; i < names.size() && i < counters.size(); ++i) {
    if (!only.empty() && names[i] != only) continue;
    auto& c = columns[i];
    json::object o;
    o["time"] = std::move(c[0]);
    o["cpu_percent"] = std::move(c[1]);
    o["rss_bytes"] = std::move(c[2]);
    const ServiceCounters& k = counters[i];
    json::object h;
    json::array restarts;
    for (double t : k.restart_times) restarts.push_back(t);
    h["restart_times"] = std::move(restarts);
    std::uint32_t mask = k.recent_checks >= 32 ? ~0u : (1u << k.recent_checks) - 1;
    h["recent_checks"] = k.recent_checks;
    h["recent_check_failures"] = __builtin_popcount(k.recent_failures & mask);
    h["ready_seconds"] = k.last_ready_seconds >= 0 ? json::value(k.last_ready_seconds) : json::value(nullptr);
    o["counters"] = std::move(h);
    services[names[i]] = std::move(o);
  }
  json::object out;
  out["now"] = now;
  out["services"] = std::move(services);
  return reply(json_response(200, out));
}

// The last runs' start-up timelines: the owner reads them from its history database and
// publishes them (set_document); a stack without history has none, and says so.
Reply runs_reply(ControlServer::Core& core) {
  std::shared_ptr<const std::string> doc;
  {
    std::lock_guard lock(core.documents_mutex);
    doc = core.runs_document;
  }
  Response res{http::status::ok, 11};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = doc ? *doc
                   : R"json({"history":false,"reason":"this stack keeps no history (Stack(history=...) or a )json"
                     R"json(history key in the config file)","current":null,"runs":[]})json";
  return reply(std::move(res));
}

Reply open_stream(ControlServer::Core& core, const Route& r, const Target& t, long tail = 10) {
  if (r.endpoint == Endpoint::events) {
    std::string only;
    if (auto it = t.query.find("service"); it != t.query.end()) {
      if (!core.names.count(it->second)) return error(404, fmt::format("no service '{}'", it->second));
      only = it->second;
    }
    return Reply{Response{}, StreamPlan{core.add_feed(only, false), ": corral events\n\n", 0}};
  }
  // A log follow: the tail first, then new lines. The feed is registered before the tail
  // is read, so no line falls between the two; a line in both is skipped by its time.
  StreamPlan plan{core.add_feed(r.service, true), {}, 0};
  for (const auto& l : core.stack.logs(r.service, tail)) {
    plan.prelude += fmt::format("event: log\ndata: {}\n\n", json::serialize(log_line_json(r.service, l)));
    plan.skip_until_ns = l.time_ns;
  }
  return Reply{Response{}, std::move(plan)};
}

}  // namespace

asio::awaitable<Reply> handle(ControlServer::Core& core, const Request& req, bool tcp) {
  // On TCP the Host comes first: a DNS-rebinding page is refused before anything else.
  if (tcp && !host_allowed(req[http::field::host]))
    co_return error(403, "the Host header must name the loopback (localhost, 127.0.0.1 or [::1])");
  if (!origin_allowed(req[http::field::origin])) co_return error(403, "requests from other origins are refused");
  auto target = parse_target(req.target());
  if (!target) co_return error(400, "malformed request target");
  Routed routed = route(req.method_string(), *target);
  if (!routed.route) {
    if (routed.status == 405) co_return error(405, fmt::format("{} is not allowed here", std::string(req.method_string())));
    co_return error(404, "no such endpoint");
  }
  if (routed.route->endpoint == Endpoint::login) {
    // The one-time link is its own credential; it exists only on TCP, for browsers.
    auto it = target->query.find("nonce");
    if (!tcp || it == target->query.end() || !core.spend_login(it->second))
      co_return error(403, "this login link is unknown or was already used");
    Response res{http::status::see_other, 11};
    res.set(http::field::location, "/");
    res.set(http::field::set_cookie,
            fmt::format("corral_session={}; HttpOnly; SameSite=Strict; Path=/", core.session));
    res.set(http::field::cache_control, "no-store");
    co_return reply(std::move(res));
  }
  if (tcp) {
    std::string token = bearer_token(req[http::field::authorization]);
    if (token.empty()) token = std::string(req["X-Corral-Token"]);
    bool ok = token_equal(token, core.options.token) ||
              token_equal(cookie_value(req[http::field::cookie], "corral_session"), core.session);
    if (!ok) {
      Response res = error_response(401, "a valid token is required (Authorization: Bearer TOKEN)");
      res.set(http::field::www_authenticate, "Bearer");
      co_return reply(std::move(res));
    }
  }
  const Route& r = *routed.route;
  json::object body;
  if (req.method() == http::verb::post) {
    // The content type is what keeps a cross-site form or `text/plain` fetch out: a
    // browser sends those without asking first, and never with application/json.
    if (!is_json_type(req[http::field::content_type]))
      co_return error(415, "a POST needs Content-Type: application/json");
    if (!req.body().empty()) {
      boost::system::error_code ec;
      json::value v = json::parse(req.body(), ec);
      if (ec || !v.is_object()) co_return error(400, "the body must be a JSON object");
      body = std::move(v.as_object());
    }
  }
  if (!r.service.empty() && !core.names.count(r.service))
    co_return error(404, fmt::format("stack '{}' has no service '{}'", core.stack.name(), r.service));
  try {
    switch (r.endpoint) {
      case Endpoint::stack: {
        json::object o = stack_json(core.stack.name(), core.stack.status());
        o["pid"] = static_cast<std::int64_t>(::getpid());
        o["api_version"] = 1;
        co_return reply(json_response(200, o));
      }
      case Endpoint::services: {
        json::array rows;
        for (const auto& s : core.stack.status()) rows.push_back(row_json(core, s));
        json::object o;
        o["services"] = std::move(rows);
        co_return reply(json_response(200, o));
      }
      case Endpoint::service:
        co_return reply(json_response(200, row_json(core, core.stack.status(r.service))));
      case Endpoint::service_logs: {
        long tail = -1;
        if (auto it = target->query.find("tail"); it != target->query.end()) {
          std::size_t used = 0;
          try {
            tail = std::stol(it->second, &used);
          } catch (const std::exception&) {
            used = 0;
          }
          if (used == 0 || used != it->second.size() || tail < 0) co_return error(400, "tail must be a number >= 0");
        }
        if (truthy(target->query, "follow"))
          co_return open_stream(core, r, *target, target->query.count("tail") ? tail : 10);
        json::object o;
        o["service"] = r.service;
        o["lines"] = tail_json(core.stack, r.service, tail);
        co_return reply(json_response(200, o));
      }
      case Endpoint::service_action:
        co_return co_await service_action(core, r, body);
      case Endpoint::events:
        co_return open_stream(core, r, *target);
      case Endpoint::stack_stop: {
        auto timeout = seconds_field(body, "timeout");
        if (timeout && *timeout < 0) co_return error(400, "\"timeout\" must be a number of seconds >= 0");
        auto p = core.stack.stop({});
        core.note_stop_request();
        if (!co_await core.await_ready(p, timeout.value_or(-1))) co_return timeout_reply(*timeout);
        co_return outcome_reply(core, "", p->get());
      }
      case Endpoint::metrics: {
        Response res{http::status::ok, 11};
        res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        res.body() = core.stack.prometheus();
        co_return reply(std::move(res));
      }
      case Endpoint::metrics_json: {
        json::object services;
        std::map<std::string, ServiceStatus> rows;
        for (auto& row : core.stack.status()) rows.emplace(row.name, std::move(row));
        for (const auto& x : core.stack.sample()) {
          json::object o;
          o["pid"] = x.pid > 0 ? json::value(x.pid) : json::value(nullptr);
          o["processes"] = x.processes;
          o["cpu_seconds"] = x.cpu_seconds;
          o["rss_bytes"] = x.rss_bytes;
          o["open_fds"] = x.open_fds;
          o["threads"] = x.threads;
          if (auto it = rows.find(x.service); it != rows.end()) {
            o["state"] = std::string(to_string(it->second.state));
            o["restarts"] = it->second.restarts;
            o["log_lines"] = it->second.log_lines;
            o["log_dropped"] = it->second.log_dropped;
          }
          services[x.service] = std::move(o);
        }
        json::object out;
        out["services"] = std::move(services);
        co_return reply(json_response(200, out));
      }
      case Endpoint::login_url: {
        json::object o;
        try {
          // {"serve": true}: turn loopback TCP on first if it is off (`corral dashboard`).
          if (auto it = body.find("serve"); it != body.end() && it->value().is_bool() && it->value().as_bool())
            core.listen_tcp();
          o["url"] = core.new_login_url();
        } catch (const Error& e) {
          co_return error(409, e.what());
        }
        co_return reply(json_response(200, o));
      }
      case Endpoint::login:
        break;  // answered above
      case Endpoint::samples:
        co_return samples_reply(core, *target);
      case Endpoint::runs:
        co_return runs_reply(core);
      case Endpoint::page:
        co_return page_reply(core, req, r.action);
      case Endpoint::openapi: {
        Response res{http::status::ok, 11};
        res.set(http::field::content_type, "application/json");
        res.body() = core.options.openapi.empty() ? "{}" : core.options.openapi;
        co_return reply(std::move(res));
      }
    }
  } catch (const std::exception& e) {
    // The engine is gone (interpreter exit) or refused: the client hears why.
    co_return error(503, e.what());
  }
  co_return error(404, "no such endpoint");
}

}  // namespace corral::control
