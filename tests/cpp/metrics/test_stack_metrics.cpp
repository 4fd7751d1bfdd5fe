// Counters, rings and the history buffer: cumulative values survive restarts and members
// that die; rings and the history buffer are bounded.
#include "corral/metrics/stack_metrics.hpp"

#include <gtest/gtest.h>

using namespace corral;

TEST(StackMetrics, CpuAndIoAreCumulativeAcrossRunsAndDyingMembers) {
  StackMetrics m({"a"});
  TreeReading r;
  r.leader = 100;
  r.user = 1.0;
  r.read = 1000;
  m.add_readings({r}, 10.0, 1.0);
  r.user = 1.5;  // +0.5 in 1 s
  r.read = 1500;
  m.add_readings({r}, 11.0, 2.0);
  auto s = m.latest();
  ASSERT_EQ(s.size(), 1u);
  EXPECT_DOUBLE_EQ(s[0].cpu_user, 1.5);
  EXPECT_NEAR(s[0].cpu_percent, 50.0, 1e-9);
  EXPECT_EQ(s[0].read_bytes, 1500u);
  // A member reaped by init took its time with it: the counter does not go back.
  r.user = 1.2;
  m.add_readings({r}, 12.0, 3.0);
  EXPECT_DOUBLE_EQ(m.latest()[0].cpu_user, 1.5);
  // A restart: the new run's time adds to what the earlier runs used.
  r.leader = 200;
  r.user = 0.25;
  r.read = 10;
  m.add_readings({r}, 13.0, 4.0);
  s = m.latest();
  EXPECT_DOUBLE_EQ(s[0].cpu_user, 1.75);
  EXPECT_EQ(s[0].read_bytes, 1510u);
  EXPECT_EQ(s[0].cpu_percent, 0.0);  // no earlier sample of this run
  EXPECT_EQ(m.samples(std::nullopt, 12.5).size(), 1u);
  EXPECT_EQ(m.samples(0, 0).size(), 4u);
}

TEST(StackMetrics, RingsAreBounded) {
  StackMetrics m({"a", "b"});
  TreeReading r;
  r.leader = 1;
  for (int i = 0; i < 5000; ++i) m.add_readings({r}, i, i);
  EXPECT_EQ(m.samples(0, 0).size(), m.ring_capacity());
  EXPECT_LE(m.ring_capacity(), 3600u);
}

TEST(StackMetrics, CountersByReasonCodeAndSignal) {
  StackMetrics m({"a"});
  m.on_spawn(0, 1, nullptr);
  m.on_exit(0, 1, false, 3, 0.5);
  m.on_spawn(0, 2, "exit");
  m.on_exit(0, 2, true, 9, 0.5);
  m.on_spawn(0, 3, "health");
  m.on_ready(0, 0.02);
  m.on_check(0, false, "tcp", 0.001, false);
  m.on_check(0, false, "tcp", 0.001, true);
  m.on_log_line(0, 1, 10);
  auto c = m.counters()[0];
  EXPECT_EQ(c.starts, 3u);
  EXPECT_EQ(c.restarts[static_cast<int>(RestartReason::exit)], 1u);
  EXPECT_EQ(c.restarts[static_cast<int>(RestartReason::health)], 1u);
  EXPECT_EQ(c.exit_codes.at(3), 1u);
  EXPECT_EQ(c.exit_signals.at(9), 1u);
  EXPECT_EQ(c.ready.count, 1u);
  EXPECT_EQ(c.health_check.failures, 1u);
  EXPECT_EQ(c.recent_checks, 2);
  EXPECT_EQ(c.recent_failures, 0b10u);
  EXPECT_EQ(c.restart_times.size(), 2u);
  auto logs = m.log_counts(0);
  EXPECT_EQ(logs[1], 1u);
  EXPECT_EQ(logs[3], 10u);
}

TEST(StackMetrics, HistoryIsOffUntilEnabledThenBounded) {
  StackMetrics m({"a"});
  m.on_state(0, "starting", "");
  EXPECT_TRUE(m.drain_history().empty());
  m.enable_history(16);
  for (int i = 0; i < 20; ++i) m.on_state(0, "ready", "");
  std::uint64_t lost = 0;
  auto h = m.drain_history(&lost);
  EXPECT_EQ(h.size(), 16u);
  EXPECT_EQ(lost, 4u);
  EXPECT_TRUE(m.drain_history().empty());
}

TEST(Histogram, BucketsAreUpperBoundsInclusive) {
  Histogram h({0.1, 1});
  h.observe(0.1);
  h.observe(0.5);
  h.observe(5);
  EXPECT_EQ(h.counts, (std::vector<std::uint64_t>{1, 1, 1}));
  EXPECT_EQ(h.count, 3u);
  EXPECT_DOUBLE_EQ(h.sum, 5.6);
}
