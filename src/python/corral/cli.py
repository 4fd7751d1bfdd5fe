"""The `corral` command line: `up`, `check` and `graph`.

`corral up` runs a stack in the foreground: it streams every service's log lines with a
name prefix, and on Ctrl+C or SIGTERM stops everything in reverse dependency order and
exits 0. When the stack cannot start it says why, shows the failing service's last log
lines, stops what did start and exits 1.
"""

from __future__ import annotations

import argparse
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


def _print_events(stack: Any, printer: _Printer, verbose: bool, timeout: float) -> None:
    for ev in stack.events(timeout):
        kind = ev["kind"]
        if kind == "log":
            printer.line(ev["service"], ev["text"])
        elif kind == "state":
            state = ev["state"]
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
    printer.flush()


def _cmd_up(args: argparse.Namespace) -> int:
    from .stack import Stack

    path = _find_file(args.file)
    stack = Stack.load(path)
    for name in args.services:  # unknown names fail before anything starts
        if name not in stack:
            raise ConfigError(f"unknown service '{name}' (services: {', '.join(stack.services)})",
                              file=path)
    printer = _Printer(list(stack.services), sys.stdout)
    stop_requested = threading.Event()

    signals = [0]

    def on_signal(signum: int, frame: object) -> None:
        signals[0] += 1
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stack.events(0)  # subscribe before anything runs, so no line is missed
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
        while not stop_requested.is_set():
            _print_events(stack, printer, args.verbose, 0.1)
            if "error" in outcome:
                error = outcome.pop("error")
                if error is not None:
                    _print_events(stack, printer, args.verbose, 0)
                    sys.stderr.write(f"corral: {error}\n")
                    code = 1
                    break
                sys.stderr.write(f"corral: stack ready ({len(stack)} services); Ctrl+C to stop\n")
                sys.stderr.flush()
            if "error" not in outcome and not starter.is_alive() and _all_settled(stack):
                failed = [r["name"] for r in stack.status() if r["state"] == "failed"]
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
            _print_events(stack, printer, args.verbose, 0.1)
            if signals[0] >= 2 and not killed:
                # A second Ctrl+C, as with docker compose: no more grace periods.
                sys.stderr.write("corral: killing\n")
                killed = True
                stack.kill()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


def _all_settled(stack: Any) -> bool:
    # Once the start is over, a service still pending was not asked for (`up SERVICE`) or
    # waits on one that ended: nothing more will happen by itself.
    return all(r["state"] in ("stopped", "exited", "failed", "pending") for r in stack.status())


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
