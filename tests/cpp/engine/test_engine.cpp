// The engine end to end, with real processes (the shared helper program).
#include "corral/engine/engine.hpp"

#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "support/engine_fixture.hpp"

using namespace corral;
using namespace corral::fixture;

namespace {

CheckSpec tcp(std::string port, double start_timeout = 20) {
  CheckSpec c;
  c.kind = CheckSpec::Kind::tcp;
  c.port = std::move(port);
  c.interval = 0.02;
  c.start_timeout = start_timeout;
  return c;
}

// Children of this process that have exited and nobody reaped.
int zombie_children() {
  int zombies = 0;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream children(task.path() / "children");
    pid_t pid;
    while (children >> pid) {
      std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
      std::string all((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
      auto close = all.rfind(')');
      if (close != std::string::npos && close + 2 < all.size() && all[close + 2] == 'Z') ++zombies;
    }
  }
  return zombies;
}

ServiceStatus find(const std::vector<ServiceStatus>& rows, const std::string& name) {
  for (const auto& r : rows)
    if (r.name == name) return r;
  ADD_FAILURE() << "no row " << name;
  return {};
}

}  // namespace

TEST(Engine, StartsInDependencyOrderWithPortsAndStops) {
  auto engine = Engine::create();
  auto db = helper("db", {"listen", "CORRAL_PORT_MAIN", "pause"});
  db.ports = {"main"};
  db.ready = tcp("main");
  auto api = helper("api", {"env", "DB", "listen", "PORT", "pause"});
  api.ports = {"http"};
  api.env = {{"DB", "127.0.0.1:{{db.port.main}}"}};
  api.depends_on = {{"db", Condition::ready}};
  api.ready = tcp("http");
  auto stack = engine->create_stack(stack_of({api, db}));
  auto started = wait(stack->start({}));
  ASSERT_TRUE(started.ok) << started.service << ": " << started.message;
  auto rows = stack->status();
  auto d = find(rows, "db"), a = find(rows, "api");
  EXPECT_EQ(d.state, State::ready);
  EXPECT_EQ(a.state, State::ready);
  EXPECT_NE(d.ports.at("main"), a.ports.at("http"));
  EXPECT_LE(d.ready_at, a.started_at);  // api was spawned only once db was ready
  auto logs = stack->logs("api", -1);
  ASSERT_FALSE(logs.empty());
  EXPECT_EQ(logs[0].text, "env DB=127.0.0.1:" + std::to_string(d.ports.at("main")));
  ASSERT_TRUE(wait(stack->stop({})).ok);
  rows = stack->status();
  EXPECT_EQ(find(rows, "db").state, State::stopped);
  EXPECT_EQ(find(rows, "api").state, State::stopped);
  EXPECT_EQ(find(rows, "api").pid, 0);
}

TEST(Engine, CrashLoopBacksOffThenFails) {
  auto engine = Engine::create();
  auto s = helper("crash", {"stderr", "boom", "exit", "3"});
  s.restart.policy = RestartSpec::Policy::on_failure;
  s.restart.backoff = 0.01;
  s.restart.max_backoff = 0.05;
  s.restart.max_restarts = 3;
  auto stack = engine->create_stack(stack_of({s}));
  stack->start({});
  auto failed = wait(stack->wait_state("crash", State::failed));
  EXPECT_TRUE(failed.ok) << failed.message;
  auto row = stack->status("crash");
  EXPECT_EQ(row.restarts, 3);
  EXPECT_EQ(row.exit_code, 3);
  EXPECT_NE(row.reason.find("restart limit reached (exit code 3)"), std::string::npos) << row.reason;
  EXPECT_EQ(stack->logs("crash", -1).size(), 4u);  // one "boom" per run
}

TEST(Engine, ReadinessDeadlineFailsDependentsButNotOthers) {
  auto engine = Engine::create();
  auto silent = helper("silent", {"pause"});
  CheckSpec never;
  never.kind = CheckSpec::Kind::log;
  never.pattern = "will never be printed";
  never.start_timeout = 0.3;
  silent.ready = never;
  auto dependent = helper("dependent", {"pause"});
  dependent.depends_on = {{"silent", Condition::ready}};
  auto other = helper("other", {"print", "hi", "pause"});
  auto stack = engine->create_stack(stack_of({silent, dependent, other}));
  auto outcome = wait(stack->start({}));
  EXPECT_FALSE(outcome.ok);
  EXPECT_EQ(outcome.service, "silent");
  EXPECT_NE(outcome.message.find("not ready within 0.3s"), std::string::npos) << outcome.message;
  EXPECT_TRUE(wait(stack->wait_state("dependent", State::failed)).ok);
  auto rows = stack->status();
  EXPECT_EQ(find(rows, "dependent").pid, 0);  // never spawned
  EXPECT_NE(find(rows, "dependent").reason.find("dependency 'silent' failed"), std::string::npos);
  EXPECT_EQ(find(rows, "other").state, State::ready);
  EXPECT_TRUE(wait(stack->wait_state("silent", State::failed)).ok);
  wait(stack->close());
}

TEST(Engine, StopEscalatesToKillForTermIgnoringChild) {
  auto engine = Engine::create();
  auto stubborn = helper("stubborn", {"ignore", "TERM", "print", "armed", "pause"});
  stubborn.stop_timeout = 0.3;
  CheckSpec armed;
  armed.kind = CheckSpec::Kind::log;
  armed.pattern = "^armed$";
  stubborn.ready = armed;
  auto stack = engine->create_stack(stack_of({stubborn}));
  ASSERT_TRUE(wait(stack->start({})).ok);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait(stack->stop({})).ok);
  double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(took, 0.25);
  auto row = stack->status("stubborn");
  EXPECT_EQ(row.state, State::stopped);
  EXPECT_EQ(row.exit_code, -SIGKILL);
}

