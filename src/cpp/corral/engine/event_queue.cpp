#include "corral/engine/event_queue.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

#include "corral/core/duration.hpp"

namespace corral {

std::vector<EngineEvent> to_events(const EventChunk& chunk) {
  std::vector<EngineEvent> out;
  out.reserve(chunk.items.size() + 1);
  if (chunk.dropped > 0) {
    EngineEvent e;
    e.kind = EngineEvent::Kind::dropped;
    e.text = std::to_string(chunk.dropped);
    e.time_ns = chunk.dropped_time_ns;
    out.push_back(std::move(e));
  }
  for (const auto& i : chunk.items) {
    EngineEvent e;
    e.kind = i.kind;
    e.service = chunk.service(i);
    e.state = i.state;
    e.stream = i.stream;
    e.text = chunk.text(i);
    e.time_ns = i.time_ns;
    e.exit_code = i.exit_code;
    out.push_back(std::move(e));
  }
  return out;
}

void EventQueue::run_taps(const EngineEvent& ev) {
  if (!tapped_.load(std::memory_order_relaxed)) return;
  std::lock_guard lock(taps_mutex_);
  for (const auto& [id, tap] : taps_) tap(ev);
}

void EventQueue::push(EngineEvent ev) {
  run_taps(ev);
  enqueue(ev.kind, ev.service, ev.stream, ev.state, ev.exit_code, ev.text, ev.time_ns);
}

void EventQueue::push_log(std::string_view service, Stream stream, std::string_view text, std::int64_t time_ns) {
  if (tapped_.load(std::memory_order_relaxed)) {
    EngineEvent e;
    e.kind = EngineEvent::Kind::log;
    e.service = service;
    e.stream = stream;
    e.text = text;
    e.time_ns = time_ns;
    run_taps(e);
  }
  enqueue(EngineEvent::Kind::log, service, stream, State::pending, std::nullopt, text, time_ns);
}

// A stack has few services and floods come in runs of one: the last name first. Only the
// engine thread adds names, so it may search without the lock; a reader copies the list
// under the lock, so adding a name takes it.
std::uint32_t EventQueue::service_index(std::string_view name, bool locked) {
  if (last_service_ < services_.size() && services_[last_service_] == name) return last_service_;
  for (std::uint32_t i = 0; i < services_.size(); ++i)
    if (services_[i] == name) return last_service_ = i;
  if (locked) {
    services_.emplace_back(name);
  } else {
    std::lock_guard lock(mutex_);
    services_.emplace_back(name);
  }
  return last_service_ = static_cast<std::uint32_t>(services_.size() - 1);
}

void EventQueue::enqueue(EngineEvent::Kind kind, std::string_view service, Stream stream, State state,
                         std::optional<int> exit_code, std::string_view text, std::int64_t time_ns) {
  if (!reader_subscribed()) return;
  auto fill = [&](Item& i, std::string& texts, bool locked) {
    i.kind = kind;
    i.stream = stream;
    i.state = state;
    i.exit_code = exit_code;
    i.time_ns = time_ns;
    i.service = service_index(service, locked);
    i.text_at = texts.size();
    i.text_size = text.size();
    texts.append(text);
  };
  if (batching_ > 0) {
    fill(staged_.emplace_back(), staged_texts_, false);
    return;
  }
  bool was_empty = false;
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    was_empty = head_ == items_.size();
    Item& i = items_.emplace_back();
    fill(i, texts_, true);
    std::size_t c = cost(i);
    bytes_ += c;
    if (kind == EngineEvent::Kind::state) state_bytes_ += c;
    if (bytes_ > budget_) {
      if (lossless_)
        paused_.store(true, std::memory_order_relaxed);
      else
        evict_locked();
    }
  }
  // A reader waits only while the queue is empty (take's predicate), so only the push that
  // ends the emptiness needs to wake it.
  if (was_empty) cv_.notify_all();
}

