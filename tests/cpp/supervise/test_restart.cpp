#include "corral/supervise/restart.hpp"

#include <gtest/gtest.h>

using namespace corral;

namespace {
RestartSpec policy(RestartSpec::Policy p) {
  RestartSpec r;
  r.policy = p;
  r.backoff = 0.1;
  r.max_backoff = 1.0;
  r.jitter = 0.0;
  return r;
}
}  // namespace

TEST(Restart, BackoffDoublesUpToTheCap) {
  auto r = policy(RestartSpec::Policy::always);
  EXPECT_DOUBLE_EQ(restart_delay(r, 0, 0.5), 0.1);
  EXPECT_DOUBLE_EQ(restart_delay(r, 1, 0.5), 0.2);
  EXPECT_DOUBLE_EQ(restart_delay(r, 3, 0.5), 0.8);
  EXPECT_DOUBLE_EQ(restart_delay(r, 4, 0.5), 1.0);
  EXPECT_DOUBLE_EQ(restart_delay(r, 1000, 0.5), 1.0);
}

TEST(Restart, JitterStaysWithinItsFraction) {
  auto r = policy(RestartSpec::Policy::always);
  r.jitter = 0.2;
  EXPECT_DOUBLE_EQ(restart_delay(r, 0, 0.0), 0.08);
  EXPECT_NEAR(restart_delay(r, 0, 0.999999), 0.12, 1e-6);
}

TEST(Restart, PolicyDecidesOnExitCode) {
  ExitInfo ok{0, false, 0}, bad{3, false, 0}, killed{137, true, 9};
  auto no = policy(RestartSpec::Policy::no);
  auto onf = policy(RestartSpec::Policy::on_failure);
  auto always = policy(RestartSpec::Policy::always);
  EXPECT_EQ(decide_restart(no, bad, 0, true, false, 0.5).event, Event::exit_final);
  EXPECT_EQ(decide_restart(onf, ok, 0, true, false, 0.5).event, Event::exit_final);
  EXPECT_EQ(decide_restart(onf, bad, 0, true, false, 0.5).event, Event::exit_restart);
  EXPECT_EQ(decide_restart(onf, killed, 0, true, false, 0.5).event, Event::exit_restart);
  EXPECT_EQ(decide_restart(always, ok, 0, true, false, 0.5).event, Event::exit_restart);
}

TEST(Restart, LimitAndExitBeforeReady) {
  auto r = policy(RestartSpec::Policy::on_failure);
  r.max_restarts = 2;
  ExitInfo bad{1, false, 0};
  EXPECT_EQ(decide_restart(r, bad, 1, true, false, 0.5).event, Event::exit_restart);
  auto d = decide_restart(r, bad, 2, true, false, 0.5);
  EXPECT_EQ(d.event, Event::exit_failed);
  EXPECT_STREQ(d.why, "restart limit reached");
  auto no = policy(RestartSpec::Policy::no);
  EXPECT_EQ(decide_restart(no, bad, 0, false, true, 0.5).event, Event::exit_failed);
  EXPECT_EQ(decide_restart(no, bad, 0, true, true, 0.5).event, Event::exit_final);
}

TEST(Restart, CleanExitWithNoRestartsLeftIsNotAFailure) {
  auto r = policy(RestartSpec::Policy::always);
  r.max_restarts = 0;
  EXPECT_EQ(decide_restart(r, ExitInfo{0, false, 0}, 0, true, false, 0.5).event, Event::exit_final);
  EXPECT_EQ(decide_restart(r, ExitInfo{1, false, 0}, 0, true, false, 0.5).event, Event::exit_failed);
}
