"""`Stack.event_batch()`: the event stream as columns. It must carry exactly what
`events()` carries (the same stream: lines in order with their service and stream, text
decoded with U+FFFD, long lines cut on a character boundary, state events at their place
among the lines), and a flood must neither drop a state event nor grow the queue past its
byte budget."""

from __future__ import annotations

import math
from typing import Any

import corral
from conftest import python_script
from corral._events import EventBatch
from test_edge_text import PRINTER, _check_lines

BUDGET = 16 << 20  # EventQueue::default_budget
EVENT_OVERHEAD = 64  # EventQueue::cost: 64 bytes per event beside its strings


def _collect_batches(stack: corral.Stack, until: Any) -> list[EventBatch]:
    """Batches until `until(all events so far)` holds; each wait is bounded."""
    batches: list[EventBatch] = []
    events: list[dict[str, Any]] = []
    while not until(events):
        batch = stack.event_batch(60)
        assert batch, "no events within 60 s"
        batches.append(batch)
        events += list(batch)
    return batches


def _state(name: str, state: str) -> Any:
    """Whether `name` reached `state` among the events so far."""
    return lambda evs: any(e["kind"] == "state" and e["service"] == name and e["state"] == state
                           for e in evs)


def _exited(name: str) -> Any:
    return _state(name, "exited")


def _run_and_read(make_stack: Any, reader: str, helper: str) -> list[dict[str, Any]]:
    """The same two services, read whole through `events()` or through `event_batch()`
    (iterated as dicts)."""
    stack = make_stack(f"test-{reader}")
    stack.add("bytes", python_script(PRINTER))
    stack.add("count", [helper, "stderr", "first", "lines", "2000", "n"], depends_on=["bytes"])
    stack.events(0) if reader == "dicts" else stack.event_batch(0)
    stack.start(timeout=60)
    events: list[dict[str, Any]] = []
    count, printer = _exited("count"), _exited("bytes")
    while not (count(events) and printer(events)):
        got = stack.events(60) if reader == "dicts" else list(stack.event_batch(60))
        assert got, "no events within 60 s"
        events += got
    return events


def _by_source(events: list[dict[str, Any]]) -> dict[tuple[str, str], list[Any]]:
    """Each service's log lines per stream and its states, in order: what both readers must
    agree on (lines of two pipes, or of two services, may interleave differently)."""
    out: dict[tuple[str, str], list[Any]] = {}
    for e in events:
        if e["kind"] == "log":
            out.setdefault((e["service"], e["stream"]), []).append(e["text"])
        elif e["kind"] == "state":
            out.setdefault((e["service"], "state"), []).append((e["state"], e["exit_code"]))
    return out


def test_batches_carry_what_events_carries(make_stack, helper: str):
    dicts = _run_and_read(make_stack, "dicts", helper)
    batched = _run_and_read(make_stack, "batch", helper)
    assert _by_source(batched) == _by_source(dicts)
    assert {tuple(sorted(e)) for e in batched} == {tuple(sorted(e)) for e in dicts}
    lines = _by_source(batched)
    _check_lines(lines[("bytes", "stdout")])
    assert lines[("count", "stderr")] == ["first"]
    assert lines[("count", "stdout")] == [f"n {i}" for i in range(2000)]


def test_columns_line_up_and_states_sit_at_their_place(make_stack, helper: str):
    stack = make_stack()
    stack.add("web", [helper, "lines", "500", "before", "print", "up", "stderr", "oops",
                      "lines", "500", "after", "exit", "3"],
              ready=corral.LogCheck("^up$"))
    stack.event_batch(0)
    stack.start(timeout=60)
    batches = _collect_batches(stack, _exited("web"))
    lines: list[tuple[str, str, str, float]] = []
    states: list[tuple[str, int]] = []  # (state, index into all lines)
    for b in batches:
        assert len(b.lines) == len(b.services) == len(b.streams) == len(b.times) == len(b)
        assert b.dropped == 0
        for st in b.states:
            assert set(st) == {"time", "service", "kind", "state", "reason", "exit_code", "index"}
            assert 0 <= st["index"] <= len(b)
            states.append((st["state"], len(lines) + st["index"]))
        lines += zip(b.services, b.streams, b.lines, b.times, strict=True)
    assert [x[2] for x in lines if x[1] == "stdout"] == (
        [f"before {i}" for i in range(500)] + ["up"] + [f"after {i}" for i in range(500)])
    assert [x[2] for x in lines if x[1] == "stderr"] == ["oops"]
    assert {x[0] for x in lines} == {"web"}
    assert all(math.isfinite(x[3]) and x[3] > 1e9 for x in lines)
    assert [x[3] for x in lines] == sorted(x[3] for x in lines)
    order = [s for s, _ in states]
    assert order == ["starting", "ready", "exited"]
    at = dict(states)
    # "ready" comes right after the line that made it ready; "exited" after every line.
    assert lines[at["ready"] - 1][2] == "up"
    assert at["exited"] == len(lines)
    assert batches[-1].states[-1]["exit_code"] == 3


def test_events_and_batches_share_one_stream(make_stack, helper: str):
    stack = make_stack()
    stack.add("count", [helper, "lines", "20000", "n"])
    stack.events(0)
    stack.start(timeout=60)
    seen: list[str] = []
    calls = 0
    done = _exited("count")
    events: list[dict[str, Any]] = []
    while not done(events):
        got = stack.events(60) if calls % 2 else list(stack.event_batch(60))
        calls += 1
        assert got, "no events within 60 s"
        events += got
        seen += [e["text"] for e in got if e["kind"] == "log"]
    assert seen == [f"n {i}" for i in range(20000)]  # each line once, in order


def test_a_flood_keeps_every_state_event_and_the_byte_budget(make_stack, helper: str):
    # 40 MB of lines (more than twice the queue's budget) while a second service
    # crash-loops; the reader reads nothing until the flood has ended, so the queue must
    # have dropped old lines, and only lines.
    stack = make_stack()
    stack.add("flood", [helper, "flood", str(40_000_000)])
    stack.add("tick", [helper, "exit", "1"],
              restart=corral.Restart("always", backoff=0.01, max_backoff=0.01, jitter=0.0))
    stack.event_batch(0)
    stack.start(timeout=60)
    stack.wait("flood", "exited", timeout=300)
    first = stack.event_batch(0)
    pairs = zip(first.services, first.lines, strict=True)
    queued = sum(EVENT_OVERHEAD + len(s) + len(t.encode()) for s, t in pairs)
    queued += sum(EVENT_OVERHEAD + len(s["service"]) + len(s["reason"].encode()) for s in first.states)
    assert queued <= BUDGET
    assert first.dropped > 0
    stack.stop("tick", timeout=60)
    restarts = stack["tick"].restarts
    stopped = _state("tick", "stopped")
    batches = [first, *_collect_batches(stack, stopped)]
    ticks = [s["state"] for b in batches for s in b.states if s["service"] == "tick"]
    # Every respawn is one "starting" (the first spawn too), every exit one "backoff".
    assert ticks.count("starting") == restarts + 1
    assert ticks.count("backoff") >= restarts
    assert ticks[-1] == "stopped"
    lines = sum(len(b) for b in batches) + sum(b.dropped for b in batches)
    assert lines == stack["flood"].status()["log_lines"]
