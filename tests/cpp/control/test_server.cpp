// The control server with a real engine and real sockets: the lifetimes that only a
// sanitizer run can vouch for (a server stopped with requests and streams in flight, a
// request's result set after its server is gone). The API's answers themselves are
// checked in tests/python/test_control.py.
#include "corral/control/server.hpp"
#include "corral/control/views.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "support/engine_fixture.hpp"

using namespace corral;
using namespace corral::control;
using namespace corral::fixture;

namespace {

int connect_to(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  timeval tv{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

void send_all(int fd, const std::string& s) { ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), (ssize_t)s.size()); }

// Reads until `want` appears (or the peer closes, or 60 s pass).
std::string read_until(int fd, const std::string& want) {
  std::string got;
  char buf[4096];
  while (got.find(want) == std::string::npos) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

std::string post(const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

}  // namespace

TEST(ControlServer, AnswersAndRemovesItsSocket) {
  TempDir dir;
  auto engine = Engine::create();
  auto stack = engine->create_stack(stack_of({helper("a", {"print", "hi", "pause"})}));
  ASSERT_TRUE(stack->start({})->wait_for(30));
  std::string path = dir.path + "/s.sock";
  {
    ControlServer server(*stack, ServerOptions{.unix_path = path});
    int fd = connect_to(path);
    send_all(fd, "GET /v1/services/a HTTP/1.1\r\nHost: x\r\n\r\n");
    auto answer = read_until(fd, "\"log_dropped\"");
    EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
    EXPECT_NE(answer.find("\"state\":\"ready\""), std::string::npos) << answer;
    ::close(fd);
    // A second server at the same path is refused while this one answers.
    EXPECT_THROW({ ControlServer second(*stack, ServerOptions{.unix_path = path}); }, Error);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  // A socket file left by a dead owner is replaced.
  int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(stale);
  ASSERT_TRUE(std::filesystem::exists(path));
  { ControlServer again(*stack, ServerOptions{.unix_path = path}); }
  EXPECT_TRUE(stack->close()->wait_for(30));
}

TEST(ControlServer, StopsWithRequestsAndStreamsInFlight) {
  TempDir dir;
  auto engine = Engine::create();
  auto stack = engine->create_stack(stack_of({helper("a", {"print", "hi", "pause"})}));
  ASSERT_TRUE(stack->start({})->wait_for(30));
  std::string path = dir.path + "/s.sock";
  auto server = std::make_unique<ControlServer>(*stack, ServerOptions{.unix_path = path});
  // A wait that never ends (no such line will come), a stream, and a half-sent request.
  int waiting = connect_to(path);
  send_all(waiting, post("/v1/services/a/wait_log", R"({"regex": "never"})"));
  int stream = connect_to(path);
  send_all(stream, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_NE(read_until(stream, "corral events").find("text/event-stream"), std::string::npos);
  int half = connect_to(path);
  send_all(half, "GET /v1/stack HTTP/1.1\r\nHo");
  // Events flow to the stream meanwhile.
  ASSERT_TRUE(stack->stop({})->wait_for(30));
  EXPECT_NE(read_until(stream, "\"state\":\"stopped\"").find("\"state\":\"stopped\""), std::string::npos);
  server.reset();  // every connection goes; the wait's result comes later, to nobody
  char c;
  EXPECT_EQ(::recv(waiting, &c, 1, 0), 0);  // closed, never answered
  ::close(waiting);
  ::close(stream);
  ::close(half);
  // Closing the stack settles the wait_log request whose server is gone.
  EXPECT_TRUE(stack->close()->wait_for(30));
}

TEST(ControlServer, ServesTheRunsDocumentItsOwnerPublishes) {
  TempDir dir;
  auto engine = Engine::create();
  auto stack = engine->create_stack(stack_of({helper("a", {"pause"})}));
  std::string path = dir.path + "/s.sock";
  ControlServer server(*stack, ServerOptions{.unix_path = path});
  auto get_runs = [&] {
    int fd = connect_to(path);
    send_all(fd, "GET /v1/runs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    auto answer = read_until(fd, "\x01");  // to the end: the server closes
    ::close(fd);
    return answer;
  };
  // Nothing published: no history, said so, with an empty list.
  auto none = get_runs();
  EXPECT_EQ(none.rfind("HTTP/1.1 200", 0), 0u) << none;
  EXPECT_NE(none.find(R"("history":false)"), std::string::npos) << none;
  EXPECT_NE(none.find(R"("runs":[])"), std::string::npos) << none;
  server.set_document("runs", R"({"history": true, "current": 7, "runs": [{"run": 7, "services": []}]})");
  auto some = get_runs();
  EXPECT_NE(some.find(R"({"history":true,"current":7,"runs":[{"run":7,"services":[]}]})"), std::string::npos) << some;
  // Only known names, only JSON objects; a refused document leaves the last one served.
  EXPECT_THROW(server.set_document("other", "{}"), Error);
  EXPECT_THROW(server.set_document("runs", "[1, 2]"), Error);
  EXPECT_THROW(server.set_document("runs", "{\"history\": "), Error);
  EXPECT_NE(get_runs().find(R"("current":7)"), std::string::npos);
  server.stop();
  EXPECT_TRUE(stack->close()->wait_for(30));
}

TEST(ControlViews, TellsCheckFailuresFromOtherReasons) {
  // The engine's own words (engine/check_runner.cpp, engine/capture.cpp, checks/pattern.cpp).
  EXPECT_TRUE(is_check_failure(State::unhealthy, "liveness check failed 3 times: connection refused"));
  EXPECT_TRUE(is_check_failure(State::failed, "not ready within 5s (http check: status 500)"));
  EXPECT_TRUE(is_check_failure(State::failed, "log pattern '(a+)+$' is too costly to match on a line of 40 bytes"));
  // Another service's failure, an exit, a spawn error, and other states are not.
  EXPECT_FALSE(is_check_failure(State::failed, "dependency 'db' failed: not ready within 5s (tcp check: refused)"));
  EXPECT_FALSE(is_check_failure(State::failed, "restart limit reached (exit code 1)"));
  EXPECT_FALSE(is_check_failure(State::failed, "command not found: nope"));
  EXPECT_FALSE(is_check_failure(State::stopped, "liveness check failed 3 times: refused"));
  EXPECT_FALSE(is_check_failure(State::unhealthy, ""));
}
