"""The commands that talk to a running stack through its control API: `ls`, `ps`, `logs`,
`start`, `stop`, `restart`, `down` and `metrics`.

Each finds its stack with `corral.connect` (from `--name`, `-f FILE` or the current
directory's config file) and exits 1 with one line saying so when no such stack runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import select
import sys
import urllib.parse
from typing import Any

from ..errors import CorralError, StartError
from ._common import Printer, connect, duration, since, table

_DONE = {"start": "started", "stop": "stopped", "restart": "restarted"}


def _json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def cmd_ls(args: argparse.Namespace) -> int:
    from ..client import Client, _Transport, list_stacks
    from . import _daemon

    out: list[dict[str, Any]] = []
    _daemon.prune()
    for info in list_stacks():
        row: dict[str, Any] = {
            "name": info.get("name"), "pid": info.get("pid"), "config": info.get("config"),
            "socket": info.get("socket"), "url": info.get("url"),
            "started_at": info.get("started_at"), "uptime": since(info.get("started_at")),
            "services": None, "ready": None, "detached": _daemon.is_daemon(info.get("pid")),
        }
        try:
            stack = Client(_Transport(info["socket"], None, None), info)._get("/v1/stack")
            row["services"] = stack["services"]
            row["ready"] = int(stack["states"].get("ready", 0))
        except (CorralError, KeyError):
            pass  # its owner is alive but does not answer (yet): list it all the same
        out.append(row)
    if args.json:
        _json(out)
        return 0
    if not out:
        sys.stderr.write("corral: no running stacks\n")
        return 0
    rows = [["NAME", "PID", "READY", "UPTIME", "OWNER", "CONFIG", "SOCKET"]]
    for r in out:
        ready = "?" if r["services"] is None else f"{r['ready']}/{r['services']}"
        rows.append([str(r["name"]), str(r["pid"]), ready, duration(r["uptime"]),
                     "daemon" if r["detached"] else "process", r["config"] or "-", r["socket"] or "-"])
    table(rows, sys.stdout)
    return 0


def _state_text(row: dict[str, Any]) -> str:
    """The state and why: `exited (1)`, `failed: readiness deadline...`, `ready`."""
    state = str(row["state"])
    if state in ("failed", "backoff", "unhealthy") and row.get("reason"):
        reason = str(row["reason"]).splitlines()[0]
        return f"{state}: {reason[:60]}"
    if state in ("exited", "stopped", "backoff") and row.get("exit_code") is not None:
        return f"{state} ({row['exit_code']})"
    return state


def _selected(client: Any, names: list[str]) -> list[str]:
    for n in names:
        if n not in client:
            raise CorralError(f"stack '{client.name}' has no service '{n}' "
                              f"(services: {', '.join(client._names)})")
    return names or list(client._names)


def cmd_ps(args: argparse.Namespace) -> int:
    client = connect(args)
    wanted = set(_selected(client, args.services))
    rows = [r for r in client.status() if r["name"] in wanted]
    if args.json:
        _json(rows)
        return 0
    out = [["NAME", "STATE", "PID", "PORTS", "RESTARTS", "UPTIME"]]
    for r in rows:
        ports = " ".join(f"{k}={v}" for k, v in sorted(r["ports"].items())) or "-"
        live = r["pid"] is not None and r.get("started_at")
        out.append([r["name"], _state_text(r), str(r["pid"] or "-"), ports, str(r["restarts"]),
                    duration(since(r["started_at"])) if live else "-"])
    table(out, sys.stdout)
    return 0


def _stamp(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall).isoformat(timespec="milliseconds")


def cmd_logs(args: argparse.Namespace) -> int:
    client = connect(args)
    names = _selected(client, args.services)
    printer = Printer(list(client._names), sys.stdout)

    def show(service: str, wall: float, text: str) -> None:
        printer.line(service, f"{_stamp(wall)} {text}" if args.timestamps else text)

    if not args.follow:
        lines = []
        for n in names:
            lines += [(t, n, text) for t, _, text, _ in client[n].log_records(args.tail)]
        for wall, n, text in sorted(lines, key=lambda x: x[0]):  # stable: each service's order kept
            show(n, wall, text)
        printer.flush()
        return 0
    tail = 10 if args.tail is None else args.tail
    try:
        if len(names) <= _STREAMS:
            _follow_each(client, names, tail, show, printer)
        else:
            _follow_all(client, names, tail, show, printer)
    except KeyboardInterrupt:
        pass  # Ctrl+C ends a follow, as with `docker compose logs -f`; not an error
    return 0


# Up to this many services, `logs -F` holds one follow stream per service (exact: each
# gives its tail and then every new line, nothing lost or repeated in between); beyond,
# one event stream for all, so as not to use up the server's 128 connections.
_STREAMS = 16


def _follow_each(client: Any, names: list[str], tail: int, show: Any, printer: Printer) -> None:
    from ..client import _EventStream

    streams = {n: _EventStream(client._transport, f"/v1/services/{urllib.parse.quote(n, safe='')}"
                                                  f"/logs?follow=1&tail={tail}") for n in names}
    try:
        while streams:
            for n, stream in list(streams.items()):
                while (event := stream.next(0.0)) is not None:
                    if event.get("event") == "log":
                        show(n, float(event["time"]), str(event["text"]))
                if stream.closed:  # the stack has closed
                    del streams[n]
            printer.flush()
            if streams:
                select.select([s._sock for s in streams.values()], [], [])
    finally:
        for stream in streams.values():
            stream.close()


def _follow_all(client: Any, names: list[str], tail: int, show: Any, printer: Printer) -> None:
    """One event stream, subscribed before the tails are read; a line both in a tail and in
    the stream (printed in between) is told by its time and shown once."""
    from ..client import _EventStream

    wanted = set(names)
    stream = _EventStream(client._transport, "/v1/events")
    try:
        last: dict[str, float] = {}
        lines = []
        for n in names:
            records = client[n].log_records(tail)
            lines += [(t, n, text) for t, _, text, _ in records]
            last[n] = records[-1][0] if records else 0.0
        for wall, n, text in sorted(lines, key=lambda x: x[0]):
            show(n, wall, text)
        printer.flush()
        while (event := stream.next(None)) is not None:  # None: the stack has closed
            n = str(event.get("service"))
            if event.get("event") == "log" and n in wanted and float(event["time"]) > last.get(n, 0.0):
                show(n, float(event["time"]), str(event["text"]))
                printer.flush()
            elif event.get("event") == "dropped":
                sys.stderr.write(f"corral: {event.get('count')} lines dropped (this reader was too slow)\n")
    finally:
        stream.close()


def cmd_act(args: argparse.Namespace) -> int:
    """`start`, `stop`, `restart`: one service after another, each waited for."""
    client = connect(args)
    names = _selected(client, args.services)
    for n in names:
        try:
            getattr(client[n], args.command)(args.timeout)
        except StartError as exc:
            sys.stderr.write(f"corral: {n}: {args.command} failed: {exc.reason}\n")
            if exc.log_tail:
                tail = "\n".join(exc.log_tail)
                sys.stderr.write(f"--- last log lines of {exc.service} ---\n{tail}\n")
            return 1
        row = client[n].status()
        ports = " ".join(f"{k}={v}" for k, v in sorted(row["ports"].items()))
        detail = f" (pid {row['pid']}{', ' + ports if ports else ''})" if row["pid"] else ""
        done = _DONE[args.command]
        state = "" if row["state"] == done else f", {row['state']}"
        sys.stdout.write(f"{n}: {done}{state}{detail}\n")
    return 0


def _wait_gone(pid: int, timeout: float) -> bool:
    """Waits (on a pidfd, not a poll loop) until process `pid` has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def cmd_down(args: argparse.Namespace) -> int:
    from . import _daemon

    client = connect(args)
    owner = client.pid
    daemon = _daemon.is_daemon(owner)
    client.stop_all(args.timeout)
    if not daemon:
        # A `corral up` in the foreground then exits (every service has ended); a script or
        # notebook decides for itself. Either way every service is stopped.
        sys.stdout.write(f"corral: stack '{client.name}': every service stopped; its owner (pid "
                         f"{owner}) is not a corral daemon and decides whether it ends\n")
        return 0
    # The daemon closes its stack (every process is gone by then) and exits: wait for it,
    # so that whatever runs `corral down` next finds nothing of the stack running.
    if not _wait_gone(owner, 60.0 if args.timeout is None else args.timeout + 30):
        sys.stderr.write(f"corral: the daemon (pid {owner}) did not exit; its log: "
                         f"{_daemon.log_of(owner) or '?'}\n")
        return 1
    sys.stdout.write(f"corral: stack '{client.name}' is down\n")
    return 0


