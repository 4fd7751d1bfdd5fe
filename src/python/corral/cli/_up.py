"""`corral up` in the foreground, and `corral check` and `corral graph`.

`corral up` runs a stack in the foreground: it streams every service's log lines with a
name prefix, and on Ctrl+C or SIGTERM stops everything in reverse dependency order and
exits 0. When the stack cannot start it says why, shows the failing service's last log
lines, stops what did start and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from .._events import EventBatch
from ..errors import ConfigError, CorralError
from ._common import Printer as _Printer
from ._common import find_file as _find_file


def _print_events(stack: Any, printer: _Printer, verbose: bool, timeout: float,
                  states: dict[str, str], on_state: Callable[[], None] | None = None) -> bool:
    """Prints the events of the next `timeout` seconds and records each service's state in
    `states` (then calls `on_state`, once per call). False when nothing came. `stack` is a
    Stack, read as columns (`event_batch`): the log lines between two state events go out
    in one write, so a flooding service costs a string format per line, not a dict and a
    write; or a client of a running stack, which has only `events()`."""
    take = getattr(stack, "event_batch", None)
    batch = take(timeout) if take is not None else EventBatch.from_events(stack.events(timeout))
    changed = False
    if batch.dropped:
        printer.out.write(f"[corral] {batch.dropped} log lines dropped (output too fast)\n")
        # What was dropped may include state changes: read them afresh, once.
        states.update({r["name"]: r["state"] for r in stack.status()})
        changed = True
    prefixes: dict[str, str] = {}
    lines, services = batch.lines, batch.services

    def write_lines(begin: int, end: int) -> None:
        if begin >= end:
            return
        for name in set(services[begin:end]) - prefixes.keys():
            prefixes[name] = printer.prefix(name) + " "
        pairs = zip(services[begin:end], lines[begin:end], strict=True)
        printer.out.write("".join([f"{prefixes[n]}{t}\n" for n, t in pairs]))

    at = 0
    for ev in batch.states:
        write_lines(at, ev["index"])
        at = ev["index"]
        state = ev["state"]
        states[ev["service"]] = state
        changed = True
        if state == "starting" and verbose and ev.get("reason"):
            printer.line(ev["service"], f"[corral] run: {ev['reason']}")
        elif state in ("ready", "failed", "exited", "stopped", "backoff", "unhealthy") or verbose:
            detail = ""
            if ev.get("exit_code") is not None and state in ("exited", "backoff", "stopped", "failed"):
                detail = f" (exit code {ev['exit_code']})"
            if state == "failed" and ev.get("reason"):
                detail = f": {ev['reason']}"
            printer.line(ev["service"], f"[corral] {state}{detail}")
    write_lines(at, len(lines))
    printer.flush()
    if changed and on_state is not None:
        on_state()
    return bool(batch)


def _drain(stack: Any, printer: _Printer, verbose: bool, states: dict[str, str]) -> None:
    """Prints every event still queued, however many. The first call after a close may come
    back empty with more still queued (the engine re-subscribes then), so it takes two empty
    answers in a row to be done."""
    empty = 0
    while empty < 2:
        empty = 0 if _print_events(stack, printer, verbose, 0, states) else empty + 1


class _Wakeup:
    """What the main thread of `corral up` sleeps on: a pipe that the log reader (after a
    state change) and the start and stop threads (when they end) write a byte to. A
    blocking read wakes only for those, never on a timer, so an idle `corral up` costs no
    CPU. It is also the signal wake-up fd: the kernel may deliver SIGINT to any thread, and
    Python's C handler then only notes it, but it writes to that fd, so the main thread
    wakes and runs the Python handler."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.w, False)
        self.previous_fd = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)

    def poke(self) -> None:
        with contextlib.suppress(OSError):  # full: the main thread has wake-ups enough queued
            os.write(self.w, b".")

    def wait(self) -> None:
        os.read(self.r, 4096)

    def close(self) -> None:
        signal.set_wakeup_fd(self.previous_fd)
        os.close(self.r)
        os.close(self.w)


