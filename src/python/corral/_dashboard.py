"""The dashboard's Python side (docs/dashboard.md).

- `corral dashboard [-f FILE | --name NAME] [--no-browser]`: finds the running stack, has
  its control server listen on loopback TCP if it does not yet, gets a one-time login link,
  prints it and opens a browser when there is one. The page itself (HTML, JS, CSS in
  ``corral/dashboard/``) is served by the stack's control server.
- `Stack.dashboard()` in a notebook: the same status, sparklines and start-up timeline as
  HTML rendered by the kernel, without a server.
- `publish_runs(stack)`: the start-up timelines of the stack's last runs, read from its
  history database and handed to its control server (GET /v1/runs). The server is C++ and
  the database is written by Python, so the owner reads and the server only serves.

Imported by stack.py at `import corral`: keep what it imports at the top light.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import json
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from .stack import Stack

_REQUEST_TIMEOUT = 10.0
_SHAPES = {
    "pending": "\u25CC", "starting": "\u25D0", "ready": "\u25CF", "unhealthy": "\u25B2",
    "backoff": "\u21BB", "stopping": "\u25D1", "stopped": "\u25A0", "exited": "\u25CB",
    "failed": "\u2716",
}
_COLORS = {
    "ready": "#1a7f37", "starting": "#0969da", "stopping": "#0969da", "backoff": "#9a6700",
    "unhealthy": "#9a6700", "failed": "#cf222e", "pending": "#6e7781", "stopped": "#6e7781",
}


# -- corral dashboard ----------------------------------------------------------------------

def login_url(client: Any) -> str:
    """A one-time login link from a running stack's control server, which starts listening
    on loopback TCP first if it did not (``POST /v1/login_url {"serve": true}``)."""
    status, answer = client._post("/v1/login_url", {"serve": True}, _REQUEST_TIMEOUT)
    client._check(status, answer)
    return str(answer["url"])


def can_open_browser() -> bool:
    """Whether a browser can be shown here: a graphical session (or macOS), or $BROWSER."""
    if os.environ.get("BROWSER"):
        return True
    if sys.platform == "darwin":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_dashboard(args: argparse.Namespace) -> int:
    import webbrowser

    from .client import connect

    client = connect(args.file or args.name)
    url = login_url(client)
    print(url)
    print("(this link works once: it logs the browser that opens it in with a session cookie)",
          file=sys.stderr)
    if not args.no_browser and can_open_browser():
        webbrowser.open(url)
    return 0


def add_parser(sub: Any) -> None:
    """Adds `corral dashboard` to the CLI's subparsers."""
    p = sub.add_parser("dashboard", help="open the live dashboard of a running stack")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-f", "--file", help="the stack of this config file (default: ./corral.toml)")
    where.add_argument("--name", help="the stack of this name")
    p.add_argument("--no-browser", action="store_true", help="only print the login link")
    p.set_defaults(func=cmd_dashboard)


# -- the last runs' start-up timelines ----------------------------------------------------

#: How many runs the timeline compares (the current one included).
RUNS_SHOWN = 5
_NO_HISTORY = "this stack keeps no history (Stack(history=...) or a history key in the config file)"


def runs_document(stack: Stack, limit: int = RUNS_SHOWN) -> dict[str, Any]:
    """What GET /v1/runs answers (src/python/corral/openapi.json, RunsDocument): the last
    `limit` runs' start-ups from the stack's history, newest first, or why there are none."""
    path = stack._history_path
    writer = stack._telemetry.writer
    current = writer.run if writer is not None else None
    doc: dict[str, Any] = {"history": path is not None, "reason": None, "current": current, "runs": []}
    if path is None:
        doc["reason"] = _NO_HISTORY
        return doc
    import sqlite3  # here, not at the top: the CLI client imports this module

    from .errors import ConfigError
    from .history import read_startups

    try:
        doc["runs"] = read_startups(path, stack.name or "corral", limit, current)
    except (sqlite3.Error, ConfigError) as exc:
        # The stack runs on; the page says why it has no past runs.
        doc["reason"] = f"cannot read the history database {path}: {exc}"
        return doc
    if not any(r["run"] != current for r in doc["runs"]):
        doc["reason"] = "no earlier run of this stack in its history"
    return doc


def publish_runs(stack: Stack) -> None:
    """Hands the last runs' timelines to the stack's control server. Called when a start
    begins (the page then compares a slow start-up with earlier ones while it happens),
    when it is done (the current run's records are flushed first), and when the server is
    replaced (serve_api). Nothing for a stack without history: the server's default
    document says it has none."""
    served = stack._served
    if stack._history_path is None or served is None or served.closed:
        return
    if stack._telemetry.writer is not None:
        # A locked or full disk: the document holds what was written.
        import sqlite3  # here, not at the top: the CLI client imports this module
        with contextlib.suppress(sqlite3.Error):
            stack._telemetry.writer.flush()
    text = json.dumps(runs_document(stack), separators=(",", ":"))
    # The server may have stopped meanwhile (a close on another thread).
    with contextlib.suppress(Exception):
        served.server.set_document("runs", text)


