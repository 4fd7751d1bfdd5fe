#include "corral/engine/event_queue.hpp"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <utility>

#include "corral/core/duration.hpp"

namespace corral {

void EventQueue::push(EngineEvent ev) {
  if (tapped_.load(std::memory_order_relaxed)) {
    std::lock_guard lock(taps_mutex_);
    for (const auto& [id, tap] : taps_) tap(ev);
  }
  if (!reader_subscribed()) return;
  bool was_empty = false;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    was_empty = events_.empty();
    std::size_t c = cost(ev);
    bytes_ += c;
    if (ev.kind == EngineEvent::Kind::state) state_bytes_ += c;
    events_.push_back(std::move(ev));
    if (bytes_ > budget_) {
      if (lossless_)
        paused_.store(true, std::memory_order_relaxed);
      else
        evict_locked();
    }
  }
  // A reader waits only while the queue is empty (pop's predicate), so only the push that
  // ends the emptiness needs to wake it: a flood then costs one wake-up per batch the
  // reader takes, not a futex call per line.
  if (was_empty) {
    if (deferring_ > 0)
      wake_ = true;
    else
      cv_.notify_all();
  }
}

// Drops the oldest log events down to 3/4 of the budget in one pass, so the cost per push
// stays O(1) amortised. State events stay unless they alone fill 4 budgets.
void EventQueue::evict_locked() {
  const std::size_t target = budget_ / 4 * 3;
  const bool drop_states = state_bytes_ > 4 * budget_;
  std::deque<EngineEvent> kept;
  for (auto& e : events_) {
    bool is_state = e.kind == EngineEvent::Kind::state;
    if (bytes_ > target && (!is_state || drop_states)) {
      std::size_t c = cost(e);
      bytes_ -= c;
      if (is_state) state_bytes_ -= c;
      ++dropped_;
      continue;
    }
    kept.push_back(std::move(e));
  }
  events_.swap(kept);
}

bool EventQueue::subscribe(bool lossless) {
  std::lock_guard lock(mutex_);
  if (!subscribed_.exchange(true)) lossless_ = lossless;
  return !closed_;
}

std::vector<EngineEvent> EventQueue::pop(double timeout, std::size_t max, bool& resume) {
  resume = false;
  std::unique_lock lock(mutex_);
  auto have = [&] { return !events_.empty() || dropped_ > 0 || closed_; };
  if (timeout < 0)
    cv_.wait(lock, have);
  else
    cv_.wait_for(lock, to_duration(timeout), have);
  std::uint64_t dropped = std::exchange(dropped_, 0);
  // Everything fits: take the whole queue in one swap, so the engine, which pushes under
  // the same lock, waits for a pointer exchange instead of one move per event.
  std::deque<EngineEvent> taken;
  if (events_.size() <= max) {
    taken.swap(events_);
    bytes_ = 0;
    state_bytes_ = 0;
  } else {
    for (std::size_t i = 0; i < max; ++i) {
      std::size_t c = cost(events_.front());
      bytes_ -= c;
      if (events_.front().kind == EngineEvent::Kind::state) state_bytes_ -= c;
      taken.push_back(std::move(events_.front()));
      events_.pop_front();
    }
  }
  if (paused_.load(std::memory_order_relaxed) && bytes_ <= budget_ / 2) {
    paused_.store(false, std::memory_order_relaxed);
    resume = true;
  }
  lock.unlock();
  std::vector<EngineEvent> out;
  out.reserve(taken.size() + 1);
  if (dropped > 0) {
    EngineEvent e;
    e.kind = EngineEvent::Kind::dropped;
    e.text = std::to_string(dropped);
    e.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
    out.push_back(std::move(e));
  }
  std::move(taken.begin(), taken.end(), std::back_inserter(out));
  return out;
}

void EventQueue::close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    paused_ = false;
  }
  cv_.notify_all();
}

std::uint64_t EventQueue::add_tap(Tap tap) {
  std::lock_guard lock(taps_mutex_);
  taps_.emplace_back(++next_tap_, std::move(tap));
  tapped_.store(true, std::memory_order_relaxed);
  return next_tap_;
}

void EventQueue::remove_tap(std::uint64_t id) {
  std::lock_guard lock(taps_mutex_);
  std::erase_if(taps_, [id](const auto& t) { return t.first == id; });
  tapped_.store(!taps_.empty(), std::memory_order_relaxed);
}

std::size_t EventQueue::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

}  // namespace corral
