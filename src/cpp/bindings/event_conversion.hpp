// The event stream as Python objects: one dict per event (Stack.events, the public contract)
// or one batch of columns (Stack.event_batch, for consumers of a flood). Both decode text
// with U+FFFD for invalid bytes, and both run with the GIL held.
#pragma once

#include <pybind11/pybind11.h>

#include "corral/engine/event_queue.hpp"

namespace corral::bindings {

// A list with one dict per event, in order.
pybind11::list event_list(const EventChunk& chunk);

// (texts, services, streams, times, states, dropped), the log lines as columns:
// - texts: list[str], one per log line, in order;
// - services, streams: list[str] beside it (shared, interned strings: no copy per line);
// - times: bytes, one native float64 (seconds since the epoch) per log line;
// - states: list[dict], each state event as events() gives it, plus "index": how many of
//   this batch's log lines came before it;
// - dropped: how many log lines a lossy queue dropped before this batch.
pybind11::tuple event_columns(const EventChunk& chunk);

}  // namespace corral::bindings
