#include "corral/control/rules.hpp"

#include <signal.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <utility>

namespace corral::control {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %-decoding; '+' means a space only in a query.
std::optional<std::string> decode(std::string_view s, bool query) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && query) {
      c = ' ';
    }
    if (c == '\0') return std::nullopt;
    out.push_back(c);
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "name" or "name:port" with a port of digits only.
bool loopback_authority(std::string_view authority) {
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    if (close == std::string_view::npos) return false;
    std::string_view rest = host.substr(close + 1);
    host = host.substr(0, close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':' || rest.size() == 1) return false;
      if (!std::all_of(rest.begin() + 1, rest.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
    }
  } else if (auto colon = host.rfind(':'); colon != std::string_view::npos) {
    std::string_view port = host.substr(colon + 1);
    if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return false;
    host = host.substr(0, colon);
  }
  std::string h = lower(host);
  return h == "localhost" || h == "localhost." || h == "127.0.0.1" || h == "[::1]";
}

}  // namespace

std::optional<Target> parse_target(std::string_view target) {
  if (target.empty() || target.front() != '/') return std::nullopt;
  Target out;
  std::string_view path = target, query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  if (auto hash = query.find('#'); hash != std::string_view::npos) query = query.substr(0, hash);
  std::size_t pos = 1;
  while (pos <= path.size()) {
    auto slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    auto seg = decode(path.substr(pos, slash - pos), false);
    if (!seg || *seg == "." || *seg == "..") return std::nullopt;
    if (!seg->empty()) out.segments.push_back(std::move(*seg));
    pos = slash + 1;
  }
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    auto key = decode(pair.substr(0, eq), true);
    auto value = decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true);
    if (!key || !value) return std::nullopt;
    out.query[*key] = *value;
  }
  return out;
}

Routed route(std::string_view method, const Target& t) {
  const auto& s = t.segments;
  auto want = [&](std::string_view m, Route r) -> Routed {
    if (method != m) return {std::nullopt, 405};
    return {std::move(r), 0};
  };
  if (s.size() == 1 && s[0] == "metrics") return want("GET", {Endpoint::metrics, {}, {}});
  if (s.empty()) return want("GET", {Endpoint::page, {}, "index.html"});
  if (s.size() == 2 && s[0] == "static") return want("GET", {Endpoint::page, {}, s[1]});
  if (s.empty() || s[0] != "v1") return {std::nullopt, 404};
  if (s.size() == 2 && s[1] == "stack") return want("GET", {Endpoint::stack, {}, {}});
  if (s.size() == 3 && s[1] == "stack" && s[2] == "stop") return want("POST", {Endpoint::stack_stop, {}, {}});
  if (s.size() == 2 && s[1] == "services") return want("GET", {Endpoint::services, {}, {}});
  if (s.size() == 2 && s[1] == "events") return want("GET", {Endpoint::events, {}, {}});
  if (s.size() == 2 && s[1] == "metrics") return want("GET", {Endpoint::metrics_json, {}, {}});
  if (s.size() == 2 && s[1] == "login_url") return want("POST", {Endpoint::login_url, {}, {}});
  if (s.size() == 2 && s[1] == "login") return want("GET", {Endpoint::login, {}, {}});
  if (s.size() == 2 && s[1] == "samples") return want("GET", {Endpoint::samples, {}, {}});
  if (s.size() == 2 && s[1] == "runs") return want("GET", {Endpoint::runs, {}, {}});
  if (s.size() == 2 && s[1] == "openapi.json") return want("GET", {Endpoint::openapi, {}, {}});
  if (s.size() >= 3 && s[1] == "services") {
    if (s.size() == 3) return want("GET", {Endpoint::service, s[2], {}});
    if (s.size() == 4 && s[3] == "logs") return want("GET", {Endpoint::service_logs, s[2], {}});
    if (s.size() == 4 && (s[3] == "start" || s[3] == "stop" || s[3] == "restart" || s[3] == "signal" ||
                           s[3] == "wait" || s[3] == "wait_log"))
      return want("POST", {Endpoint::service_action, s[2], s[3]});
  }
  return {std::nullopt, 404};
}

bool host_allowed(std::string_view host) { return loopback_authority(trim(host)); }

bool origin_allowed(std::string_view origin) {
  origin = trim(origin);
  if (origin.empty()) return true;
  std::string o = lower(origin);
  for (std::string_view scheme : {"http://", "https://"})
    if (o.rfind(scheme, 0) == 0) {
      std::string_view rest = std::string_view(o).substr(scheme.size());
      if (rest.find('/') != std::string_view::npos) return false;
      return loopback_authority(rest);
    }
  return false;
}

bool token_equal(std::string_view a, std::string_view b) {
  // Every byte of the longer one is looked at whatever the others hold; the length
  // difference is folded in, not returned early.
  std::size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0 && !a.empty();
}

bool is_json_type(std::string_view content_type) {
  std::string_view type = content_type.substr(0, content_type.find(';'));
  return lower(trim(type)) == "application/json";
}

std::optional<int> signal_number(std::string_view name) {
  name = trim(name);
  if (name.empty()) return std::nullopt;
  if (std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    int n = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), n);
    if (ec != std::errc{} || p != name.data() + name.size() || n < 1 || n > 64) return std::nullopt;
    return n;
  }
  std::string up(name);
  for (auto& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (up.rfind("SIG", 0) == 0) up = up.substr(3);
  static constexpr std::array<std::pair<std::string_view, int>, 15> names{{
      {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
      {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},
      {"ALRM", SIGALRM}, {"WINCH", SIGWINCH}, {"ABRT", SIGABRT}, {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},
  }};
  for (const auto& [n, v] : names)
    if (up == n) return v;
  return std::nullopt;
}

std::string bearer_token(std::string_view authorization) {
  authorization = trim(authorization);
  if (authorization.size() < 7 || lower(authorization.substr(0, 7)) != "bearer ") return {};
  return std::string(trim(authorization.substr(7)));
}

std::string cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    auto semi = header.find(';');
    std::string_view pair = trim(header.substr(0, semi));
    header = semi == std::string_view::npos ? std::string_view{} : header.substr(semi + 1);
    auto eq = pair.find('=');
    if (eq != std::string_view::npos && trim(pair.substr(0, eq)) == name) return std::string(trim(pair.substr(eq + 1)));
  }
  return {};
}

}  // namespace corral::control
