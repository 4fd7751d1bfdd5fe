"""The `corral` command line: `up`, `check` and `graph`.

`corral up` runs a stack in the foreground: it streams every service's log lines with a
name prefix, and on Ctrl+C or SIGTERM stops everything in reverse dependency order and
exits 0. When the stack cannot start it says why, shows the failing service's last log
lines, stops what did start and exits 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
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
                  states: dict[str, str]) -> bool:
    """Prints what `events(timeout)` returns and records each service's state in `states`.
    False when nothing came."""
    events = stack.events(timeout)
    for ev in events:
        kind = ev["kind"]
        if kind == "log":
            printer.line(ev["service"], ev["text"])
        elif kind == "state":
            state = ev["state"]
            states[ev["service"]] = state
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
    printer.flush()
    return bool(events)


def _drain(stack: Any, printer: _Printer, verbose: bool, states: dict[str, str]) -> None:
    """Prints every event still queued, however many (one events() call returns at most
    4,096). The first call after a close may come back empty with more still queued (the
    engine re-subscribes then), so it takes two empty answers in a row to be done."""
    empty = 0
    while empty < 2:
        empty = 0 if _print_events(stack, printer, verbose, 0, states) else empty + 1


def _cmd_up(args: argparse.Namespace) -> int:
    from .stack import Stack

    path = _find_file(args.file)
    stack = Stack.load(path)
    for name in args.services:  # unknown names fail before anything starts
        if name not in stack:
            raise ConfigError(f"unknown service '{name}' (services: {', '.join(stack.services)})",
                              file=path)
    printer = _Printer(list(stack.services), sys.stdout)
    signals = [0]

    def on_signal(signum: int, frame: object) -> None:
        signals[0] += 1
        if signals[0] == 1:
            # Begin the stop right here: its state events (or, with nothing running, the
            # close itself) end the wait in events(). Raising instead could lose the events
            # that the call had just returned.
            stack._post_close()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    # Subscribe before anything runs, so no line is missed; lossless: when the terminal is
    # slower than the services, they wait for it instead of their lines being dropped.
    stack._subscribe(lossless=True)
    # Everything below is driven by the event stream: the states come from state events,
    # so an idle `corral up` sleeps in events() instead of polling status().
    states = {r["name"]: r["state"] for r in stack.status()}
    outcome: dict[str, BaseException | None] = {}

    def start() -> None:
        try:
            stack.start(*args.services)
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    starter = threading.Thread(target=start, name="corral-start", daemon=True)
    starter.start()
    code = 0
    try:
        while not signals[0]:
            # While the start runs, its end is not an event: look for it every 0.1 s.
            # Afterwards only events matter, and the wait is as long as they take.
            wait = 0.1 if starter.is_alive() else 0 if "error" in outcome else math.inf
            _print_events(stack, printer, args.verbose, wait, states)
            if signals[0]:
                break  # a stop asked for; the start that it interrupts is no failure
            if "error" in outcome:
                error = outcome.pop("error")
                if error is not None:
                    _drain(stack, printer, args.verbose, states)
                    sys.stderr.write(f"corral: {error}\n")
                    code = 1
                    break
                sys.stderr.write(f"corral: stack ready ({len(stack)} services); Ctrl+C to stop\n")
                sys.stderr.flush()
            if not starter.is_alive() and "error" not in outcome and _all_settled(states):
                failed = [name for name, state in states.items() if state == "failed"]
                sys.stderr.write("corral: every service has ended"
                                 + (f"; failed: {', '.join(failed)}\n" if failed else "\n"))
                code = 1 if failed else 0
                break
    finally:
        if signals[0]:
            sys.stderr.write("corral: stopping (press Ctrl+C again to kill)\n")
        stopper = threading.Thread(target=stack.close, name="corral-stop", daemon=True)
        stopper.start()
        killed = False
        while stopper.is_alive():
            _print_events(stack, printer, args.verbose, 0.1, states)
            if signals[0] >= 2 and not killed:
                # A second Ctrl+C, as with docker compose: no more grace periods.
                sys.stderr.write("corral: killing\n")
                killed = True
                stack.kill()
        _drain(stack, printer, args.verbose, states)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


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
    p = argparse.ArgumentParser(prog="corral", description="Supervise a stack of local processes.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the stack in the foreground and stream its logs")
    up.add_argument("-f", "--file", help="config file (default: corral.toml or corral.yaml here)")
    up.add_argument("-v", "--verbose", action="store_true", help="show each command as it is run")
    up.add_argument("services", nargs="*", metavar="SERVICE", help="only these (and their dependencies)")
    up.set_defaults(func=_cmd_up)

    check = sub.add_parser("check", help="validate a config file and print the start order")
    check.add_argument("-f", "--file")
    check.set_defaults(func=_cmd_check)

    graph = sub.add_parser("graph", help="print the dependency graph")
    graph.add_argument("-f", "--file")
    graph.add_argument("-v", "--verbose", action="store_true", help="show commands too")
    graph.set_defaults(func=_cmd_graph)

    history = sub.add_parser("history", help="show what the stack's history database kept")
    history.add_argument("service", nargs="?", metavar="SERVICE", help="only this service")
    history.add_argument("--since", help="only the last DURATION (90s, 15m, 1h, 2d)")
    history.add_argument("--json", action="store_true", help="print a JSON array")
    history.add_argument("--runs", action="store_true", help="one row per process run instead of events")
    history.add_argument("--db", help="the database (default: the config file's `history`)")
    history.add_argument("-f", "--file")
    history.set_defaults(func=_cmd_history)
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
