#include "corral/supervise/state_machine.hpp"

#include <gtest/gtest.h>

using namespace corral;

TEST(StateMachine, NormalLife) {
  State s = State::pending;
  s = *transition(s, Event::spawned);
  EXPECT_EQ(s, State::starting);
  s = *transition(s, Event::became_ready);
  EXPECT_EQ(s, State::ready);
  s = *transition(s, Event::health_failed);
  EXPECT_EQ(s, State::unhealthy);
  s = *transition(s, Event::became_ready);
  EXPECT_EQ(s, State::ready);
  s = *transition(s, Event::stop_requested);
  EXPECT_EQ(s, State::stopping);
  s = *transition(s, Event::exit_after_stop);
  EXPECT_EQ(s, State::stopped);
  s = *transition(s, Event::reset);
  EXPECT_EQ(s, State::pending);
}

TEST(StateMachine, CrashLoopEndsFailed) {
  EXPECT_EQ(transition(State::ready, Event::exit_restart), State::backoff);
  EXPECT_EQ(transition(State::backoff, Event::spawned), State::starting);
  EXPECT_EQ(transition(State::starting, Event::exit_failed), State::failed);
  EXPECT_EQ(transition(State::starting, Event::ready_deadline), State::failed);
}

TEST(StateMachine, StoppingIgnoresEverythingButTheExit) {
  for (int e = 0; e < event_count; ++e) {
    auto ev = static_cast<Event>(e);
    auto next = transition(State::stopping, ev);
    if (ev == Event::exit_after_stop)
      EXPECT_EQ(next, State::stopped);
    else
      EXPECT_FALSE(next.has_value()) << to_string(ev);
  }
}

TEST(StateMachine, SettledStatesOnlyLeaveOnReset) {
  for (State s : {State::stopped, State::failed}) {
    for (int e = 0; e < event_count; ++e) {
      auto ev = static_cast<Event>(e);
      if (ev == Event::reset)
        EXPECT_EQ(transition(s, ev), State::pending);
      else
        EXPECT_FALSE(transition(s, ev).has_value()) << to_string(s) << " " << to_string(ev);
    }
  }
}

TEST(StateMachine, PendingServiceFailsWithItsDependency) {
  EXPECT_EQ(transition(State::pending, Event::dependency_failed), State::failed);
  EXPECT_FALSE(transition(State::ready, Event::dependency_failed).has_value());
}

TEST(StateMachine, EveryStateHasAName) {
  for (int i = 0; i < state_count; ++i) {
    auto s = static_cast<State>(i);
    EXPECT_EQ(state_from_string(to_string(s)), s);
  }
  EXPECT_EQ(state_from_string("healthy"), State::ready);
  EXPECT_FALSE(state_from_string("bogus").has_value());
}