void EventQueue::publish() {
  if (staged_.empty()) return;
  bool was_empty = false;
  {
    std::lock_guard lock(mutex_);
    if (!closed_) {
      was_empty = head_ == items_.size();
      const std::size_t base = texts_.size();
      texts_.append(staged_texts_);
      for (Item i : staged_) {
        i.text_at += base;
        std::size_t c = cost(i);
        bytes_ += c;
        if (i.kind == EngineEvent::Kind::state) state_bytes_ += c;
        items_.push_back(i);
      }
      if (bytes_ > budget_) {
        if (lossless_)
          paused_.store(true, std::memory_order_relaxed);
        else
          evict_locked();
      }
    }
  }
  staged_.clear();  // both keep their capacity: no allocation per read
  staged_texts_.clear();
  if (was_empty) cv_.notify_all();
}

// Drops the oldest log events down to 3/4 of the budget in one pass, so the cost per push
// stays O(1) amortised. State events stay unless they alone fill 4 budgets.
void EventQueue::evict_locked() {
  const std::size_t target = budget_ / 4 * 3;
  const bool drop_states = state_bytes_ > 4 * budget_;
  std::vector<Item> kept;
  std::string kept_texts;
  kept_texts.reserve(target);
  for (std::size_t n = head_; n < items_.size(); ++n) {
    Item i = items_[n];
    bool is_state = i.kind == EngineEvent::Kind::state;
    if (bytes_ > target && (!is_state || drop_states)) {
      std::size_t c = cost(i);
      bytes_ -= c;
      if (is_state) state_bytes_ -= c;
      ++dropped_;
      continue;
    }
    kept_texts.append(texts_, i.text_at, i.text_size);
    i.text_at = kept_texts.size() - i.text_size;
    kept.push_back(i);
  }
  items_.swap(kept);
  texts_.swap(kept_texts);
  head_ = 0;
}

// Cuts off the taken prefix. The queue's texts are contiguous from its first item's on,
// since each push appends.
void EventQueue::compact_locked() {
  std::size_t off = head_ < items_.size() ? items_[head_].text_at : texts_.size();
  texts_.erase(0, off);
  items_.erase(items_.begin(), items_.begin() + static_cast<std::ptrdiff_t>(head_));
  for (auto& i : items_) i.text_at -= off;
  head_ = 0;
}

bool EventQueue::subscribe(bool lossless) {
  std::lock_guard lock(mutex_);
  if (!subscribed_.exchange(true)) lossless_ = lossless;
  return !closed_;
}

EventChunk EventQueue::take(double timeout, std::size_t max, bool& resume) {
  resume = false;
  EventChunk out;
  std::unique_lock lock(mutex_);
  auto have = [&] { return head_ < items_.size() || dropped_ > 0 || closed_; };
  if (timeout < 0)
    cv_.wait(lock, have);
  else
    cv_.wait_for(lock, to_duration(timeout), have);
  out.dropped = std::exchange(dropped_, 0);
  if (out.dropped > 0)
    out.dropped_time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch()).count();
  const std::size_t n = std::min(max, items_.size() - head_);
  if (head_ == 0 && n == items_.size()) {
    // Everything: a swap, so the engine, which pushes under this lock, waits for a few
    // pointer exchanges instead of one move per event.
    out.items.swap(items_);
    out.texts.swap(texts_);
    bytes_ = 0;
    state_bytes_ = 0;
  } else {
    out.items.assign(items_.begin() + static_cast<std::ptrdiff_t>(head_),
                     items_.begin() + static_cast<std::ptrdiff_t>(head_ + n));
    for (auto& i : out.items) {
      std::size_t c = cost(i);
      bytes_ -= c;
      if (i.kind == EngineEvent::Kind::state) state_bytes_ -= c;
      out.texts.append(texts_, i.text_at, i.text_size);
      i.text_at = out.texts.size() - i.text_size;
    }
    head_ += n;
    if (head_ == items_.size()) {
      items_.clear();
      texts_.clear();
      head_ = 0;
    } else if (head_ > items_.size() / 2) {
      compact_locked();
    }
  }
  out.services = services_;
  if (paused_.load(std::memory_order_relaxed) && bytes_ <= budget_ / 2) {
    paused_.store(false, std::memory_order_relaxed);
    resume = true;
  }
  return out;
}

std::vector<EngineEvent> EventQueue::pop(double timeout, std::size_t max, bool& resume) {
  return to_events(take(timeout, max, resume));
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
