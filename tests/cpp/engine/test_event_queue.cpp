// The event queue: bounded by bytes, state events kept, and the lossless mode's pause.
#include "corral/engine/event_queue.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

using namespace corral;

namespace {

EngineEvent log_event(std::size_t bytes) {
  EngineEvent e;
  e.kind = EngineEvent::Kind::log;
  e.service = "s";
  e.text.assign(bytes, 'x');
  return e;
}

EngineEvent state_event(State s) {
  EngineEvent e;
  e.kind = EngineEvent::Kind::state;
  e.service = "s";
  e.state = s;
  return e;
}

}  // namespace

TEST(EventQueue, NothingIsQueuedBeforeASubscriber) {
  EventQueue q(1 << 20);
  q.push(log_event(10));
  EXPECT_EQ(q.bytes(), 0u);
  EXPECT_TRUE(q.subscribe(false));
  q.push(log_event(10));
  EXPECT_GT(q.bytes(), 0u);
}

TEST(EventQueue, LossyQueueStaysWithinItsBudgetAndKeepsEveryStateEvent) {
  const std::size_t budget = 64 * 1024;
  EventQueue q(budget);
  q.subscribe(false);
  int states = 0;
  for (int i = 0; i < 20000; ++i) {
    q.push(log_event(1000));
    if (i % 100 == 0) {
      q.push(state_event(i % 200 == 0 ? State::starting : State::backoff));
      ++states;
    }
    ASSERT_LE(q.bytes(), budget + 2000);
  }
  bool resume = false;
  std::uint64_t dropped = 0;
  int seen_states = 0;
  State last = State::pending;
  while (true) {
    auto out = q.pop(0, 100000, resume);
    if (out.empty()) break;
    for (const auto& e : out) {
      if (e.kind == EngineEvent::Kind::dropped) dropped += std::stoull(e.text);
      if (e.kind == EngineEvent::Kind::state) {
        ++seen_states;
        last = e.state;
      }
    }
  }
  EXPECT_EQ(seen_states, states);
  EXPECT_EQ(last, State::backoff);
  EXPECT_GT(dropped, 0u);
  EXPECT_FALSE(resume);  // lossy readers never pause the engine
}

TEST(EventQueue, LosslessQueueDropsNothingAndAsksForAPause) {
  const std::size_t budget = 16 * 1024;
  EventQueue q(budget);
  q.subscribe(true);
  for (int i = 0; i < 100; ++i) q.push(log_event(1000));
  EXPECT_TRUE(q.over_budget());
  bool resume = false;
  std::size_t got = 0;
  // Draining below half the budget clears the pause and says so exactly once.
  int resumes = 0;
  while (true) {
    auto out = q.pop(0, 10, resume);
    if (out.empty()) break;
    for (const auto& e : out) EXPECT_EQ(e.kind, EngineEvent::Kind::log);
    got += out.size();
    resumes += resume ? 1 : 0;
  }
  EXPECT_EQ(got, 100u);
  EXPECT_EQ(resumes, 1);
  EXPECT_FALSE(q.over_budget());
}

TEST(EventQueue, CloseWakesAWaitingReader) {
  EventQueue q;
  q.subscribe(false);
  std::thread closer([&] { q.close(); });
  bool resume = false;
  auto out = q.pop(-1, 10, resume);  // would wait forever without the close
  closer.join();
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(q.closed());
  EXPECT_FALSE(q.subscribe(false));
}

// Taps (the control server's feeds) see every event whether or not the reader subscribed,
// and take nothing from it.
TEST(EventQueue, TapsSeeEveryEventBesideTheReader) {
  EventQueue q(1 << 20);
  std::vector<std::string> seen;
  auto id = q.add_tap([&](const EngineEvent& e) { seen.push_back(e.text); });
  EXPECT_TRUE(q.subscribed());          // someone wants events: the engine publishes them
  EXPECT_FALSE(q.reader_subscribed());  // but nothing is queued for the reader
  auto e = log_event(3);
  q.push(e);
  EXPECT_EQ(q.bytes(), 0u);
  ASSERT_TRUE(q.subscribe(false));
  q.push(log_event(4));
  EXPECT_EQ(seen, (std::vector<std::string>{"xxx", "xxxx"}));
  bool resume = false;
  EXPECT_EQ(q.pop(0, 10, resume).size(), 1u);
  q.remove_tap(id);
  q.push(log_event(5));
  EXPECT_EQ(seen.size(), 2u);
}