def cmd_up(args: argparse.Namespace) -> int:
    from ..stack import Stack

    path = _find_file(args.file)
    stack = Stack.load(path)
    for name in args.services:  # unknown names fail before anything starts
        if name not in stack:
            raise ConfigError(f"unknown service '{name}' (services: {', '.join(stack.services)})",
                              file=path)
    if args.exit_code_from is not None and args.exit_code_from not in stack:
        raise ConfigError(f"--exit-code-from: unknown service '{args.exit_code_from}' "
                          f"(services: {', '.join(stack.services)})", file=path)
    # As with docker compose: --exit-code-from implies --abort-on-exit.
    abort_on_exit = args.abort_on_exit or args.exit_code_from is not None
    printer = _Printer(list(stack.services), sys.stdout)
    wake = _Wakeup()
    signals = [0]

    def on_signal(signum: int, frame: object) -> None:
        signals[0] += 1
        if signals[0] == 1:
            # Begin the stop right here: it only posts to the engine.
            stack._post_close()
        wake.poke()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    # Subscribe before anything runs, so no line is missed; lossless: when the terminal is
    # slower than the services, they wait for it instead of their lines being dropped.
    stack._subscribe(lossless=True)
    states = {r["name"]: r["state"] for r in stack.status()}
    outcome: dict[str, BaseException | None] = {}
    # Set by each thread right before its last wake-up: a thread that has just poked may
    # still be alive when the main thread wakes, so is_alive() would lose that wake-up.
    ended: set[str] = set()

    def read() -> None:
        # Prints every event as it comes (a thread other than the main one waits in one
        # piece, without time slices) and wakes the main thread on state changes. It ends
        # when the stack is closed and every event has been printed.
        try:
            while _print_events(stack, printer, args.verbose, math.inf, states, wake.poke):
                pass
        finally:
            ended.add("reader")
            wake.poke()

    def start() -> None:
        try:
            stack.start(*args.services)
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc
        ended.add("starter")
        wake.poke()

    reader = threading.Thread(target=read, name="corral-logs", daemon=True)
    reader.start()
    starter = threading.Thread(target=start, name="corral-start", daemon=True)
    starter.start()
    code = 0
    error: BaseException | None = None
    try:
        # Everything is driven by wake-ups: states come from state events, so an idle
        # `corral up` sleeps in wake.wait() instead of polling status().
        while not signals[0]:
            if "error" in outcome:
                error = outcome.pop("error")
                if error is not None:
                    code = 1
                    break  # the reason is printed last, after the stop's events
                sys.stderr.write(f"corral: stack ready ({len(stack)} services); Ctrl+C to stop\n")
                if any(stack[name].spec.ports for name in stack.services):
                    for line in _port_lines(stack.status()):
                        sys.stderr.write(f"  {line}\n")
                sys.stderr.flush()
            ended_one = _first_ended(stack, states, "starter" not in ended) if abort_on_exit else None
            if ended_one is not None:
                name, exit_code = ended_one
                sys.stderr.write(f"corral: {name} ended (exit code {exit_code}); stopping the stack\n")
                code = _shell_code(exit_code)
                break
            # The reader's states may lag behind the engine (a "pending" not yet replaced by
            # "ready"): they only say when to look at the engine's own.
            if ("starter" in ended and "error" not in outcome and _all_settled(dict(states))
                    and _all_settled(now := _engine_states(stack, dict(states)))):
                failed = [name for name, state in now.items() if state == "failed"]
                sys.stderr.write("corral: every service has ended"
                                 + (f"; failed: {', '.join(failed)}\n" if failed else "\n"))
                code = 1 if failed else 0
                break
            if "reader" in ended:
                break  # the stack was closed under us
            wake.wait()
    finally:
        if signals[0]:
            sys.stderr.write("corral: stopping (press Ctrl+C again to kill)\n")

        def stop() -> None:
            try:
                stack.close()
            finally:
                ended.add("stopper")
                wake.poke()

        stopper = threading.Thread(target=stop, name="corral-stop", daemon=True)
        stopper.start()
        killed = False
        while "stopper" not in ended:
            if signals[0] >= 2 and not killed:
                # A second Ctrl+C, as with docker compose: no more grace periods.
                sys.stderr.write("corral: killing\n")
                killed = True
                stack.kill()
            wake.wait()
        reader.join()  # the stack is closed: the reader prints what is left, then ends
        _drain(stack, printer, args.verbose, states)
        if error is not None:
            sys.stderr.write(f"corral: {error}\n")
        if args.exit_code_from is not None and error is None:
            code = _shell_code(next((r["exit_code"] for r in stack.status()
                                     if r["name"] == args.exit_code_from), None))
        for s, handler in previous.items():
            signal.signal(s, handler)
        wake.close()
    return code


