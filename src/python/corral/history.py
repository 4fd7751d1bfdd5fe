"""History of a stack in SQLite: every state change, spawn, readiness time, exit and check
result change, and per-minute resource summaries rolled up into hours and days.

The engine buffers history records natively as they happen (a bounded buffer, off unless a
stack has a history); a writer thread here drains that buffer and the sample ring about
twice a second and writes each batch in one transaction, in WAL mode. So the engine thread
never waits for the disk, and an owner killed with SIGKILL loses at most the last batch
(under a second).

Tables (all times are seconds since the epoch):

- ``runs``: one row per stack run (``Stack`` start to close): stack name, owner pid, file.
- ``events``: kind (state, spawn, ready, exit, check), service, state, reason, pid, code,
  signal, seconds (ready: spawn to ready; exit: run time; check: probe duration).
- ``service_runs``: one row per process a service ran: started, reason (start, exit,
  health), ready_seconds, ended, code, signal, run_seconds.
- ``summaries``: tier (minute, hour, day), service, start of the bucket, sample count,
  average and maximum CPU %, average and maximum RSS, CPU seconds at the end, most processes.

Retention (seconds, see `RETENTION`) drops old rows tier by tier, so a day of a 20-service
stack stays within a few megabytes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import Any

from ._records import Records
from .errors import ConfigError

__all__ = ["RETENTION", "Records", "parse_since", "read_history", "read_runs", "read_startups",
           "read_summaries"]

#: How long rows are kept, by table or tier, in seconds.
RETENTION: dict[str, float] = {
    "minute": 2 * 86400.0,
    "hour": 60 * 86400.0,
    "day": 2 * 365 * 86400.0,
    "events": 90 * 86400.0,
}
_TIERS = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))
_FLUSH_SECONDS = 0.5
_COMPACT_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY, stack TEXT NOT NULL, file TEXT, owner_pid INTEGER,
  started REAL NOT NULL, ended REAL);
CREATE TABLE IF NOT EXISTS events (
  run INTEGER NOT NULL, time REAL NOT NULL, service TEXT NOT NULL, kind TEXT NOT NULL,
  state TEXT, reason TEXT, pid INTEGER, code INTEGER, signal INTEGER, seconds REAL);
CREATE INDEX IF NOT EXISTS events_by_time ON events (time);
CREATE INDEX IF NOT EXISTS events_by_service ON events (service, time);
CREATE TABLE IF NOT EXISTS service_runs (
  run INTEGER NOT NULL, service TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL,
  reason TEXT, ready_seconds REAL, ended REAL, code INTEGER, signal INTEGER, run_seconds REAL);
CREATE INDEX IF NOT EXISTS service_runs_by_service ON service_runs (service, started);
CREATE INDEX IF NOT EXISTS service_runs_by_run ON service_runs (run);
CREATE TABLE IF NOT EXISTS summaries (
  tier TEXT NOT NULL, start REAL NOT NULL, service TEXT NOT NULL, samples INTEGER NOT NULL,
  cpu_percent_avg REAL, cpu_percent_max REAL, rss_bytes_avg REAL, rss_bytes_max REAL,
  cpu_seconds REAL, processes_max INTEGER,
  PRIMARY KEY (tier, start, service)) WITHOUT ROWID;
"""


