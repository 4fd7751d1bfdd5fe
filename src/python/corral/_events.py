"""A batch of the event stream as columns (`Stack.event_batch`), for consumers of a flood.

`Stack.events()` builds a dict per event; at millions of log lines a second that costs more
than capturing them. A batch holds the log lines as parallel lists (their text, service and
stream) and an array of times, with the state events beside them, each at its place in the
stream (`index`: how many of the batch's log lines came before it). Iterating a batch gives
the same dicts, in the same order, as `events()` would have.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

__all__ = ["EventBatch"]


class EventBatch:
    """Log lines and state changes taken from the event stream in one call.

    - ``lines``: the text of each log line, oldest first (``str``, U+FFFD for bytes that
      are not UTF-8); ``services`` and ``streams`` (``"stdout"``/``"stderr"``) beside it;
      ``times``: an ``array('d')`` of their times (seconds since the epoch).
    - ``states``: the state events, as ``events()`` gives them, each with ``"index"``: how
      many of ``lines`` came before it. State events are never dropped.
    - ``dropped``: how many log lines a lossy stream lost before this batch (0 when the
      reader kept up).

    ``len(batch)`` is the number of log lines; a batch is true when it holds anything.
    """

    __slots__ = ("dropped", "lines", "services", "states", "streams", "times")

    def __init__(self, lines: list[str], services: list[str], streams: list[str], times: bytes,
                 states: list[dict[str, Any]], dropped: int) -> None:
        self.lines = lines
        self.services = services
        self.streams = streams
        self.times = array("d")
        self.times.frombytes(times)
        self.states = states
        self.dropped = dropped

    @classmethod
    def from_events(cls, events: list[dict[str, Any]]) -> EventBatch:
        """The batch of a list of `events()` dicts (for readers of a stream that has no
        columns, such as a client's)."""
        lines: list[str] = []
        services: list[str] = []
        streams: list[str] = []
        times = array("d")
        states: list[dict[str, Any]] = []
        dropped = 0
        for ev in events:
            kind = ev.get("kind")
            if kind == "log":
                lines.append(ev["text"])
                services.append(ev["service"])
                streams.append(ev["stream"])
                times.append(ev["time"])
            elif kind == "dropped":
                dropped += ev["count"]
            elif kind == "state":
                states.append({**ev, "index": len(lines)})
        return cls(lines, services, streams, times.tobytes(), states, dropped)

    def __len__(self) -> int:
        return len(self.lines)

    def __bool__(self) -> bool:
        return bool(self.lines or self.states or self.dropped)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The events one dict each, in stream order, as `events()` gives them (a
        ``dropped`` event first when lines were lost)."""
        if self.dropped:
            # The engine makes this event when the batch is taken; the first line's time
            # (or the first state's) is the closest this batch still knows.
            first = self.times[0] if self.times else self.states[0]["time"] if self.states else 0.0
            yield {"time": first, "service": "", "kind": "dropped", "count": self.dropped}
        at = 0
        for st in self.states:
            yield from self._logs(at, st["index"])
            at = st["index"]
            yield {k: v for k, v in st.items() if k != "index"}
        yield from self._logs(at, len(self.lines))

    def _logs(self, begin: int, end: int) -> Iterator[dict[str, Any]]:
        for i in range(begin, end):
            yield {"time": self.times[i], "service": self.services[i], "kind": "log",
                   "stream": self.streams[i], "text": self.lines[i]}

    def __repr__(self) -> str:
        return f"<EventBatch {len(self.lines)} lines, {len(self.states)} states, {self.dropped} dropped>"