def _engine_states(stack: Any, seen: dict[str, str]) -> dict[str, str]:
    """The engine's states, once they show what the events `seen` said. The engine sends a
    state event before it updates the status snapshot (Impl::dispatch), so right after the
    last event status() may still say `stopping`; no event would wake us again, so wait for
    the engine itself there (a wait on its state, not a poll)."""
    now = {r["name"]: r["state"] for r in stack.status()}
    lagging = [n for n, state in seen.items() if now.get(n) != state]
    for name in lagging:
        with contextlib.suppress(CorralError):  # it went elsewhere since: the next event says
            stack.wait(name, seen[name], timeout=10)
    return {r["name"]: r["state"] for r in stack.status()} if lagging else now


def _port_lines(rows: list[dict[str, Any]]) -> list[str]:
    """`api: http=41233 admin=41234`, one line per service that has ports."""
    width = max((len(r["name"]) for r in rows if r["ports"]), default=0)
    return [f"{r['name'] + ':':<{width + 1}} " + " ".join(f"{k}={v}" for k, v in sorted(r["ports"].items()))
            for r in rows if r["ports"]]


def _first_ended(stack: Any, states: dict[str, str], starting: bool) -> tuple[str, int | None] | None:
    """The first service that has ended by itself for good, with its exit code; checked
    against the engine, as the reader's states may lag behind. While the start runs only
    `exited` counts: a failure then is the start's to report, with its reason."""
    ends = ("exited",) if starting else ("exited", "failed")
    seen = {n: state for n, state in dict(states).items() if state in ends}
    if not seen:
        return None
    for row in stack.status():
        if row["state"] in ends:
            return row["name"], row["exit_code"]
    # The events said so, the snapshot does not yet (see _engine_states): wait for it.
    _engine_states(stack, seen)
    for row in stack.status():
        if row["state"] in ends:
            return row["name"], row["exit_code"]
    return None


def _shell_code(exit_code: int | None) -> int:
    """A service's exit as a process exit status: its code, 128+N for a signal N (as a
    shell reports it), 1 when it never ran."""
    if exit_code is None:
        return 1
    return 128 - exit_code if exit_code < 0 else exit_code


def _all_settled(states: dict[str, str]) -> bool:
    # Once the start is over, a service still pending was not asked for (`up SERVICE`) or
    # waits on one that ended: nothing more will happen by itself.
    return all(state in ("stopped", "exited", "failed", "pending") for state in states.values())


def cmd_check(args: argparse.Namespace) -> int:
    from ..stack import Stack

    path = _find_file(args.file)
    stack = Stack.load(path)
    levels = stack.levels()
    print(f"{path}: {len(stack)} services, {len(levels)} levels")
    for i, level in enumerate(levels):
        print(f"  level {i}: {', '.join(level)}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from ..stack import Stack

    stack = Stack.load(_find_file(args.file))
    for level in stack.levels():
        for name in level:
            spec = stack[name].spec
            deps = ", ".join(f"{d} ({c})" for d, c in spec.depends_on.items())
            cmd = spec.command if isinstance(spec.command, str) else shlex.join(spec.command)
            print(f"{name}" + (f" <- {deps}" if deps else ""))
            if args.verbose:
                print(f"    {cmd}")
    return 0