def _compare_timeline(doc: dict[str, Any], rows: list[dict[str, Any]], now: float) -> str:
    """The last runs side by side for the notebook: per service one thin bar per run (the
    current one first, darkest), each from its run's first spawn, so a service that became
    ready later than last time stands out; a line per run says when all were ready."""
    current = doc.get("current")
    runs: list[tuple[str, dict[str, tuple[float, float | None, bool]]]] = []
    live = {r["name"]: (float(r["started_at"]), float(r["ready_at"]) if r.get("ready_at") else None,
                        r["state"] == "failed") for r in rows if r.get("started_at")}
    if live:
        t0 = min(v[0] for v in live.values())
        runs.append(("this run", {k: (s - t0, None if e is None else e - t0, f)
                                  for k, (s, e, f) in live.items()}))
    for run in doc.get("runs", []):
        if run["run"] == current or not run["services"]:
            continue
        t0 = min(s["started"] for s in run["services"])
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t0))
        bars = {s["service"]: (s["started"] - t0,
                               None if s["ready_seconds"] is None else s["started"] - t0 + s["ready_seconds"],
                               s["ready_seconds"] is None and s["ended"] is not None)
                for s in run["services"]}
        runs.append((f"run {run['run']} ({when})", bars))
    if len(runs) < 2:
        return ""
    names = list(dict.fromkeys(n for _, bars in runs for n in bars))
    span = max(0.05, *(max((e if e is not None else s) for s, e, _ in bars.values()) for _, bars in runs))
    label, width, sub = 150, 700, 6
    plot = width - label - 10
    group = sub * len(runs) + 4
    out = [f'<svg class="corral-runs" width="{width}" height="{len(names) * group + 4}">']
    for i, name in enumerate(names):
        y = i * group + 2
        out.append(f'<text x="2" y="{y + group / 2 + 3:.0f}" font-size="11">{html.escape(name)}</text>')
        for j, (run_label, bars) in enumerate(runs):
            if name not in bars:
                continue
            start, ready, failed = bars[name]
            end = ready if ready is not None else start
            color = "#cf222e" if failed else "#1a7f37" if ready is not None else "#0969da"
            took = f"{ready - start:.3f} s to ready" if ready is not None else "not ready"
            x0, w = label + start / span * plot, max(2.0, (end - start) / span * plot)
            out.append(f'<rect class="run-bar" x="{x0:.1f}" y="{y + j * sub}" width="{w:.1f}" '
                       f'height="{sub - 1}" fill="{color}" fill-opacity="{1.0 - 0.7 * j / len(runs):.2f}">'
                       f"<title>{html.escape(name)}, {html.escape(run_label)}: {took}</title></rect>")
    out.append("</svg>")
    legend = []
    for run_label, bars in runs:
        readies = [e for _, e, _ in bars.values() if e is not None]
        all_ready = len(readies) == len(bars)
        total = f"all {len(bars)} ready after {max(readies):.3f} s" if all_ready and readies else \
            f"{len(readies)} of {len(bars)} ready"
        legend.append(f"<li>{html.escape(run_label)}: {total}</li>")
    return (f'<details open><summary>start-up of the last {len(runs)} runs (top bar: this run)</summary>'
            f'<ul class="corral-runs-legend">{"".join(legend)}</ul>{"".join(out)}</details>')


# -- the notebook view ---------------------------------------------------------------------

