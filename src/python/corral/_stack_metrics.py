"""A Stack's measuring and record keeping: the engine's sampling, the SQLite history and
the Prometheus endpoint of `serve_metrics()`.

The settings (`metrics_interval`, `metrics_pss`, `history`) stay attributes of the Stack
(the dashboard turns sampling on later); `Telemetry` holds what runs while the stack is
open: the history writer (a thread that drains the engine's history buffer into SQLite,
off the engine thread) and the /metrics server. The readers of `metrics()` and
`samples()` are `_metrics`'s.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Any

from ._metrics import MetricsServer
from .errors import CorralError
from .spec import history_path
from .spec import metrics_interval as _metrics_interval

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from .history import HistoryWriter, Records

__all__ = ["Telemetry", "open_history", "sampling"]

# How many history records the engine buffers for the writer thread before it drops
# (and counts) the oldest.
_HISTORY_BUFFER = 100_000


def sampling(metrics_interval: float | None,
             history: str | os.PathLike[str] | None) -> tuple[str | None, float]:
    """The history file and the sampling interval of ``Stack(metrics_interval=...,
    history=...)``: sampling is off by default, and every second with a history (whose
    summaries are made of samples)."""
    path = history_path(history)
    interval = (_metrics_interval(metrics_interval) if metrics_interval is not None
                else 1.0 if path else 0.0)
    return path, interval


def open_history(path: str | None) -> sqlite3.Connection | None:
    """The history database, opened before anything starts: a path that cannot be opened
    is a ConfigError and starts nothing."""
    if path is None:
        return None
    from .history import connect

    return connect(path)


class Telemetry:
    """The history writer and the metrics server of one open Stack."""

    def __init__(self) -> None:
        self.writer: HistoryWriter | None = None
        self.server: MetricsServer | None = None

    def attach(self, owner: object, handle: Any, db: sqlite3.Connection | None, *, interval: float,
               pss: bool, name: str, file: str | None) -> None:
        """Configures the engine's sampling of a stack just created and starts its history
        writer (stopped when `owner`, the Stack, is collected without being closed)."""
        if interval > 0 or pss:
            handle.configure_metrics(interval, pss)
        if db is not None:
            from .history import HistoryWriter

            handle.enable_history(_HISTORY_BUFFER)
            self.writer = HistoryWriter(db, handle, name, file)
            weakref.finalize(owner, self.writer.stop)

    def serve(self, render: Callable[[], str], port: int) -> str:
        """`Stack.serve_metrics()`: one server per stack; a second call returns its URL."""
        if self.server is None:
            self.server = MetricsServer(render, port)
        return self.server.url

    def history(self, path: str | None, service: str | None, since: float | str | None) -> Records:
        """`Stack.history()`: what the database holds, with this run's last records
        flushed to it first."""
        from .history import parse_since, read_history

        if path is None:
            raise CorralError("this stack keeps no history: use Stack(history='dev.db') or a history key")
        if self.writer is not None:
            self.writer.flush()
        return read_history(path, service, parse_since(since))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
