"""The Python side of metrics: rows for `Stack.metrics()`, the health score, the loopback
Prometheus endpoint and matplotlib plots. The numbers come from the engine (its sampler
thread and its counters); nothing here reads /proc.

Health score (0-100 per service), from what the engine keeps:

- it starts at 100 and loses
  - up to 40 points for failed liveness attempts: 40 x (failed / attempts) over the last
    32 attempts of the service's health check;
  - 10 points per restart in the last 10 minutes, at most 40;
  - 10 points when its tree used more than 90 % of a core in the last sample;
- then the state caps it: ``failed`` 0, ``backoff`` 30, ``unhealthy`` 40, ``starting`` 80,
  and ``exited`` with a non-zero code 0. ``pending``, ``stopping``, ``stopped`` and a clean
  ``exited`` are not judged (the score is computed as for a running service).
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any

from ._records import Records

_RESTART_WINDOW = 600.0
_STATE_CAP = {"failed": 0, "backoff": 30, "unhealthy": 40, "starting": 80}

#: What `Stack.metrics()` gives per service (and `Stack.samples()` per sample).
FIELDS = ("cpu_seconds", "cpu_percent", "rss_bytes", "processes", "threads", "open_fds",
          "read_bytes", "write_bytes")


def health_score(row: dict[str, Any], counters: dict[str, Any], cpu_percent: float, now: float) -> int:
    """The documented score of one service (see the module docstring)."""
    score = 100.0
    checks = counters.get("recent_checks", 0)
    if checks:
        score -= 40.0 * counters["recent_check_failures"] / checks
    recent = sum(1 for t in counters.get("restart_times", ()) if now - t <= _RESTART_WINDOW)
    score -= min(40.0, 10.0 * recent)
    if cpu_percent > 90.0:
        score -= 10.0
    state = row["state"]
    cap = _STATE_CAP.get(state, 100)
    if state == "exited" and row.get("exit_code"):
        cap = 0
    return int(max(0.0, min(score, cap)))


def metrics_rows(handle: Any) -> dict[str, dict[str, Any]]:
    """`Stack.metrics()`: one row per service, zeros for a service never sampled."""
    latest = {s["service"]: s for s in handle.metrics_now()}
    counters = {c["service"]: c for c in handle.counters()}
    now = time.time()
    out: dict[str, dict[str, Any]] = {}
    for row in handle.status():
        name = row["name"]
        sample = latest.get(name)
        running = row["pid"] is not None
        m: dict[str, Any] = {"pid": row["pid"], "state": row["state"]}
        for f in FIELDS:
            value = sample[f] if sample is not None else 0
            # Gauges of a service that no longer runs are 0; the counters (CPU seconds,
            # bytes) keep what all its runs used.
            if not running and f in ("cpu_percent", "rss_bytes", "processes", "threads", "open_fds"):
                value = 0
            m[f] = value
        if sample is not None and sample.get("pss_bytes"):
            m["pss_bytes"] = sample["pss_bytes"] if running else 0
        c = counters[name]
        m["restarts"] = row["restarts"]
        started = row["started_at"]
        m["uptime_seconds"] = max(0.0, now - started) if running and started else 0.0
        m["ready_seconds"] = c["ready_seconds"]
        m["health"] = health_score(row, c, m["cpu_percent"], now)
        m["log_lines"] = row["log_lines"]
        m["log_dropped"] = row["log_dropped"]
        out[name] = m
    return out


class MetricsTable(dict[str, dict[str, Any]]):
    """`Stack.metrics()`'s result: a dict of rows that renders as a table in notebooks."""

    def _repr_html_(self) -> str:
        columns = ("state", "health", "cpu_percent", "cpu_seconds", "rss_bytes", "processes", "threads",
                   "open_fds", "restarts", "uptime_seconds", "ready_seconds")
        head = "".join(f"<th>{c}</th>" for c in ("service", *columns))
        rows = []
        for name, m in self.items():
            cells = [name] + [_show(c, m.get(c)) for c in columns]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _show(column: str, v: Any) -> str:
    if v is None:
        return ""
    if column == "rss_bytes":
        return f"{v / 2**20:.1f} MiB"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def samples(handle: Any, service: str | None, since: float | None) -> Records:
    """`Stack.samples()`: raw samples as plain dicts, oldest first."""
    start = 0.0 if since is None else time.time() - since
    return Records(handle.samples(service or "", start))


class MetricsServer:
    """`Stack.serve_metrics()`: GET /metrics on loopback, from a daemon thread."""

    def __init__(self, render: Any, port: int) -> None:
        # Here: http.server loads http.client, email and ssl (OpenSSL), megabytes that a
        # Stack that never serves /metrics should not carry.
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                try:
                    body = render().encode()
                except Exception as exc:  # a closed stack: say so, do not kill the thread
                    self.send_error(503, str(exc))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # a scrape every 15 s must not write to the owner's stderr

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        host, bound = self._server.server_address[:2]
        self.url = f"http://{host!s}:{bound}/metrics"
        self._thread = threading.Thread(target=self._server.serve_forever, name="corral-metrics", daemon=True)
        from . import _engine

        _engine.start_thread(self._thread)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def plot(records: list[dict[str, Any]], metric: str, services: list[str] | None) -> Any:
    """A matplotlib figure of `metric` over time, one line per service."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("stack.plot() needs matplotlib: pip install 'corral[notebook]'") from None
    if records and metric not in records[0]:
        known = ", ".join(k for k in records[0] if k not in ("time", "service", "pid"))
        raise ValueError(f"unknown metric {metric!r} (metrics: {known})")
    import datetime

    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = services if services is not None else sorted({r["service"] for r in records})
    for name in names:
        rows = [r for r in records if r["service"] == name]
        times: Any = [datetime.datetime.fromtimestamp(r["time"]) for r in rows]
        ax.plot(times, [r[metric] for r in rows], label=name)
    ax.set_title(metric)
    ax.set_xlabel("time")
    if metric.endswith("_bytes"):
        ax.set_ylabel("bytes")
    if names:
        ax.legend(loc="upper left", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    plt.close(fig)  # returned, not shown twice by pyplot's state machine
    return fig
