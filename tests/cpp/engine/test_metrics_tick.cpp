// The engine's metrics: the sampler thread ticks at the interval and not at 0; counters
// follow a crash loop; prometheus() and samples() from other threads while it runs (the
// case ThreadSanitizer is for).
#include "corral/engine/engine.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "support/engine_fixture.hpp"

using namespace corral;
using namespace corral::fixture;

TEST(MetricsTick, SamplesAtTheIntervalAndNotAtZero) {
  auto engine = Engine::create();
  auto on = engine->create_stack(stack_of({helper("a", {"pause"})}));
  auto off = engine->create_stack(stack_of({helper("b", {"pause"})}));
  on->configure_metrics(0.02, false);
  ASSERT_TRUE(on->start({})->wait_for(30));
  ASSERT_TRUE(off->start({})->wait_for(30));
  ASSERT_TRUE(eventually([&] { return on->samples("", 0).size() >= 5; }));
  EXPECT_GE(on->metrics()->tick_cost().ticks, 5u);
  EXPECT_EQ(off->metrics()->tick_cost().ticks, 0u);
  EXPECT_TRUE(off->samples("", 0).empty());
  auto now = off->metrics_now();  // on demand, on this thread
  ASSERT_EQ(now.size(), 1u);
  EXPECT_EQ(now[0].processes, 1);
  EXPECT_TRUE(on->close()->wait_for(30));
  EXPECT_TRUE(off->close()->wait_for(30));
}

TEST(MetricsTick, CountersFollowACrashLoopWhileOtherThreadsRead) {
  auto engine = Engine::create();
  auto svc = helper("c", {"print", "x", "exit", "3"});
  svc.restart.policy = RestartSpec::Policy::on_failure;
  svc.restart.backoff = 0.001;
  svc.restart.max_backoff = 0.005;
  svc.restart.max_restarts = 20;
  auto stack = engine->create_stack(stack_of({svc, helper("p", {"pause"})}));
  stack->configure_metrics(0.01, false);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done) {
      auto text = stack->prometheus();
      EXPECT_NE(text.find("corral_service_up"), std::string::npos);
      (void)stack->samples("c", 0);
    }
  });
  bool started = stack->start({"p"})->wait_for(30);
  stack->start({"c"});
  bool failed = stack->wait_state("c", State::failed)->wait_for(60);
  done = true;
  reader.join();
  ASSERT_TRUE(started && failed);
  auto c = stack->metrics()->counters()[0];
  EXPECT_EQ(c.starts, 21u);
  EXPECT_EQ(c.restarts[static_cast<int>(RestartReason::exit)], 20u);
  EXPECT_EQ(c.exit_codes.at(3), 21u);
  EXPECT_EQ(stack->metrics()->log_counts(0)[0], 21u);
  auto text = stack->prometheus();
  EXPECT_NE(text.find("corral_service_exits_total{stack=\"t\",service=\"c\",code=\"3\"} 21\n"), std::string::npos)
      << text;
  EXPECT_TRUE(stack->close()->wait_for(30));
}
