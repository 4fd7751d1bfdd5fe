// The control server's request rules: routing, target parsing and the security checks,
// without a socket (tests/python/test_control.py covers them over the real one).
#include "corral/control/rules.hpp"

#include <gtest/gtest.h>
#include <signal.h>

using namespace corral::control;

TEST(ControlRules, TargetsSplitIntoDecodedSegmentsAndQuery) {
  auto t = parse_target("/v1/services/my%20svc/logs?tail=5&follow=1&x=a+b");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->segments, (std::vector<std::string>{"v1", "services", "my svc", "logs"}));
  EXPECT_EQ(t->query.at("tail"), "5");
  EXPECT_EQ(t->query.at("follow"), "1");
  EXPECT_EQ(t->query.at("x"), "a b");
  EXPECT_FALSE(parse_target("v1/stack"));            // not absolute
  EXPECT_FALSE(parse_target("/v1/%zz"));             // bad escape
  EXPECT_FALSE(parse_target("/v1/%4"));              // cut escape
  EXPECT_FALSE(parse_target("/v1/a%00b"));           // NUL
  EXPECT_FALSE(parse_target("/v1/services/../x"));   // dot segments
  EXPECT_FALSE(parse_target("/v1/services/%2e%2e"));
}

TEST(ControlRules, RoutesNameEndpointsAndTellMissingFromWrongMethod) {
  auto r = [](const char* m, const char* path) { return route(m, *parse_target(path)); };
  EXPECT_EQ(r("GET", "/v1/stack").route->endpoint, Endpoint::stack);
  EXPECT_EQ(r("POST", "/v1/stack/stop").route->endpoint, Endpoint::stack_stop);
  EXPECT_EQ(r("GET", "/v1/services").route->endpoint, Endpoint::services);
  auto svc = r("GET", "/v1/services/web");
  EXPECT_EQ(svc.route->endpoint, Endpoint::service);
  EXPECT_EQ(svc.route->service, "web");
  auto act = r("POST", "/v1/services/web/restart");
  EXPECT_EQ(act.route->endpoint, Endpoint::service_action);
  EXPECT_EQ(act.route->action, "restart");
  EXPECT_EQ(r("GET", "/v1/services/web/logs").route->endpoint, Endpoint::service_logs);
  EXPECT_EQ(r("GET", "/v1/events").route->endpoint, Endpoint::events);
  EXPECT_EQ(r("GET", "/metrics").route->endpoint, Endpoint::metrics);
  EXPECT_EQ(r("GET", "/v1/openapi.json").route->endpoint, Endpoint::openapi);
  // State changes are POST only: a GET (an <img> tag, a link) never acts.
  EXPECT_EQ(r("GET", "/v1/services/web/stop").status, 405);
  EXPECT_EQ(r("GET", "/v1/stack/stop").status, 405);
  EXPECT_EQ(r("POST", "/v1/stack").status, 405);
  EXPECT_EQ(r("GET", "/v1/services/web/exec").status, 404);
  EXPECT_EQ(r("GET", "/v2/stack").status, 404);
  // The dashboard: its page, its files by plain name, and the samples for its sparklines.
  auto page = r("GET", "/");
  EXPECT_EQ(page.route->endpoint, Endpoint::page);
  EXPECT_EQ(page.route->action, "index.html");
  auto file = r("GET", "/static/app.js");
  EXPECT_EQ(file.route->endpoint, Endpoint::page);
  EXPECT_EQ(file.route->action, "app.js");
  EXPECT_EQ(r("POST", "/").status, 405);
  EXPECT_EQ(r("GET", "/static").status, 404);
  EXPECT_EQ(r("GET", "/static/a/b.js").status, 404);
  EXPECT_EQ(r("GET", "/v1/samples").route->endpoint, Endpoint::samples);
  EXPECT_EQ(r("POST", "/v1/samples").status, 405);
  EXPECT_EQ(r("GET", "/v1/runs").route->endpoint, Endpoint::runs);
  EXPECT_EQ(r("POST", "/v1/runs").status, 405);
}

TEST(ControlRules, OnlyLoopbackHostsPass) {
  for (const char* ok : {"localhost", "localhost:8080", "LOCALHOST", "localhost.", "127.0.0.1", "127.0.0.1:1",
                         "[::1]", "[::1]:9000"})
    EXPECT_TRUE(host_allowed(ok)) << ok;
  for (const char* bad : {"", "evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.nip.io",
                          "127.0.0.2", "[::2]", "localhost:x", "localhost:", "[::1]x", "0.0.0.0"})
    EXPECT_FALSE(host_allowed(bad)) << bad;
}

TEST(ControlRules, OriginMustBeAbsentOrLoopback) {
  EXPECT_TRUE(origin_allowed(""));
  EXPECT_TRUE(origin_allowed("http://localhost:8000"));
  EXPECT_TRUE(origin_allowed("http://127.0.0.1:1234"));
  EXPECT_TRUE(origin_allowed("https://[::1]"));
  EXPECT_FALSE(origin_allowed("null"));
  EXPECT_FALSE(origin_allowed("http://evil.example"));
  EXPECT_FALSE(origin_allowed("http://localhost.evil.example"));
  EXPECT_FALSE(origin_allowed("file://"));
  EXPECT_FALSE(origin_allowed("http://localhost:8000/path"));
}

TEST(ControlRules, TokensCompareWhole) {
  EXPECT_TRUE(token_equal("0123456789abcdef", "0123456789abcdef"));
  EXPECT_FALSE(token_equal("0123456789abcdef", "0123456789abcdee"));
  EXPECT_FALSE(token_equal("0123456789abcdef", "0123456789abcde"));
  EXPECT_FALSE(token_equal("0123456789abcde", "0123456789abcdef"));
  EXPECT_FALSE(token_equal("", ""));  // an empty token never authenticates
  EXPECT_EQ(bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(bearer_token("bearer   abc "), "abc");
  EXPECT_EQ(bearer_token("Basic abc"), "");
}

TEST(ControlRules, OnlyJsonIsAJsonBody) {
  EXPECT_TRUE(is_json_type("application/json"));
  EXPECT_TRUE(is_json_type("Application/JSON; charset=utf-8"));
  EXPECT_FALSE(is_json_type("text/plain"));
  EXPECT_FALSE(is_json_type("application/x-www-form-urlencoded"));
  EXPECT_FALSE(is_json_type("multipart/form-data; boundary=x"));
  EXPECT_FALSE(is_json_type("application/jsonp"));
  EXPECT_FALSE(is_json_type(""));
}

TEST(ControlRules, SignalsByNameOrNumber) {
  EXPECT_EQ(signal_number("TERM"), SIGTERM);
  EXPECT_EQ(signal_number("sigterm"), SIGTERM);
  EXPECT_EQ(signal_number("HUP"), SIGHUP);
  EXPECT_EQ(signal_number("9"), 9);
  EXPECT_FALSE(signal_number("0"));
  EXPECT_FALSE(signal_number("65"));
  EXPECT_FALSE(signal_number("NOPE"));
  EXPECT_FALSE(signal_number(""));
  EXPECT_FALSE(signal_number("-1"));
}

TEST(ControlRules, CookiesByName) {
  EXPECT_EQ(cookie_value("a=1; corral_session=abc; b=2", "corral_session"), "abc");
  EXPECT_EQ(cookie_value("corral_session=abc", "corral_session"), "abc");
  EXPECT_EQ(cookie_value("xcorral_session=abc", "corral_session"), "");
  EXPECT_EQ(cookie_value("", "corral_session"), "");
}
