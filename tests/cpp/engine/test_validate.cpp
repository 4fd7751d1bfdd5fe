// validate_stack: the C++ side refuses a bad spec with a ConfigError, whoever built it.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "corral/engine/engine.hpp"

using namespace corral;

namespace {

StackSpec one(ServiceSpec svc) {
  StackSpec s;
  s.name = "t";
  s.services = {std::move(svc)};
  return s;
}

ServiceSpec service(std::string name = "a") {
  ServiceSpec s;
  s.name = std::move(name);
  s.argv = {"/bin/true"};
  return s;
}

// The message of the ConfigError validate_stack throws, or "" when it accepts the spec.
std::string error_of(const StackSpec& spec) {
  try {
    validate_stack(spec);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool mentions(const std::string& message, const std::string& part) {
  return message.find(part) != std::string::npos;
}

}  // namespace

TEST(Validate, AcceptsAnOrdinarySpec) { EXPECT_EQ(error_of(one(service())), ""); }

TEST(Validate, RefusesNamesThatReachFilesAndLabels) {
  const std::vector<std::string> names = {"", ".", "..", "../x", "a/b", "a\nb", "a\"b", "-x", std::string(71, 'a')};
  for (const auto& bad : names) {
    EXPECT_NE(error_of(one(service(bad))), "") << bad;
    auto stack = one(service());
    stack.name = bad;
    if (!bad.empty()) EXPECT_TRUE(mentions(error_of(stack), "invalid stack name")) << bad;
  }
  // 64 characters plus a replica suffix such as "-10000" is fine.
  EXPECT_EQ(error_of(one(service(std::string(64, 'a') + "-10000"))), "");
}

TEST(Validate, RefusesNulBytes) {
  auto a = service();
  a.argv.push_back(std::string("x\0y", 3));
  EXPECT_TRUE(mentions(error_of(one(a)), "NUL")) << error_of(one(a));
  auto b = service();
  b.env["A"] = std::string("x\0y", 3);
  EXPECT_TRUE(mentions(error_of(one(b)), "NUL"));
}

TEST(Validate, RefusesDurationsThatOverflowOrAreNaN) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {nan, inf, 1e10, -1.0}) {
    auto a = service();
    a.stop_timeout = bad;
    EXPECT_TRUE(mentions(error_of(one(a)), "stop_timeout")) << bad;
    auto b = service();
    b.restart.reset_after = bad;
    EXPECT_TRUE(mentions(error_of(one(b)), "reset_after")) << bad;
    auto c = service();
    c.ready = CheckSpec{};
    c.ready->kind = CheckSpec::Kind::notify;
    c.ready->start_timeout = bad;
    EXPECT_TRUE(mentions(error_of(one(c)), "start_timeout")) << bad;
  }
  auto ok = service();
  ok.stop_timeout = 1e9;  // what the Python layer sends for "forever"
  EXPECT_EQ(error_of(one(ok)), "");
}

TEST(Validate, LongNumericPortIsAConfigError) {
  // std::stol threw std::out_of_range (an IndexError in Python) on 20 digits.
  auto a = service();
  a.ready = CheckSpec{};
  a.ready->kind = CheckSpec::Kind::tcp;
  a.ready->port = std::string(30, '9');
  EXPECT_TRUE(mentions(error_of(one(a)), "out of range"));
}