def _spark(values: list[float], width: int = 90, height: int = 20, color: str = "#0969da") -> str:
    if len(values) < 2:
        return ""
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(f"{i * step:.1f},{height - 1 - v / top * (height - 2):.1f}"
                      for i, v in enumerate(values))
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{points}"/></svg>')


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _why(row: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    reason = str(row.get("reason") or "")
    if reason:
        return reason
    code = row.get("exit_code")
    if row["state"] in ("exited", "failed") and code is not None:
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return ""


def _timeline(rows: list[dict[str, Any]], now: float) -> str:
    runs = sorted((r for r in rows if r.get("started_at")), key=lambda r: (r["started_at"], r["name"]))
    if not runs:
        return "<p><i>nothing has started yet</i></p>"
    t0 = runs[0]["started_at"]

    def end(r: dict[str, Any]) -> float:
        ready = r.get("ready_at")
        if ready and ready >= r["started_at"]:
            return float(ready)
        return now if r["state"] == "starting" else float(r["started_at"])

    span = max(0.05, max(end(r) for r in runs) - t0)
    label, width, row_h = 150, 700, 16
    plot = width - label - 10
    out = [f'<svg width="{width}" height="{len(runs) * row_h + 4}">']
    for i, r in enumerate(runs):
        y = i * row_h + 2
        x0 = label + (r["started_at"] - t0) / span * plot
        w = max(2.0, (end(r) - r["started_at"]) / span * plot)
        color = "#1a7f37" if r.get("ready_at") else "#cf222e" if r["state"] == "failed" else "#0969da"
        took = f"{r['ready_at'] - r['started_at']:.3f} s to ready" if r.get("ready_at") else r["state"]
        out.append(f'<text x="2" y="{y + 11}" font-size="11">{html.escape(r["name"])}</text>'
                   f'<rect class="bar" x="{x0:.1f}" y="{y + 1}" width="{w:.1f}" height="{row_h - 4}" '
                   f'fill="{color}"><title>{html.escape(r["name"])}: {took}</title></rect>')
    out.append("</svg>")
    return "".join(out)


def render_html(stack: Stack, window: float = 300.0) -> str:
    """The notebook dashboard: the services with state (by shape and colour) and why, pid,
    ports, uptime, restarts, health, CPU and memory sparklines; then the start-up timeline."""
    rows = stack.status()
    by_name = {r["name"]: r for r in rows}
    metrics = stack.metrics()
    series: dict[str, dict[str, list[float]]] = {}
    for s in stack.samples(since=window):
        d = series.setdefault(s["service"], {"cpu": [], "rss": []})
        d["cpu"].append(float(s["cpu_percent"]))
        d["rss"].append(float(s["rss_bytes"]))
    now = time.time()
    head = ("service", "state", "why", "pid", "ports", "uptime", "restarts", "health", "CPU", "memory")
    body = []
    for r in rows:
        name, st = r["name"], r["state"]
        m = metrics.get(name, {})
        running = r["pid"] is not None
        ports = ", ".join(f"{k}:{v}" for k, v in r["ports"].items())
        uptime = f"{now - r['started_at']:.0f} s" if running and r.get("started_at") else ""
        sp = series.get(name, {"cpu": [], "rss": []})
        cpu = (_spark(sp["cpu"]) + (f" {m.get('cpu_percent', 0):.1f} %" if running else ""))
        mem = (_spark(sp["rss"], color="#9a6700") + (f" {_bytes(m.get('rss_bytes', 0))}" if running else ""))
        color = _COLORS.get(st, "#1a7f37" if r.get("exit_code") == 0 else "#cf222e")
        cells = [
            f"<b>{html.escape(name)}</b>",
            f'<span style="color:{color}">{_SHAPES.get(st, "?")}</span> {html.escape(st)}',
            html.escape(_why(r, by_name)),
            str(r["pid"] or ""),
            html.escape(ports),
            uptime,
            str(r["restarts"]),
            str(m.get("health", "")),
            cpu,
            mem,
        ]
        body.append("<tr>" + "".join(f'<td style="text-align:left">{c}</td>' for c in cells) + "</tr>")
    thead = "".join(f'<th style="text-align:left">{h}</th>' for h in head)
    title = html.escape(stack.name or "corral")
    runs = ""
    if stack._history_path is not None:
        if stack._telemetry.writer is not None:
            import sqlite3  # here, not at the top: the CLI client imports this module
            with contextlib.suppress(sqlite3.Error):
                stack._telemetry.writer.flush()  # this run's spawns and readiness, up to now
        runs = _compare_timeline(runs_document(stack), rows, now)
    return (f'<div class="corral-dashboard"><b>corral: {title}</b>'
            f"<table><thead><tr>{thead}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<details open><summary>start-up timeline</summary>{_timeline(rows, now)}</details>{runs}</div>")


class Dashboard:
    """What `Stack.dashboard()` returns: rendered as HTML by Jupyter (`_repr_html_`), and,
    when shown with `refresh`, re-rendered in place every `refresh` seconds while the stack
    runs (IPython's display handle; the kernel owns the stack, no server is involved)."""

    def __init__(self, stack: Stack, window: float = 300.0) -> None:
        self._stack = stack
        self._window = window
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _repr_html_(self) -> str:
        return render_html(self._stack, self._window)

    def show(self, refresh: float | None = 2.0) -> Dashboard:
        """Displays the dashboard in the notebook and updates it every `refresh` seconds
        (None: once) until `stop()`, or until the stack closes."""
        ipd: Any = importlib.import_module("IPython.display")  # untyped: held as Any
        handle = ipd.display(ipd.HTML(self._repr_html_()), display_id=True)
        if refresh is not None and handle is not None:
            self._thread = threading.Thread(target=self._follow, args=(handle, refresh), daemon=True,
                                            name="corral-dashboard")
            from . import _engine

            _engine.start_thread(self._thread)
        return self

    def _follow(self, handle: Any, refresh: float) -> None:
        ipd: Any = importlib.import_module("IPython.display")
        while not self._stop.wait(refresh):
            if getattr(self._stack, "_closed", False):
                break
            try:
                handle.update(ipd.HTML(self._repr_html_()))
            except Exception:  # the stack closed under us: the last rendering stays
                break

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stops updating the displayed dashboard: returns once the refresh thread has ended
        (or after `timeout` seconds, if a rendering is stuck), so nothing renders after it."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