def connect(path: str) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place; ConfigError when the file cannot
    be opened or is not a corral history database."""
    try:
        db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a committed batch survives the owner's death (not a power cut), at no
        # fsync per commit.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise ConfigError(f"history: cannot use {path} as a history database: {exc}", key="history") from None
    return db


class HistoryWriter:
    """Drains a native stack's history buffer and sample ring into SQLite on a thread."""

    def __init__(self, db: sqlite3.Connection, handle: Any, stack: str, file: str | None,
                 retention: dict[str, float] | None = None) -> None:
        self._handle = handle
        self._retention = {**RETENTION, **(retention or {})}
        self._db = db
        cur = self._db.execute(
            "INSERT INTO runs (stack, file, owner_pid, started) VALUES (?, ?, ?, ?)",
            (stack, file, os.getpid(), time.time()))
        self.run = int(cur.lastrowid or 0)
        self._lock = threading.Lock()  # one batch at a time (the thread, flush(), close())
        self._since = 0.0  # samples up to here are summarised
        self._checks: dict[tuple[str, str], int] = {}
        self._buckets: dict[tuple[str, float], list[float]] = {}
        self._last_compact = time.monotonic()
        self._compacted_upto = 0.0
        self._stop = threading.Event()
        self.lost = 0
        self._thread = threading.Thread(target=self._loop, name="corral-history", daemon=True)
        from . import _engine  # here: the history reader of the CLI loads no engine

        _engine.start_thread(self._thread)

    def _loop(self) -> None:
        while not self._stop.wait(_FLUSH_SECONDS):
            # A locked or full disk: the next batch tries again, the native buffer holds.
            with contextlib.suppress(sqlite3.Error):
                self.flush()
            if time.monotonic() - self._last_compact >= _COMPACT_SECONDS:
                self._last_compact = time.monotonic()
                with contextlib.suppress(sqlite3.Error):
                    self.compact()
        # Stopped (the stack closed, or was garbage-collected): the last batch, then the end.
        try:
            self._flush()
            with self._lock:
                self._db.execute("UPDATE runs SET ended = ? WHERE id = ?", (time.time(), self.run))
        finally:
            with self._lock:
                self._db.close()

    def flush(self) -> None:
        """Writes what the engine buffered since the last batch, in one transaction."""
        if not self._stop.is_set():
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            records, self.lost = self._handle.drain_history()
            samples = self._handle.samples("", self._since)
            if not records and not samples:
                return
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                self._write_records(db, records)
                self._write_samples(db, samples)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _write_records(self, db: sqlite3.Connection, records: Iterable[tuple[Any, ...]]) -> None:
        rows = []
        for kind, t, service, state, reason, pid, code, sig, seconds in records:
            if kind == "check":
                # Only a change of a check's result is history; the attempts themselves
                # are in the Prometheus histogram.
                key = (service, state)
                if self._checks.get(key) == code:
                    continue
                self._checks[key] = code
            rows.append((self.run, t, service, kind, state or None, reason or None, pid or None,
                         code if kind in ("exit", "check") else None, sig or None,
                         seconds if kind in ("ready", "exit", "check") else None))
            if kind == "spawn":
                db.execute("INSERT INTO service_runs (run, service, pid, started, reason) "
                           "VALUES (?, ?, ?, ?, ?)", (self.run, service, pid, t, reason))
            elif kind == "ready":
                db.execute("UPDATE service_runs SET ready_seconds = ? WHERE rowid = (SELECT max(rowid) FROM "
                           "service_runs WHERE run = ? AND service = ?)", (seconds, self.run, service))
            elif kind == "exit":
                db.execute("UPDATE service_runs SET ended = ?, code = ?, signal = ?, run_seconds = ? "
                           "WHERE run = ? AND service = ? AND pid = ? AND ended IS NULL",
                           (t, None if sig else code, sig or None, seconds, self.run, service, pid))
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _write_samples(self, db: sqlite3.Connection, samples: list[dict[str, Any]]) -> None:
        touched = set()
        for s in samples:
            if s["time"] <= self._since:
                continue
            start = s["time"] // 60 * 60
            key = (s["service"], start)
            # count, cpu% sum, cpu% max, rss sum, rss max, cpu seconds (last), processes max
            acc = self._buckets.setdefault(key, [0, 0.0, 0.0, 0.0, 0.0, 0.0, 0])
            acc[0] += 1
            acc[1] += s["cpu_percent"]
            acc[2] = max(acc[2], s["cpu_percent"])
            acc[3] += s["rss_bytes"]
            acc[4] = max(acc[4], s["rss_bytes"])
            acc[5] = s["cpu_seconds"]
            acc[6] = max(acc[6], s["processes"])
            touched.add(key)
        if samples:
            self._since = max(self._since, max(s["time"] for s in samples))
        # The current minute is rewritten at each batch, so a kill loses under a second.
        db.executemany(
            "INSERT OR REPLACE INTO summaries VALUES ('minute', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(start, service, a[0], a[1] / a[0], a[2], a[3] / a[0], a[4], a[5], a[6])
             for (service, start), a in ((k, self._buckets[k]) for k in touched)])
        horizon = time.time() - 120
        for key in [k for k in self._buckets if k[1] < horizon]:
            del self._buckets[key]

    def compact(self, now: float | None = None) -> None:
        """Rolls minutes up into hours and hours into days, then drops what is past its
        retention. Runs every minute on the writer thread; tests call it with a `now`."""
        now = time.time() if now is None else now
        with self._lock:
            compact(self._db, now, self._retention, self._compacted_upto)
            self._compacted_upto = now - 86400

    def stop(self) -> None:
        """Asks the thread to write the last batch, mark the run ended and finish."""
        self._stop.set()

    def close(self) -> None:
        """stop(), and wait until the last batch is written."""
        self._stop.set()
        self._thread.join(timeout=30)