TEST(Engine, SpawnErrorsFailWithoutRestartStorm) {
  auto engine = Engine::create();
  ServiceSpec missing;
  missing.name = "missing";
  missing.argv = {"corral-definitely-missing-binary"};
  missing.restart.policy = RestartSpec::Policy::always;
  auto stack = engine->create_stack(stack_of({missing}));
  auto outcome = wait(stack->start({}));
  EXPECT_FALSE(outcome.ok);
  EXPECT_EQ(outcome.message, "command not found: corral-definitely-missing-binary");
  auto row = stack->status("missing");
  EXPECT_EQ(row.state, State::failed);
  EXPECT_EQ(row.restarts, 0);
}

TEST(Engine, CompletedConditionWaitsForASuccessfulExit) {
  auto engine = Engine::create();
  auto migrate = helper("migrate", {"sleep", "0.1", "print", "migrated"});
  auto app = helper("app", {"print", "app up", "pause"});
  app.depends_on = {{"migrate", Condition::completed}};
  auto stack = engine->create_stack(stack_of({migrate, app}));
  ASSERT_TRUE(wait(stack->start({})).ok);
  auto rows = stack->status();
  EXPECT_EQ(find(rows, "migrate").state, State::exited);
  EXPECT_EQ(find(rows, "migrate").exit_code, 0);
  EXPECT_EQ(find(rows, "app").state, State::ready);
}

TEST(Engine, ChattyChildNeverBlocksAndMemoryStaysBounded) {
  auto engine = Engine::create();
  auto chatty = helper("chatty", {"flood", "20000000", "print", "done", "pause"});
  chatty.log_lines = 1000;
  auto quiet = helper("quiet", {"print", "hello", "pause"});
  auto stack = engine->create_stack(stack_of({chatty, quiet}));
  ASSERT_TRUE(wait(stack->start({})).ok);
  EXPECT_TRUE(wait(stack->wait_log("chatty", "^done$", 0), 60).ok);
  auto row = stack->status("chatty");
  EXPECT_GE(row.log_lines, 200000u);
  EXPECT_LE(stack->logs("chatty", -1).size(), 1000u);
  EXPECT_TRUE(wait(stack->wait_log("quiet", "hello", 0)).ok);
}

TEST(Engine, RejectsCyclesBeforeAnythingRuns) {
  auto engine = Engine::create();
  auto a = helper("a", {"pause"});
  auto b = helper("b", {"pause"});
  a.depends_on = {{"b", Condition::ready}};
  b.depends_on = {{"a", Condition::started}};
  try {
    engine->create_stack(stack_of({a, b}));
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "dependency cycle: a -> b -> a");
  }
}

