#include "corral/engine/event_queue.hpp"

#include <algorithm>
#include <chrono>

#include "corral/core/duration.hpp"

namespace corral {

void EventQueue::push(EngineEvent ev) {
  if (!subscribed()) return;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
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
  cv_.notify_one();
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
  std::vector<EngineEvent> out;
  out.reserve(std::min(max, events_.size() + 1));
  if (dropped_ > 0) {
    EngineEvent e;
    e.kind = EngineEvent::Kind::dropped;
    e.text = std::to_string(dropped_);
    e.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                    std::chrono::system_clock::now().time_since_epoch()).count();
    out.push_back(std::move(e));
    dropped_ = 0;
  }
  while (!events_.empty() && out.size() < max) {
    std::size_t c = cost(events_.front());
    bytes_ -= c;
    if (events_.front().kind == EngineEvent::Kind::state) state_bytes_ -= c;
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  if (paused_.load(std::memory_order_relaxed) && bytes_ <= budget_ / 2) {
    paused_.store(false, std::memory_order_relaxed);
    resume = true;
  }
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

std::size_t EventQueue::bytes() const {
  std::lock_guard lock(mutex_);
  return bytes_;
}

}  // namespace corral
