// What the tests that run a real engine share: services that run the shared helper program
// (tests/helper/corral_helper.c, whose modes are its arguments), a stack of them, and waits
// with generous deadlines (the suite runs on loaded 2-core machines, under sanitizers too).
#pragma once

#include <stdlib.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "corral/engine/engine.hpp"

namespace corral::fixture {

// A service named `name` that runs the helper program with `args`, e.g. {"pause"} or
// {"print", "hi", "exit", "3"}.
inline ServiceSpec helper(std::string name, std::vector<std::string> args) {
  ServiceSpec s;
  s.name = std::move(name);
  s.argv = {CORRAL_HELPER};
  s.argv.insert(s.argv.end(), args.begin(), args.end());
  return s;
}

// A stack "t" of `services`. Its base environment is a bare PATH: the test process's own
// variables must not change what a service does.
inline StackSpec stack_of(std::vector<ServiceSpec> services) {
  StackSpec s;
  s.name = "t";
  s.services = std::move(services);
  s.base_env = {{"PATH", "/usr/bin:/bin"}};
  return s;
}

// The outcome of a request; one that does not settle within `seconds` fails the test
// instead of hanging it.
inline Outcome wait(const std::shared_ptr<Pending<Outcome>>& p, double seconds = 30) {
  EXPECT_TRUE(p->wait_for(seconds)) << "timed out";
  return p->get();
}

// Polls `pred` until it holds or `seconds` pass, for what no engine waiter reports (a
// sampler's tick count, a file appearing); false at the deadline.
template <class P>
bool eventually(P pred, double seconds = 30) {
  auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// A private directory under /tmp, removed with everything in it at the end of the scope.
// Short: Unix socket paths in it must fit in sun_path.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/crlcXXXXXX";
    const char* made = ::mkdtemp(tmpl);
    EXPECT_NE(made, nullptr) << "mkdtemp failed";
    path = made ? made : "";
  }
  ~TempDir() {
    if (!path.empty()) std::filesystem::remove_all(path);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path;
};

}  // namespace corral::fixture