// pop takes the oldest `max` events, or the whole queue at once when it fits (a swap), and
// the byte count follows either way.
TEST(EventQueue, PopTakesInOrderInPartsOrWhole) {
  EventQueue q(1 << 20);
  q.subscribe(false);
  for (int i = 0; i < 10; ++i) q.push(log_event(static_cast<std::size_t>(i + 1)));
  const std::size_t all = q.bytes();
  bool resume = false;
  auto first = q.pop(0, 4, resume);
  ASSERT_EQ(first.size(), 4u);
  for (std::size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i].text.size(), i + 1);
  EXPECT_LT(q.bytes(), all);
  EXPECT_GT(q.bytes(), 0u);
  q.push(state_event(State::ready));
  auto rest = q.pop(0, 100, resume);
  ASSERT_EQ(rest.size(), 7u);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(rest[i].text.size(), i + 5);
  EXPECT_EQ(rest[6].kind, EngineEvent::Kind::state);
  EXPECT_EQ(q.bytes(), 0u);
  EXPECT_TRUE(q.pop(0, 100, resume).empty());
  // After a whole-queue pop the state budget starts from zero too: a lossy flood still
  // keeps every state event and stays bounded.
  q.push(state_event(State::backoff));
  for (int i = 0; i < 5000; ++i) q.push(log_event(1000));
  EXPECT_LE(q.bytes(), (1u << 20) + 2000);
  auto flood = q.pop(0, 100000, resume);
  ASSERT_FALSE(flood.empty());
  EXPECT_EQ(flood[0].kind, EngineEvent::Kind::dropped);
  EXPECT_EQ(flood[1].kind, EngineEvent::Kind::state);
}

// Only a push into an empty queue wakes the reader (a reader waits only then): every batch
// must still reach a reader that waits between them.
TEST(EventQueue, AWaitingReaderSeesEveryBatch) {
  EventQueue q(1 << 20);
  q.subscribe(false);
  std::atomic<int> taken{0};
  std::atomic<bool> missed{false};
  std::thread reader([&] {
    bool resume = false;
    while (taken.load() < 3) {
      auto out = q.pop(60, 100, resume);  // a missed wake-up waits the 60 s out, empty
      if (out.empty()) {
        missed = true;
        return;
      }
      taken += static_cast<int>(out.size());
    }
  });
  for (int i = 0; i < 3 && !missed; ++i) {
    q.push(log_event(8));
    while (taken.load() <= i && !missed) std::this_thread::yield();  // taken: empty again
  }
  reader.join();
  EXPECT_FALSE(missed);
  EXPECT_EQ(taken.load(), 3);
}

// Capture holds a Batch across each pipe read: its events reach the reader when it ends,
// in order, with one wake-up.
TEST(EventQueue, ABatchIsPublishedWhenItEnds) {
  EventQueue q(1 << 20);
  q.subscribe(false);
  std::vector<EngineEvent> got;
  std::thread reader([&] {
    bool resume = false;
    got = q.pop(60, 100, resume);  // a lost wake-up would leave this empty after 60 s
  });
  {
    EventQueue::Batch batch(q);
    q.push(log_event(1));
    q.push(state_event(State::ready));
    EXPECT_EQ(q.bytes(), 0u);  // staged, not yet published
  }
  reader.join();
  ASSERT_EQ(got.size(), 2u);  // published together, under one lock
  EXPECT_EQ(got[0].text, "x");
  EXPECT_EQ(got[1].kind, EngineEvent::Kind::state);
}

// Partial takes advance through the queue and cut off what was taken; the texts must stay
// with their events across that, and across an eviction that follows.
TEST(EventQueue, TextsStayWithTheirEventsAcrossPartialTakesAndEvictions) {
  const std::size_t budget = 64 * 1024;
  EventQueue q(budget);
  q.subscribe(false);
  auto numbered = [](int i) {
    EngineEvent e = log_event(0);
    e.text = "line " + std::to_string(i) + std::string(static_cast<std::size_t>(i % 7) * 100, '.');
    e.service = i % 3 == 0 ? "a" : "b";
    return e;
  };
  bool resume = false;
  int next = 0, expected = 0;
  auto check = [&](const std::vector<EngineEvent>& out) {
    for (const auto& e : out) {
      if (e.kind == EngineEvent::Kind::dropped) {
        expected += std::stoi(e.text);
        continue;
      }
      ASSERT_EQ(e.text, numbered(expected).text);
      ASSERT_EQ(e.service, numbered(expected).service);
      ++expected;
    }
  };
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 97; ++i) q.push(numbered(next++));  // past the budget: evictions
    check(q.pop(0, 13, resume));                              // partial: compaction
    ASSERT_LE(q.bytes(), budget + 2000);
  }
  while (true) {
    auto out = q.pop(0, 13, resume);
    if (out.empty()) break;
    check(out);
  }
  EXPECT_EQ(expected, next);
}
