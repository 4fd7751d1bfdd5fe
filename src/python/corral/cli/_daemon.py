"""`corral up -d`: a daemon that owns the stack and serves its API, started so that the
command returns only once the whole stack is ready (or has failed, with the reason).

The parent validates the config, then double-forks: the first child calls setsid() and
forks the daemon, which is therefore in a session of its own, re-parented to init (or the
nearest subreaper), with no controlling terminal. The daemon reads nothing (stdin is
/dev/null) and writes its output (every service's lines, prefixed as by `corral up`) to a
log file. It tells the parent the outcome through a pipe: one JSON line with its pid at
once, then one with the outcome; the parent's read ends at EOF, so a daemon that dies
before saying anything is noticed too.

The daemon leaves a record `<runtime dir>/daemon/<pid>.json` (its start time, stack, log
file) so that `corral down` and `corral ls` know a detached stack from one a script owns.
It exits when a client asks its stack to stop (`POST /v1/stack/stop`: `corral down`) or on
SIGTERM, after closing the stack. SIGKILLed, its services die with it all the same: the
engine's death watcher kills them, and `corral ls` prunes its info file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

from .. import _api
from .._api import process_start_time
from ..errors import ConfigError, CorralError, StartError

if TYPE_CHECKING:
    from ..stack import Stack


def _dir() -> str:
    from .. import _core

    return str(_core.private_dir(os.path.join(_core.runtime_dir(), "daemon")))


def _record(pid: int | None) -> dict[str, Any] | None:
    """The daemon record of `pid`, when that process is one of our daemons (its start time
    matches: a recycled pid is not taken for it)."""
    if pid is None:
        return None
    try:
        path = os.path.join(_dir(), f"{int(pid)}.json")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, CorralError):
        return None
    with os.fdopen(fd) as f:
        try:
            data: dict[str, Any] = json.load(f)
        except ValueError:
            return None
    if data.get("start_time") != process_start_time(int(pid)) or _api.is_zombie(int(pid)):
        with contextlib.suppress(OSError):
            os.unlink(path)  # its daemon is gone (SIGKILL): forget it
        return None
    return data


def prune() -> None:
    """Forgets the records of daemons that are gone (SIGKILLed: they could not remove their own)."""
    with contextlib.suppress(OSError, CorralError):
        for entry in os.listdir(_dir()):
            if entry.endswith(".json") and entry[:-5].isdigit():
                _record(int(entry[:-5]))


def is_daemon(pid: int | None) -> bool:
    return _record(pid) is not None


def log_of(pid: int | None) -> str | None:
    record = _record(pid)
    return None if record is None else str(record.get("log"))


class _Stop(BaseException):
    """Raised by the daemon's SIGTERM handler (a BaseException, as KeyboardInterrupt, so
    that nothing on the way swallows it)."""


def _daemon(path: str, services: list[str], report: int, log: str) -> int:
    """The daemon's life: start the stack, tell the parent, serve until asked to stop."""
    from ..stack import Stack
    from ._common import Printer
    from ._up import _print_events

    def on_term(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def tell(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the parent is gone (Ctrl+C): go on all the same
            os.write(report, (json.dumps(message) + "\n").encode())

    tell({"pid": os.getpid(), "log": log})
    record = os.path.join(_dir(), f"{os.getpid()}.json")
    stack: Stack | None = None
    reader: threading.Thread | None = None
    try:
        try:
            stack = Stack.load(path)
            printer = Printer(list(stack.services), sys.stdout)
            stack._subscribe(lossless=False)  # a full disk must not stall the services: drop
            states: dict[str, str] = {}
            events_of = stack

            def read() -> None:
                while _print_events(events_of, printer, False, math.inf, states):
                    pass

            reader = threading.Thread(target=read, name="corral-log", daemon=True)
            reader.start()
            stack.start(*services)
        except StartError as exc:
            tell({"ok": False, "service": exc.service, "reason": exc.reason, "log_tail": exc.log_tail})
            return 1
        except _Stop:
            tell({"ok": False, "reason": "stopped by a signal while starting"})
            return 1
        except BaseException as exc:  # the config changed since the parent read it, or a bug
            traceback.print_exc()
            tell({"ok": False, "reason": str(exc) or repr(exc)})
            return 1
        api = stack.api
        if api is None:  # nobody could reach or stop it: refuse to run unreachable
            tell({"ok": False, "reason": "the stack's control API could not start (see the log)"})
            return 1
        _api._write_private(record, json.dumps({
            "pid": os.getpid(), "start_time": process_start_time(os.getpid()), "name": stack.name,
            "config": os.path.realpath(path), "log": log}))
        tell({"ok": True, "pid": os.getpid(), "socket": api["socket"], "log": log, "status": stack.status()})
        os.close(report)
        report = -1
        sys.stdout.write(f"[corral] stack '{stack.name}' ready; daemon pid {os.getpid()}\n")
        sys.stdout.flush()
        with contextlib.suppress(_Stop):
            while not stack._wait_stop_request(None):
                pass
        sys.stdout.write("[corral] stopping\n")
    finally:
        # Stopped before the pipe closes: the parent's EOF after a failure means nothing of
        # the stack is left.
        if stack is not None:
            with contextlib.suppress(_Stop):
                stack.close()
        if reader is not None:
            reader.join(30)
        with contextlib.suppress(OSError):
            os.unlink(record)
        if report >= 0:
            os.close(report)
        sys.stdout.write("[corral] stopped\n")
        sys.stdout.flush()
    return 0


def _spawn(path: str, services: list[str], log: str) -> tuple[int, int]:
    """Forks the daemon; returns (read end of its report pipe, first child's pid)."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(w)
        return r, pid
    # First child: a session of its own, then the daemon as its child, so the daemon is no
    # session leader and can never acquire a controlling terminal.
    try:
        os.close(r)
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        os.chdir("/")  # hold no directory busy (the config's path is absolute)
    except BaseException as exc:  # a daemon reports, it never raises
        with contextlib.suppress(Exception):
            os.write(w, (json.dumps({"ok": False, "reason": f"the daemon could not start: {exc!r}"})
                         + "\n").encode())
        os._exit(1)
    code = 1
    try:
        code = _daemon(path, services, w, log)  # it owns `w` from here on, and closes it
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _read_report(r: int, messages: list[dict[str, Any]]) -> None:
    """Reads the daemon's report lines into `messages` until it closes the pipe."""
    data = b""
    try:
        while chunk := os.read(r, 65536):
            data += chunk
            *lines, rest = data.split(b"\n")
            data = rest
            for line in lines:
                with contextlib.suppress(ValueError):
                    messages.append(json.loads(line))
    finally:
        os.close(r)


def _tail(path: str, n: int = 20) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def cmd_up_detached(args: argparse.Namespace) -> int:
    from ..client import connect, list_stacks
    from ..stack import Stack
    from ._common import find_file
    from ._up import _port_lines

    path = os.path.abspath(find_file(args.file))
    stack = Stack.load(path)  # config errors are the parent's to report, before any fork
    for name in args.services:
        if name not in stack:
            raise ConfigError(f"unknown service '{name}' (services: {', '.join(stack.services)})", file=path)
    real = os.path.realpath(path)
    if any(s.get("config") == real for s in list_stacks()):
        client = connect(path)
        # As `docker compose up -d` on a project that runs: nothing to do, and that is fine.
        sys.stdout.write(f"corral: stack '{client.name}' already runs (pid {client.pid}, "
                         f"socket {client.socket})\n")
        return 0
    log = os.path.join(_dir(), f"{_api.stack_key(stack.name, path)}.log")
    r, first = _spawn(path, list(args.services), log)
    os.waitpid(first, 0)  # the first child exits at once; the daemon is not our child
    messages: list[dict[str, Any]] = []
    try:
        _read_report(r, messages)
    except KeyboardInterrupt:
        # Ctrl+C while it starts: stop the daemon too (it closes what did start).
        pid = next((m["pid"] for m in messages if "pid" in m), None)
        sys.stderr.write("corral: interrupted; stopping the daemon\n")
        if pid is not None:
            from ._remote import _wait_gone

            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 60.0)  # it stops what did start first: then nothing is left
        return 130
    daemon_pid = next((m["pid"] for m in messages if "pid" in m), None)
    outcome = next((m for m in messages if "ok" in m), None)
    if outcome is None or not outcome["ok"]:
        if outcome is None:
            reason = f"the daemon{f' (pid {daemon_pid})' if daemon_pid else ''} ended without a word"
            tail = _tail(log)
            service = None
        else:
            reason, tail, service = outcome["reason"], outcome.get("log_tail", []), outcome.get("service")
        if service:
            sys.stderr.write(f"corral: error: service '{service}' failed to start: {reason}\n")
            if tail:
                sys.stderr.write(f"--- last log lines of {service} ---\n" + "\n".join(tail) + "\n")
        else:
            sys.stderr.write(f"corral: error: {reason}\n")
            if tail:
                sys.stderr.write(f"--- last lines of the daemon's log {log} ---\n" + "\n".join(tail) + "\n")
        if daemon_pid is not None:
            from ._remote import _wait_gone

            _wait_gone(daemon_pid, 60.0)  # it stops what did start: "nothing left" means gone
        return 1
    rows = outcome["status"]
    sys.stdout.write(f"corral: stack '{stack.name}' is up ({len(rows)} services ready)\n")
    sys.stdout.write(f"  daemon: pid {outcome['pid']}\n  socket: {outcome['socket']}\n  log:    {log}\n")
    for line in _port_lines(rows):
        sys.stdout.write(f"  {line}\n")
    return 0
