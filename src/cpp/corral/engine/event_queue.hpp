// The event stream of one stack (log lines and state changes, oldest first), shared by the
// engine thread (producer) and one reader thread (a CLI, a notebook). It is the only state
// of a stack that another thread touches, so it has its own lock.
//
// Bounded by bytes, not by count (a count bound let 64k lines of 16 KiB each take a GiB).
// Two modes, chosen by the reader when it subscribes:
// - lossy (the default): past the budget the oldest *log* events are dropped and counted;
//   state events are kept, so a reader always learns every state change (only past a hard
//   cap of state events alone, which takes a reader that never reads, do they go too);
// - lossless (`corral up`): nothing is dropped; past the budget the engine stops reading
//   the stack's pipes (`over_budget()`), so the services block on their own writes, and
//   the reader resumes them (`pop` says when) once it has drained half of it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "corral/core/types.hpp"
#include "corral/logs/log_buffer.hpp"

namespace corral {

struct EngineEvent {
  enum class Kind : std::uint8_t { log, state, dropped };
  Kind kind = Kind::log;
  std::string service;
  State state = State::pending;  // state events
  Stream stream = Stream::out;   // log events
  std::string text;              // log line, or the reason of a state change
  std::int64_t time_ns = 0;
  std::optional<int> exit_code;  // state events after an exit
};

// What a reader takes from the queue in one call: the events as small records, with every
// text in one buffer. The engine appends a log line to that buffer instead of allocating a
// string per line (and the reader frees nothing per line either: a string allocated on
// the engine thread and freed on the reader's cost both threads more than the copy).
struct EventChunk {
  struct Item {
    EngineEvent::Kind kind = EngineEvent::Kind::log;
    Stream stream = Stream::out;
    State state = State::pending;
    std::optional<int> exit_code;
    std::int64_t time_ns = 0;
    std::uint32_t service = 0;  // index into `services`
    std::size_t text_at = 0, text_size = 0;
  };
  std::vector<Item> items;
  std::string texts;
  std::vector<std::string> services;
  std::uint64_t dropped = 0;  // log events a lossy queue dropped before these
  std::int64_t dropped_time_ns = 0;

  std::string_view text(const Item& i) const noexcept { return {texts.data() + i.text_at, i.text_size}; }
  const std::string& service(const Item& i) const noexcept { return services[i.service]; }
  bool empty() const noexcept { return items.empty() && dropped == 0; }
};

// The chunk as separate events, a `dropped` event first when there were drops.
std::vector<EngineEvent> to_events(const EventChunk& chunk);

class EventQueue {
 public:
  static constexpr std::size_t default_budget = 16u << 20;

  explicit EventQueue(std::size_t budget_bytes = default_budget) : budget_(budget_bytes) {}

  // Engine thread: whether anyone wants events (a reader or a tap). Nothing is queued for
  // the reader before its first subscribe().
  bool subscribed() const noexcept {
    return subscribed_.load(std::memory_order_relaxed) || tapped_.load(std::memory_order_relaxed);
  }
  // Whether the reader subscribed (taps alone do not make pop() return anything).
  bool reader_subscribed() const noexcept { return subscribed_.load(std::memory_order_relaxed); }
  void push(EngineEvent ev);
  // A log line, without building an EngineEvent unless a tap wants one.
  void push_log(std::string_view service, Stream stream, std::string_view text, std::int64_t time_ns);

  // Engine thread: while one lives, pushes are staged on the engine thread, without the
  // lock, and published together under one lock when it ends (waking the reader once, if
  // the queue was empty). Capture holds one across each read of a pipe: a flood then takes
  // the lock and wakes the reader once per read (up to 64 KiB of lines), not once per
  // line and every few lines. Staging holds at most one read's lines.
  class Batch {
   public:
    explicit Batch(EventQueue& q) noexcept : q_(q) { ++q_.batching_; }
    ~Batch() {
      if (--q_.batching_ == 0) q_.publish();
    }
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

   private:
    EventQueue& q_;
  };
  // Lossless and past the budget: the engine must stop reading pipes until resumed.
  bool over_budget() const noexcept { return paused_.load(std::memory_order_relaxed); }

  // Reader thread. The first call decides the mode; false when the stack is closed.
  bool subscribe(bool lossless);
  // Waits up to `timeout` seconds (< 0: forever) for at least one event, then takes up to
  // `max`. `resume` is set when the engine should read pipes again.
  EventChunk take(double timeout, std::size_t max, bool& resume);
  // take() as separate events (the dropped count first, as a `dropped` event).
  std::vector<EngineEvent> pop(double timeout, std::size_t max, bool& resume);
  // Wakes the reader for good: pop returns at once from now on.
  void close();
  bool closed() const noexcept { return closed_.load(); }

  std::size_t bytes() const;

  // Taps: extra consumers (the control server's feeds) that see every event pushed, on the
  // engine thread, without taking anything from the reader. A tap runs under the tap lock,
  // so it must only copy the event and hand it off (never block, never add or remove a
  // tap). remove_tap returns once the tap can no longer run.
  using Tap = std::function<void(const EngineEvent&)>;
  std::uint64_t add_tap(Tap tap);
  void remove_tap(std::uint64_t id);

 private:
  using Item = EventChunk::Item;
  std::size_t cost(const Item& i) const noexcept { return 64 + services_[i.service].size() + i.text_size; }
  void run_taps(const EngineEvent& ev);
  void enqueue(EngineEvent::Kind kind, std::string_view service, Stream stream, State state,
               std::optional<int> exit_code, std::string_view text, std::int64_t time_ns);
  std::uint32_t service_index(std::string_view name, bool locked);
  void publish();
  void evict_locked();
  void compact_locked();

  const std::size_t budget_;
  std::atomic<bool> subscribed_{false}, paused_{false}, closed_{false}, tapped_{false};
  std::mutex taps_mutex_;
  std::vector<std::pair<std::uint64_t, Tap>> taps_;
  std::uint64_t next_tap_ = 0;
  bool lossless_ = false;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  // The queue is items_[head_..]: a partial take advances head_, and the taken prefix (of
  // items_ and of texts_) is cut off once it is half of the queue.
  std::vector<Item> items_;
  std::size_t head_ = 0;
  std::string texts_;
  std::vector<std::string> services_;  // every name seen, so an item holds an index
  std::uint32_t last_service_ = 0;
  std::size_t bytes_ = 0, state_bytes_ = 0;
  std::uint64_t dropped_ = 0;
  // Engine thread only (the one producer): open Batches, and what they staged.
  int batching_ = 0;
  std::vector<Item> staged_;
  std::string staged_texts_;
};

}  // namespace corral