def compact(db: sqlite3.Connection, now: float, retention: dict[str, float], since: float = 0.0) -> None:
    """Rebuilds the hour and day rows from the tier below (for buckets from `since` on),
    then deletes rows older than their tier's retention."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for (lower, _), (upper, width) in itertools.pairwise(_TIERS):
            start = since // width * width
            db.execute(
                "INSERT OR REPLACE INTO summaries "
                "SELECT ?, CAST(start / ? AS INTEGER) * ?, service, sum(samples), "
                "sum(cpu_percent_avg * samples) / sum(samples), max(cpu_percent_max), "
                "sum(rss_bytes_avg * samples) / sum(samples), max(rss_bytes_max), max(cpu_seconds), "
                "max(processes_max) FROM summaries WHERE tier = ? AND start >= ? "
                "GROUP BY CAST(start / ? AS INTEGER), service",
                (upper, width, width, lower, start, width))
        for tier, _ in _TIERS:
            db.execute("DELETE FROM summaries WHERE tier = ? AND start < ?", (tier, now - retention[tier]))
        db.execute("DELETE FROM events WHERE time < ?", (now - retention["events"],))
        db.execute("DELETE FROM service_runs WHERE started < ?", (now - retention["events"],))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    # Return the WAL's pages to the main file, so deletes do not leave the WAL growing.
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")


_SINCE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}


def parse_since(value: str | float | None) -> float | None:
    """Seconds ago from a number or a duration such as ``90s``, ``15m``, ``1h``, ``2d``."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    m = _SINCE.match(value)
    if not m:
        raise ConfigError(f"expected a duration such as 90s, 15m, 1h or 2d, got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _query(path: str, sql: str, args: tuple[Any, ...]) -> Records:
    if not os.path.exists(path):
        raise ConfigError(f"no history database at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        db.row_factory = sqlite3.Row
        return Records(dict(r) for r in db.execute(sql, args))
    finally:
        db.close()


def _filter(service_column: str, service: str | None, time_column: str, since: float | None,
            where: list[str], args: list[Any]) -> None:
    """Adds the readers' common conditions: one `service`, and rows from `since` seconds ago."""
    if service is not None:
        where.append(f"{service_column} = ?")
        args.append(service)
    if since is not None:
        where.append(f"{time_column} >= ?")
        args.append(time.time() - since)


def read_history(path: str, service: str | None = None, since: float | None = None,
                 kinds: Iterable[str] | None = None) -> Records:
    """Events, oldest first, optionally of one `service`, from `since` seconds ago."""
    where: list[str] = ["1"]
    args: list[Any] = []
    _filter("e.service", service, "e.time", since, where, args)
    if kinds is not None:
        kinds = list(kinds)
        where.append(f"e.kind IN ({', '.join('?' * len(kinds))})")
        args.extend(kinds)
    return _query(path, "SELECT e.time, e.run, r.stack, e.service, e.kind, e.state, e.reason, e.pid, e.code, "
                  "e.signal, e.seconds FROM events e JOIN runs r ON r.id = e.run "
                  f"WHERE {' AND '.join(where)} ORDER BY e.time, e.rowid", tuple(args))


def read_runs(path: str, service: str | None = None, since: float | None = None) -> Records:
    """One row per process a service ran: ready time, exit, run time, why it started."""
    where: list[str] = ["1"]
    args: list[Any] = []
    _filter("service", service, "started", since, where, args)
    return _query(path, "SELECT run, service, pid, started, reason, ready_seconds, ended, code, signal, "
                  f"run_seconds FROM service_runs WHERE {' AND '.join(where)} ORDER BY started", tuple(args))


def read_startups(path: str, stack: str, limit: int = 5, current: int | None = None) -> list[dict[str, Any]]:
    """The start-up of each of the last `limit` runs of the stack named `stack`, newest
    first (the dashboard's timeline of past runs): per run its id, ``started``, ``ended``
    and, for every service, its first process of that run (``service``, ``started``,
    ``ready_seconds``, ``ended``, ``code``, ``signal``), by spawn time. Runs in which nothing
    was spawned are left out, except the `current` one."""
    if not os.path.exists(path):
        raise ConfigError(f"no history database at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        db.row_factory = sqlite3.Row
        runs = [dict(r) for r in db.execute(
            "SELECT id AS run, started, ended FROM runs r WHERE stack = ? AND (id = ? OR EXISTS "
            "(SELECT 1 FROM service_runs s WHERE s.run = r.id)) ORDER BY id DESC LIMIT ?",
            (stack, -1 if current is None else current, max(0, limit)))]
        if not runs:
            return []
        ids = [r["run"] for r in runs]
        marks = ", ".join("?" * len(ids))
        # A service's first process in a run is its start-up; later ones are restarts.
        rows = db.execute(
            "SELECT s.run, s.service, s.started, s.ready_seconds, s.ended, s.code, s.signal "
            "FROM service_runs s JOIN (SELECT min(rowid) AS first FROM service_runs "
            f"WHERE run IN ({marks}) GROUP BY run, service) f ON s.rowid = f.first "
            "ORDER BY s.run, s.started, s.service", ids)
        by_run: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        for r in rows:
            d = dict(r)
            by_run[d.pop("run")].append(d)
    finally:
        db.close()
    for r in runs:
        r["services"] = by_run[r["run"]]
    return runs


def read_summaries(path: str, tier: str = "minute", service: str | None = None,
                   since: float | None = None) -> Records:
    """Resource summaries of one tier (minute, hour, day), oldest first."""
    where: list[str] = ["tier = ?"]
    args: list[Any] = [tier]
    _filter("service", service, "start", since, where, args)
    sql = f"SELECT * FROM summaries WHERE {' AND '.join(where)} ORDER BY start, service"
    return _query(path, sql, tuple(args))


def format_records(records: Records, as_json: bool) -> str:
    """For `corral history`: JSON lines' worth as one array, or aligned text."""
    if as_json:
        return json.dumps(records, indent=None)
    lines = []
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time"]))
        what = r["state"] if r["kind"] == "state" else r["kind"]
        detail = ""
        if r["kind"] == "exit":
            detail = f"signal {r['signal']}" if r["signal"] else f"code {r['code']}"
            detail += f" after {r['seconds']:.3f}s"
        elif r["kind"] == "ready":
            detail = f"in {r['seconds']:.3f}s"
        elif r["kind"] == "check":
            detail = f"{r['state']} check {'ok' if r['code'] else 'failing'}"
            what = "check"
        elif r["kind"] == "spawn":
            detail = f"pid {r['pid']} ({r['reason']})"
        elif r["reason"]:
            detail = r["reason"]
        lines.append(f"{when}  {r['service']:<20} {what:<10} {detail}".rstrip())
    return "\n".join(lines)