def _mib(n: Any) -> str:
    return "-" if n is None else f"{n / 1048576:.1f}M"


def cmd_metrics(args: argparse.Namespace) -> int:
    client = connect(args)
    metrics = client.metrics()
    if args.json:
        _json(metrics)
        return 0
    rows = [["NAME", "STATE", "PID", "CPU", "RSS", "FDS", "PROCS", "THREADS", "RESTARTS", "LOG LINES"]]
    for name, m in metrics.items():
        cpu = "-" if m.get("cpu_seconds") is None else f"{m['cpu_seconds']:.2f}s"
        rows.append([name, str(m.get("state")), str(m.get("pid") or "-"), cpu, _mib(m.get("rss_bytes")),
                     str(m.get("open_fds", "-")), str(m.get("processes", "-")), str(m.get("threads", "-")),
                     str(m.get("restarts", "-")), str(m.get("log_lines", "-"))])
    table(rows, sys.stdout)
    return 0


def attach(client: Any, verbose: bool) -> int:
    """`corral up` on a stack that already runs: streams its events until Ctrl+C (which
    detaches, leaving it running) or until the stack ends."""
    from ._up import _port_lines, _print_events

    sys.stderr.write(f"corral: stack '{client.name}' already runs (pid {client.pid}); attached: "
                     "Ctrl+C detaches, `corral down` stops it\n")
    for line in _port_lines(client.status()):
        sys.stderr.write(f"  {line}\n")
    sys.stderr.flush()
    printer = Printer(list(client._names), sys.stdout)
    states: dict[str, str] = {}
    try:
        client.events(0.0)  # subscribe now: everything from here on is printed
        while True:
            got = _print_events(client, printer, verbose, 3600.0, states)
            if not got and (client._events is None or client._events.closed):
                break
    except KeyboardInterrupt:
        sys.stderr.write(f"\ncorral: detached; stack '{client.name}' goes on running\n")
        return 0
    except CorralError:
        pass  # the stack went away between two reads
    finally:
        with contextlib.suppress(Exception):
            client.close()
    sys.stderr.write(f"corral: stack '{client.name}' has ended\n")
    return 0


__all__ = ["attach", "cmd_act", "cmd_down", "cmd_logs", "cmd_ls", "cmd_metrics", "cmd_ps"]
