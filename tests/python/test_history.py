"""History in SQLite with real processes: what a run records, that it survives SIGKILL of
its owner, that rollups and retention bound its size, and `corral history`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import corral
from conftest import alive, wait_until
from corral import history


def test_a_run_records_spawns_readiness_exits_and_states(tmp_path: Path, helper: str) -> None:
    db = tmp_path / "dev.db"
    stack = corral.Stack("hist", history=db)
    try:
        stack.add("web", [helper, "listen", "{{port.http}}", "pause"], ports=["http"],
                  ready=corral.TcpCheck("http"))
        stack.add("crash", [helper, "exit", "3"],
                  restart=corral.Restart("on-failure", backoff=0.01, max_restarts=1))
        stack.start(timeout=30)
        stack.wait("crash", "failed", timeout=30)
        events = stack.history()
    finally:
        stack.close(timeout=60)
    kinds = {(e["service"], e["kind"]) for e in events}
    assert {("web", "spawn"), ("web", "ready"), ("crash", "spawn"), ("crash", "exit")} <= kinds
    states = [e["state"] for e in events if e["service"] == "web" and e["kind"] == "state"]
    assert states[:3] == ["pending", "starting", "ready"] or states[:2] == ["starting", "ready"]
    exits = [e for e in events if e["service"] == "crash" and e["kind"] == "exit"]
    assert [e["code"] for e in exits] == [3, 3] and all(e["seconds"] >= 0 for e in exits)
    failed = [e for e in events if e["service"] == "crash" and e["state"] == "failed"]
    assert failed and "exit code 3" in failed[0]["reason"]
    # After close: the stop states are there, and the run is marked ended.
    after = history.read_history(str(db), "web")
    assert after[-1]["state"] == "stopped"
    runs = history.read_runs(str(db), "crash")
    assert [(r["reason"], r["code"]) for r in runs] == [("start", 3), ("exit", 3)]
    assert history.read_runs(str(db), "web")[0]["ready_seconds"] > 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT ended IS NOT NULL FROM runs").fetchall() == [(1,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_history_survives_sigkill_of_the_owner(tmp_path: Path, helper: str) -> None:
    db = tmp_path / "owner.db"
    # The owner stops a service, waits until its writer has committed the stop (reading the
    # database, as another process would), says so, and is then killed with SIGKILL.
    code = f"""
import sqlite3, sys, time, corral
stack = corral.Stack("owner", history={str(db)!r})
stack.add("a", [{helper!r}, "pause"])
stack.add("b", [{helper!r}, "pause"])
stack.start(timeout=30)
stack.stop("a", timeout=30)
print(stack["b"].pid, flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with sqlite3.connect("file:{db}?mode=ro", uri=True) as c:
            if c.execute("SELECT 1 FROM events WHERE service='a' AND state='stopped'").fetchall():
                break
    except sqlite3.Error:
        pass
    time.sleep(0.05)
print("committed", flush=True)
time.sleep(600)
"""
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    b_pid = int(owner.stdout.readline())
    assert owner.stdout.readline().strip() == "committed"
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)
    owner.stdout.close()
    wait_until(lambda: not alive(b_pid), what="the death watcher to stop the services")
    events = history.read_history(str(db))
    a_states = [e["state"] for e in events if e["service"] == "a" and e["kind"] == "state"]
    assert a_states[-2:] == ["stopping", "stopped"]
    assert any(e["service"] == "b" and e["kind"] == "spawn" for e in events)
    with sqlite3.connect(db) as conn:
        # Killed: the run was never marked ended.
        assert conn.execute("SELECT stack, ended FROM runs").fetchall() == [("owner", None)]


def test_rollups_and_retention_bound_the_size(tmp_path: Path) -> None:
    path = str(tmp_path / "roll.db")
    db = history.connect(path)
    now = 1_800_000_000.0 // 86400 * 86400  # midnight, so the buckets are easy to count
    services = [f"s{i}" for i in range(20)]
    # Three days of minute summaries for 20 services, as a long-running stack would leave.
    rows = [("minute", now - m * 60, s, 60, 5.0, 9.0, 1e6, 2e6, float(m), 2)
            for m in range(1, 3 * 1440 + 1) for s in services]
    db.execute("BEGIN")
    db.executemany("INSERT INTO summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("INSERT INTO runs (stack, started) VALUES ('x', ?)", (now - 100 * 86400,))
    event = "INSERT INTO events (run, time, service, kind) VALUES (1, ?, 's0', 'state')"
    db.execute(event, (now - 100 * 86400,))
    db.execute(event, (now - 60,))
    db.execute("COMMIT")
    history.compact(db, now, {**history.RETENTION, "minute": 86400.0})

    def count(tier: str) -> int:
        return int(db.execute("SELECT count(*) FROM summaries WHERE tier = ?", (tier,)).fetchone()[0])

    assert count("minute") == 1440 * 20  # the last day only
    assert count("hour") == 3 * 24 * 20  # every hour of the three days, from the minutes
    assert count("day") == 3 * 20
    one = db.execute("SELECT samples, cpu_percent_avg, cpu_percent_max, rss_bytes_max FROM summaries "
                     "WHERE tier = 'hour' AND service = 's0' AND start = ?", (now - 3600,)).fetchone()
    assert one == (60 * 60, 5.0, 9.0, 2e6)
    # Events older than their retention (90 days) are gone, recent ones stay.
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    db.close()


def test_corral_history_json_round_trips(tmp_path: Path, helper: str) -> None:
    (tmp_path / "corral.toml").write_text(
        f'history = "h.db"\n[services.a]\ncommand = ["{helper}", "exit", "0"]\n')
    stack = corral.Stack.load(tmp_path / "corral.toml")
    with stack:
        stack.wait("a", "exited", timeout=30)
    expected = history.read_history(str(tmp_path / "h.db"))
    assert expected
    cli = [sys.executable, "-m", "corral", "history", "--json"]
    out = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
    only = subprocess.run([*cli, "a", "--since", "1h", "--db", str(tmp_path / "h.db")],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(only.stdout) == [e for e in expected if e["service"] == "a"]
    text = subprocess.run([sys.executable, "-m", "corral", "history"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert "exited" in text.stdout and "code 0" in text.stdout
    bad = subprocess.run([*cli, "--since", "soon"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "expected a duration" in bad.stderr


def test_history_needs_a_database() -> None:
    with pytest.raises(corral.CorralError, match="keeps no history"):
        corral.Stack("none").history()
    assert history.parse_since("90s") == 90 and history.parse_since("2h") == 7200


def test_a_history_that_cannot_be_opened_starts_nothing(tmp_path: Path, helper: str) -> None:
    marker = tmp_path / "ran"
    stack = corral.Stack("nohist", history=tmp_path / "missing" / "dev.db")
    stack.add("a", [helper, "write-file", str(marker), "x", "pause"])
    with pytest.raises(corral.ConfigError, match=r"cannot use .*dev\.db as a history database"):
        stack.start(timeout=30)
    assert stack._handle is None and not marker.exists()
    stack.close()
