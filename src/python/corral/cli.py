"""The `corral` command line: `up`, `check` and `graph`.

`corral up` runs a stack in the foreground: it streams every service's log lines with a
name prefix, and on Ctrl+C or SIGTERM stops everything in reverse dependency order and
exits 0. When the stack cannot start it says why, shows the failing service's last log
lines, stops what did start and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError, CorralError, StartError

__all__ = ["main"]

_DEFAULT_FILES = ("corral.toml", "corral.yaml", "corral.yml")
_COLORS = (36, 33, 32, 35, 34, 91, 96, 93, 92, 95, 94)


def _find_file(path: str | None) -> str:
    if path:
        return path
    for name in _DEFAULT_FILES:
        if Path(name).is_file():
            return name
    raise ConfigError(
        f"no {' or '.join(_DEFAULT_FILES[:2])} in {os.getcwd()} (use -f FILE to name one)")


class _Printer:
    """Prefixes each line with its service name, padded and coloured (when a terminal)."""

    def __init__(self, names: list[str], out: TextIO) -> None:
        self.out = out
        self.width = max((len(n) for n in names), default=6)
        self.color = out.isatty() and "NO_COLOR" not in os.environ
        self.palette = {n: _COLORS[i % len(_COLORS)] for i, n in enumerate(names)}

    def prefix(self, name: str) -> str:
        label = f"{name:<{self.width}} |"
        if self.color:
            return f"\x1b[{self.palette.get(name, 37)}m{label}\x1b[0m"
        return label

    def line(self, name: str, text: str) -> None:
        self.out.write(f"{self.prefix(name)} {text}\n")

    def flush(self) -> None:
        self.out.flush()


def _print_events(stack: Any, printer: _Printer, verbose: bool, timeout: float,
                  states: dict[str, str], on_state: Callable[[], None] | None = None) -> bool:
    """Prints what `events(timeout)` returns and records each service's state in `states`
    (then calls `on_state`, once per call). False when nothing came."""
    events = stack.events(timeout)
    changed = False
    for ev in events:
        kind = ev["kind"]
        if kind == "log":
            printer.line(ev["service"], ev["text"])
        elif kind == "state":
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
        elif kind == "dropped":
            printer.out.write(f"[corral] {ev['count']} log lines dropped (output too fast)\n")
            # What was dropped may include state changes: read them afresh, once.
            states.update({r["name"]: r["state"] for r in stack.status()})
            changed = True
    printer.flush()
    if changed and on_state is not None:
        on_state()
    return bool(events)


def _drain(stack: Any, printer: _Printer, verbose: bool, states: dict[str, str]) -> None:
    """Prints every event still queued, however many (one events() call returns at most
    4,096). The first call after a close may come back empty with more still queued (the
    engine re-subscribes then), so it takes two empty answers in a row to be done."""
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


def _cmd_up(args: argparse.Namespace) -> int:
    from .stack import Stack

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
            starting = "starter" not in ended
            if abort_on_exit and (ended_one := _first_ended(stack, states, starting)) is not None:
                name, exit_code = ended_one
                sys.stderr.write(f"corral: {name} ended (exit code {exit_code}); stopping the stack\n")
                code = _shell_code(exit_code)
                break
            # The reader's states may lag behind the engine (a "pending" not yet replaced by
            # "ready"): they only say when to look at the engine's own.
            if ("starter" in ended and "error" not in outcome and _all_settled(dict(states))
                    and _all_settled(now := {r["name"]: r["state"] for r in stack.status()})):
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
    if not any(state in ends for state in states.values()):
        return None
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


def _cmd_check(args: argparse.Namespace) -> int:
    from .stack import Stack

    path = _find_file(args.file)
    stack = Stack.load(path)
    levels = stack.levels()
    print(f"{path}: {len(stack)} services, {len(levels)} levels")
    for i, level in enumerate(levels):
        print(f"  level {i}: {', '.join(level)}")
    return 0


def _cmd_graph(args: argparse.Namespace) -> int:
    from .stack import Stack

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


def _cmd_resources(args: argparse.Namespace) -> int:
    """Every live resource claim on this machine (ports included), whoever holds it."""
    import json

    from .resources import claims

    rows = claims()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("type", "value", "stack", "service", "pid")
    table = [columns] + [tuple(str(r[c]) for c in columns) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    """corral history [SERVICE] [--since 1h] [--json] [--db PATH]: what the history
    database kept (the `history` key of the config file names it, or --db)."""
    from .history import format_records, parse_since, read_history, read_runs
    from .spec import load_file

    db = args.db
    if db is None:
        config = load_file(_find_file(args.file))
        if config.history is None:
            raise ConfigError(f"{config.file}: the stack keeps no history (set history, or use --db)")
        db = config.history
    since = parse_since(args.since)
    if args.runs:
        runs = read_runs(db, args.service, since)
        print(json.dumps(runs) if args.json else "\n".join(
            f"{r['service']:<20} pid {r['pid']:<8} {r['reason'] or '':<8} ready {_secs(r['ready_seconds'])}  "
            f"ran {_secs(r['run_seconds'])}  " + (f"signal {r['signal']}" if r["signal"] else
                                                  f"code {r['code']}" if r["code"] is not None else "")
            for r in runs))
        return 0
    text = format_records(read_history(db, args.service, since), args.json)
    if text:
        print(text)
    return 0


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}s"


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="corral", description="Supervise a stack of local processes.")
    p.add_argument("--version", action="version", version=f"corral {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the stack in the foreground and stream its logs")
    up.add_argument("-f", "--file", help="config file (default: corral.toml or corral.yaml here)")
    up.add_argument("-v", "--verbose", action="store_true", help="show each command as it is run")
    up.add_argument("--abort-on-exit", action="store_true",
                    help="stop the whole stack as soon as one service ends by itself, and exit with its code")
    up.add_argument("--exit-code-from", metavar="SERVICE",
                    help="exit with SERVICE's exit code (implies --abort-on-exit)")
    up.add_argument("services", nargs="*", metavar="SERVICE", help="only these (and their dependencies)")
    up.set_defaults(func=_cmd_up)

    check = sub.add_parser("check", help="validate a config file and print the start order")
    check.add_argument("-f", "--file")
    check.set_defaults(func=_cmd_check)

    graph = sub.add_parser("graph", help="print the dependency graph")
    graph.add_argument("-f", "--file")
    graph.add_argument("-v", "--verbose", action="store_true", help="show commands too")
    graph.set_defaults(func=_cmd_graph)

    resources = sub.add_parser("resources", help="list every resource claim on this machine")
    resources.add_argument("--json", action="store_true", help="as a JSON list of claims")
    resources.set_defaults(func=_cmd_resources)
    history = sub.add_parser("history", help="show what the stack's history database kept")
    history.add_argument("service", nargs="?", metavar="SERVICE", help="only this service")
    history.add_argument("--since", help="only the last DURATION (90s, 15m, 1h, 2d)")
    history.add_argument("--json", action="store_true", help="print a JSON array")
    history.add_argument("--runs", action="store_true", help="one row per process run instead of events")
    history.add_argument("--db", help="the database (default: the config file's `history`)")
    history.add_argument("-f", "--file")
    history.set_defaults(func=_cmd_history)

    from ._dashboard import add_parser as add_dashboard

    add_dashboard(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, StartError, CorralError) as exc:
        sys.stderr.write(f"corral: error: {exc}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