TEST(Engine, UnknownTemplateKeyIsAConfigError) {
  auto engine = Engine::create();
  auto a = helper("a", {"print", "{{port.http}}"});
  try {
    engine->create_stack(stack_of({a}));
    FAIL() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("service 'a': command"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no port named 'http'"), std::string::npos) << e.what();
  }
}

TEST(Engine, StartBudgetSpansRestartsBeforeReadiness) {
  // It crashes at once, forever, before ever being ready: the restart policy alone would
  // loop without end; the start budget (start_timeout) ends it.
  auto engine = Engine::create();
  auto s = helper("crashy", {"exit", "1"});
  s.restart.policy = RestartSpec::Policy::always;
  s.restart.backoff = 0.01;
  s.restart.max_backoff = 0.02;
  CheckSpec never;
  never.kind = CheckSpec::Kind::log;
  never.pattern = "never";
  never.start_timeout = 0.4;
  s.ready = never;
  auto stack = engine->create_stack(stack_of({s}));
  auto outcome = wait(stack->start({}));
  EXPECT_FALSE(outcome.ok);
  EXPECT_NE(outcome.message.find("not ready within 0.4s"), std::string::npos) << outcome.message;
  auto row = stack->status("crashy");
  EXPECT_EQ(row.state, State::failed);
  EXPECT_GE(row.restarts, 2);
  // Settled: waiting for it to start again fails at once instead of waiting.
  auto again = wait(stack->wait_state("crashy", State::starting));
  EXPECT_FALSE(again.ok);
  EXPECT_NE(again.message.find("is failed"), std::string::npos) << again.message;
}

TEST(Engine, LosslessReaderGetsEveryLineInOrderAndEveryStateChange) {
  // A reader slower than the service: the service is slowed down (its pipe is left unread)
  // instead of lines being dropped.
  auto engine = Engine::create();
  const int n = 200000;
  auto s = helper("chatty", {"lines", std::to_string(n), "line"});
  auto stack = engine->create_stack(stack_of({s}));
  stack->subscribe(true);
  ASSERT_TRUE(wait(stack->start({})).ok);
  int next = 0;
  bool exited = false;
  std::vector<State> states;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!exited && std::chrono::steady_clock::now() < deadline) {
    for (const auto& e : stack->events(1.0, 500)) {
      ASSERT_NE(e.kind, EngineEvent::Kind::dropped);
      if (e.kind == EngineEvent::Kind::log) {
        ASSERT_EQ(e.text, "line " + std::to_string(next)) << "lost or reordered";
        ++next;
      } else {
        states.push_back(e.state);
        exited = e.state == State::exited;
      }
    }
    // A slow reader: a 16 MiB budget holds ~170k of these events, less than the total.
    if (next < 20000) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  EXPECT_EQ(next, n);
  EXPECT_TRUE(exited);
  ASSERT_GE(states.size(), 3u);
  EXPECT_EQ(states.front(), State::starting);
  wait(stack->close());
}

TEST(Engine, AStartRightAfterTheDeadlineWaitsForTheReap) {
  auto engine = Engine::create();
  auto s = helper("slow", {"ignore", "TERM", "pause"});
  CheckSpec never;
  never.kind = CheckSpec::Kind::log;
  never.pattern = "never";
  never.start_timeout = 0.2;
  s.ready = never;
  auto stack = engine->create_stack(stack_of({s}));
  for (int i = 0; i < 5; ++i) {
    auto first = stack->start({});
    ASSERT_TRUE(wait(stack->wait_state("slow", State::failed)).ok);
    // The deadline's SIGKILL is sent; the reap may not have happened yet. Start again:
    // refilling the slot before the reap used to lose the first process, a zombie forever.
    auto again = stack->start({});
    EXPECT_FALSE(wait(first).ok);
    EXPECT_FALSE(wait(again).ok);
    EXPECT_EQ(zombie_children(), 0) << "round " << i;
  }
  wait(stack->close());
}

TEST(Engine, EveryRequestCompletesWhenTheStackCloses) {
  auto engine = Engine::create();
  auto s = helper("quiet", {"pause"});
  auto stack = engine->create_stack(stack_of({s}));
  ASSERT_TRUE(wait(stack->start({})).ok);
  auto log = stack->wait_log("quiet", "never printed", 0);
  auto state = stack->wait_state("quiet", State::backoff);
  auto closed = stack->close();
  EXPECT_TRUE(wait(closed).ok);
  auto l = wait(log);
  EXPECT_FALSE(l.ok);
  EXPECT_NE(l.message.find("closed"), std::string::npos) << l.message;
  EXPECT_FALSE(wait(state).ok);
}
