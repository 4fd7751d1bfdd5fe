#include "corral/supervise/machine.hpp"

#include <gtest/gtest.h>

using namespace corral;

namespace {
State next(State s, Event e) {
  auto st = step(s, e);
  EXPECT_TRUE(st.has_value()) << to_string(s) << " x " << to_string(e);
  return st ? st->next : s;
}
Action action(State s, Event e) { return step(s, e)->action; }
}  // namespace

TEST(Machine, NormalLife) {
  State s = State::pending;
  EXPECT_EQ(action(s, Event::go), Action::spawn);
  s = next(s, Event::spawned);
  EXPECT_EQ(s, State::starting);
  EXPECT_EQ(action(s, Event::ready), Action::became_ready);
  s = next(s, Event::ready);
  EXPECT_EQ(s, State::ready);
  s = next(s, Event::health_failed);
  EXPECT_EQ(s, State::unhealthy);
  s = next(s, Event::health_ok);
  EXPECT_EQ(s, State::ready);
  EXPECT_EQ(action(s, Event::stop), Action::terminate);
  s = next(s, Event::stop);
  EXPECT_EQ(s, State::stopping);
  EXPECT_EQ(action(s, Event::kill_due), Action::kill);
  s = next(s, Event::exit_stopped);
  EXPECT_EQ(s, State::stopped);
  EXPECT_EQ(action(s, Event::start), Action::reset);
  EXPECT_EQ(next(s, Event::start), State::pending);
}

TEST(Machine, CrashLoopEndsFailed) {
  EXPECT_EQ(next(State::ready, Event::exit_restart), State::backoff);
  EXPECT_EQ(action(State::ready, Event::exit_restart), Action::schedule_restart);
  EXPECT_EQ(action(State::backoff, Event::backoff_done), Action::spawn);
  EXPECT_EQ(next(State::backoff, Event::spawned), State::starting);
  EXPECT_EQ(next(State::starting, Event::exit_failed), State::failed);
  EXPECT_EQ(next(State::starting, Event::deadline), State::failed);
  EXPECT_EQ(action(State::starting, Event::deadline), Action::abort);
  EXPECT_EQ(next(State::backoff, Event::deadline), State::failed);
}

TEST(Machine, AFailedForkCountsAsARunThatEnded) {
  // From pending (the first spawn) and from backoff (a restart), EAGAIN goes through the
  // restart policy like an exit: backoff, or failed at the limit.
  for (State s : {State::pending, State::backoff}) {
    EXPECT_EQ(next(s, Event::exit_restart), State::backoff);
    EXPECT_EQ(next(s, Event::exit_failed), State::failed);
  }
}

TEST(Machine, StoppingIgnoresEverythingButTheExitAndTheKill) {
  for (int e = 0; e < event_count; ++e) {
    auto ev = static_cast<Event>(e);
    auto st = step(State::stopping, ev);
    if (ev == Event::exit_stopped)
      EXPECT_EQ(st->next, State::stopped);
    else if (ev == Event::kill_due)
      EXPECT_EQ(st->action, Action::kill);
    else
      EXPECT_FALSE(st.has_value()) << to_string(ev);
  }
}

TEST(Machine, SettledStatesOnlyLeaveOnStart) {
  for (State s : {State::stopped, State::failed}) {
    for (int e = 0; e < event_count; ++e) {
      auto ev = static_cast<Event>(e);
      if (ev == Event::start)
        EXPECT_EQ(next(s, ev), State::pending);
      else
        EXPECT_FALSE(step(s, ev).has_value()) << to_string(s) << " " << to_string(ev);
    }
  }
}

TEST(Machine, NoEventSpawnsOutsidePendingAndBackoff) {
  // The process slot holds one process: only a service with none may spawn.
  for (int s = 0; s < state_count; ++s)
    for (int e = 0; e < event_count; ++e) {
      auto st = step(static_cast<State>(s), static_cast<Event>(e));
      if (st && st->action == Action::spawn)
        EXPECT_TRUE(static_cast<State>(s) == State::pending || static_cast<State>(s) == State::backoff)
            << to_string(static_cast<State>(s));
    }
}

TEST(Machine, PendingServiceFailsWithItsDependency) {
  EXPECT_EQ(next(State::pending, Event::dep_failed), State::failed);
  EXPECT_FALSE(step(State::ready, Event::dep_failed).has_value());
}

TEST(Machine, EveryNameIsDistinct) {
  for (int i = 0; i < state_count; ++i) {
    auto s = static_cast<State>(i);
    EXPECT_EQ(state_from_string(to_string(s)), s);
  }
  EXPECT_EQ(state_from_string("healthy"), State::ready);
  EXPECT_FALSE(state_from_string("bogus").has_value());
  for (int i = 0; i < event_count; ++i) EXPECT_FALSE(to_string(static_cast<Event>(i)).empty());
  for (int i = 0; i < action_count; ++i) EXPECT_FALSE(to_string(static_cast<Action>(i)).empty());
}
