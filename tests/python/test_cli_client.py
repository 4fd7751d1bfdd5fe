"""The CLI's round trip with a running stack: `up -d`, `ls`, `ps`, `logs`, `start`, `stop`,
`restart`, `down`, attaching with `up`, and a daemon killed without warning. Every stack is
real, runs as a detached daemon, and is found through the runtime directory of the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import alive, wait_until
from test_cli import _read_until, write_stack


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A runtime directory of the test's own (short: socket paths must fit in sun_path), so
    `corral ls` sees only the test's stacks; every daemon left is stopped at the end."""
    directory = tempfile.mkdtemp(prefix="crt-")
    os.chmod(directory, 0o700)
    monkeypatch.setenv("CORRAL_RUNTIME_DIR", directory)
    env = dict(os.environ, CORRAL_RUNTIME_DIR=directory)
    yield env
    for record in Path(directory, "daemon").glob("*.json"):
        pid = int(record.stem)
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda pid=pid: not alive(pid), 60, "a leftover daemon to exit")
    shutil.rmtree(directory, ignore_errors=True)


def corral(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def ports_of(stdout: str) -> dict[str, int]:
    """`  db: main=41233` lines of `up -d`'s output, as {"db.main": 41233}."""
    out = {}
    for name, pairs in re.findall(r"^\s+(\w+): ((?:\w+=\d+ ?)+)$", stdout, re.M):
        for key, value in re.findall(r"(\w+)=(\d+)", pairs):
            out[f"{name}.{key}"] = int(value)
    return out


def daemon_pid(stdout: str) -> int:
    return int(re.search(r"daemon: pid (\d+)", stdout).group(1))


def test_up_detached_ready_before_it_returns_then_ps_logs_restart_down(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    out = corral(runtime, "up", "-d", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # Ready when it returns: the port accepts a connection at this very moment.
    port = ports_of(out.stdout)["db.main"]
    socket.create_connection(("127.0.0.1", port), timeout=10).close()
    daemon = daemon_pid(out.stdout)
    assert alive(daemon)

    listed = json.loads(corral(runtime, "ls", "--json").stdout)
    assert [(s["name"], s["pid"], s["services"], s["ready"], s["detached"]) for s in listed] == [
        ("clitest", daemon, 2, 2, True)]
    assert listed[0]["config"] == str((tmp_path / "corral.toml").resolve())

    ps = corral(runtime, "ps", "--json", cwd=tmp_path)
    assert ps.returncode == 0, ps.stderr
    rows = {r["name"]: r for r in json.loads(ps.stdout)}
    assert {n: r["state"] for n, r in rows.items()} == {"db": "ready", "api": "ready"}
    assert rows["db"]["ports"] == {"main": port}
    table = corral(runtime, "ps", cwd=tmp_path).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "PID", "PORTS", "RESTARTS", "UPTIME"]
    assert any(line.split()[:4] == ["db", "ready", str(rows["db"]["pid"]), f"main={port}"] for line in table)

    logs = corral(runtime, "logs", "api", cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert re.search(r"^api\s+\| api-up$", logs.stdout, re.M), logs.stdout

    old = rows["api"]["pid"]
    restart = corral(runtime, "restart", "api", cwd=tmp_path)
    assert restart.returncode == 0, restart.stderr
    assert "api: restarted, ready" in restart.stdout
    assert not alive(old)
    new = {r["name"]: r for r in json.loads(corral(runtime, "ps", "--json", cwd=tmp_path).stdout)}["api"]
    assert new["restarts"] == 0 or new["pid"] != old  # a restart asked for is no crash
    assert new["pid"] != old and new["state"] == "ready"

    down = corral(runtime, "down", cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert not alive(daemon)  # down waits until its owner is gone...
    assert not alive(rows["db"]["pid"]) and not alive(new["pid"])  # ...and nothing of it runs
    assert json.loads(corral(runtime, "ls", "--json").stdout) == []
    gone = corral(runtime, "ps", cwd=tmp_path)
    assert gone.returncode == 1 and "no running stack" in gone.stderr


def test_logs_follow_ends_on_sigint_and_stop_start(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    assert corral(runtime, "up", "-d", cwd=tmp_path).returncode == 0
    argv = [sys.executable, "-m", "corral", "logs", "-f", "--timestamps"]
    with subprocess.Popen(argv, cwd=tmp_path, env=runtime, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as follow:
        try:
            _read_until(follow.stdout, r"api\s+\| \S+T\S+ api-up")  # the tail, with times
            stop = corral(runtime, "stop", "api", cwd=tmp_path)
            assert stop.returncode == 0 and "api: stopped" in stop.stdout, stop.stderr
            start = corral(runtime, "start", "api", cwd=tmp_path)
            assert start.returncode == 0 and "api: started, ready" in start.stdout, start.stderr
            _read_until(follow.stdout, r"api\s+\| \S+ api-up")  # followed: the new run's line
            follow.send_signal(signal.SIGINT)
            assert follow.wait(60) == 0
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
    down = corral(runtime, "down", cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr


def test_logs_follow_ends_when_the_stack_ends(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    assert corral(runtime, "up", "-d", cwd=tmp_path).returncode == 0
    with subprocess.Popen([sys.executable, "-m", "corral", "logs", "-f", "db"], cwd=tmp_path,
                          env=runtime, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as follow:
        try:
            _read_until(follow.stdout, r"db\s+\| pid \d+")  # the pid line db printed
            assert corral(runtime, "down", cwd=tmp_path).returncode == 0
            assert follow.wait(60) == 0
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()


def test_up_detached_that_cannot_start_says_why_and_leaves_nothing(tmp_path, helper, runtime):
    (tmp_path / "corral.yaml").write_text(f"""
services:
  first:
    command: ["{helper}", "pid", "pause"]
    ready: {{ log: "^pid" }}
  broken:
    command: ["{helper}", "stderr", "listen failed: address in use", "exit", "3"]
    ready: {{ tcp: 1 }}
    depends_on: [first]
""")
    out = corral(runtime, "up", "-d", cwd=tmp_path)
    assert out.returncode == 1
    assert "service 'broken' failed to start" in out.stderr
    assert "exit code 3" in out.stderr
    assert "listen failed: address in use" in out.stderr
    # The daemon's log has every line its services printed: `first`'s pid among them.
    log = next(Path(runtime["CORRAL_RUNTIME_DIR"], "daemon").glob("*.log")).read_text()
    found = re.search(r"^first\s+\| pid (\d+)", log, re.M)
    assert found, log
    first = int(found.group(1))
    assert not alive(first)  # what did start was stopped before `up -d` returned
    assert json.loads(corral(runtime, "ls", "--json").stdout) == []
    assert list(Path(runtime["CORRAL_RUNTIME_DIR"], "daemon").glob("*.json")) == []


def test_ctrl_c_while_up_d_waits_stops_the_daemon(tmp_path, helper, runtime):
    (tmp_path / "corral.toml").write_text(f"""
[services.slow]
command = ["{helper}", "pid", "pause"]
ready = {{ log = "never printed", timeout = 600 }}
""")
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-d"], cwd=tmp_path, env=runtime,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as up:
        try:
            daemon_dir = Path(runtime["CORRAL_RUNTIME_DIR"], "daemon")

            def started() -> bool:
                logs = list(daemon_dir.glob("*.log")) if daemon_dir.exists() else []
                return bool(logs) and re.search(r"slow\s+\| pid \d+", logs[0].read_text()) is not None

            wait_until(started, 60, "the service to run")
            log = next(daemon_dir.glob("*.log")).read_text()
            pid = int(re.search(r"slow\s+\| pid (\d+)", log).group(1))
            up.send_signal(signal.SIGINT)
            assert up.wait(60) == 130
            assert "stopping the daemon" in up.stderr.read().decode()
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    assert not alive(pid)  # the daemon stopped it before `up -d` returned
    assert json.loads(corral(runtime, "ls", "--json").stdout) == []


def test_two_stacks_from_two_directories(tmp_path, helper, runtime):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    write_stack(one, helper)
    write_stack(two, helper)
    up1 = corral(runtime, "up", "-d", cwd=one)
    up2 = corral(runtime, "up", "-d", cwd=two)
    assert up1.returncode == 0 and up2.returncode == 0, up1.stderr + up2.stderr
    port1, port2 = ports_of(up1.stdout)["db.main"], ports_of(up2.stdout)["db.main"]
    assert port1 != port2
    listed = json.loads(corral(runtime, "ls", "--json").stdout)
    assert sorted(s["config"] for s in listed) == sorted(
        str((d / "corral.toml").resolve()) for d in (one, two))
    for d, port in ((one, port1), (two, port2)):
        rows = json.loads(corral(runtime, "ps", "--json", cwd=d).stdout)
        assert next(r for r in rows if r["name"] == "db")["ports"] == {"main": port}
        # From elsewhere, by file: before the command (as docker compose), or --file for logs.
        rows = json.loads(corral(runtime, "-f", str(d / "corral.toml"), "ps", "--json").stdout)
        assert next(r for r in rows if r["name"] == "db")["ports"] == {"main": port}
        logs = corral(runtime, "logs", "--file", str(d / "corral.toml"), "api")
        assert logs.returncode == 0 and "api-up" in logs.stdout, logs.stderr
    # -f names the stack from anywhere; the other one goes on running.
    assert corral(runtime, "down", "-f", str(one / "corral.toml")).returncode == 0
    assert [s["config"] for s in json.loads(corral(runtime, "ls", "--json").stdout)] == [
        str((two / "corral.toml").resolve())]
    socket.create_connection(("127.0.0.1", port2), timeout=10).close()
    again = corral(runtime, "up", "-d", cwd=two)  # as docker compose: a no-op that succeeds
    assert again.returncode == 0 and "already runs" in again.stdout
    assert corral(runtime, "down", cwd=two).returncode == 0


def test_up_attaches_to_a_running_stack_and_ctrl_c_detaches(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    out = corral(runtime, "up", "-d", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    daemon = daemon_pid(out.stdout)
    with subprocess.Popen([sys.executable, "-m", "corral", "up"], cwd=tmp_path, env=runtime,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as attached:
        try:
            _read_until(attached.stderr, "already runs .*attached")
            assert corral(runtime, "restart", "api", cwd=tmp_path).returncode == 0
            _read_until(attached.stdout, r"api\s+\| api-up")  # the restarted api's line, streamed
            attached.send_signal(signal.SIGINT)
            assert attached.wait(60) == 0
            assert "detached" in attached.stderr.read().decode()
        finally:
            if attached.poll() is None:
                attached.kill()
                attached.wait()
    assert alive(daemon)  # detaching stops nothing
    rows = json.loads(corral(runtime, "ps", "--json", cwd=tmp_path).stdout)
    assert {r["state"] for r in rows} == {"ready"}
    down = corral(runtime, "down", cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr


def test_daemon_sigkilled_leaves_nothing_running_and_ls_forgets_it(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    out = corral(runtime, "up", "-d", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    daemon = daemon_pid(out.stdout)
    pids = [r["pid"] for r in json.loads(corral(runtime, "ps", "--json", cwd=tmp_path).stdout)]
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: not alive(daemon), 60, "the daemon to die")
    for pid in pids:  # the death watcher kills them
        wait_until(lambda pid=pid: not alive(pid), 60, f"service pid {pid} to die")
    assert json.loads(corral(runtime, "ls", "--json").stdout) == []
    assert list(Path(runtime["CORRAL_RUNTIME_DIR"], "daemon").glob("*.json")) == []  # ls pruned it
    gone = corral(runtime, "ps", cwd=tmp_path)
    assert gone.returncode == 1 and "no running stack" in gone.stderr


def test_daemon_sigterm_stops_the_stack_and_exits(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    out = corral(runtime, "up", "-d", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    daemon = daemon_pid(out.stdout)
    pids = [r["pid"] for r in json.loads(corral(runtime, "ps", "--json", cwd=tmp_path).stdout)]
    os.kill(daemon, signal.SIGTERM)
    wait_until(lambda: not alive(daemon), 60, "the daemon to exit")
    assert not any(alive(pid) for pid in pids)  # it stopped them before it exited
    assert json.loads(corral(runtime, "ls", "--json").stdout) == []
    log = next(Path(runtime["CORRAL_RUNTIME_DIR"], "daemon").glob("*.log")).read_text()
    assert re.search(r"^api\s+\| \[corral\] stopped", log, re.M) and log.endswith("[corral] stopped\n")


def test_commands_without_a_stack_or_not_built_say_so_in_one_line(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    for args in (["ps"], ["logs"], ["restart", "api"], ["down"], ["metrics"], ["ps", "--name", "nope"],
                 ["dashboard", "--no-browser"]):
        out = corral(runtime, *args, cwd=tmp_path)
        assert out.returncode == 1, args
        assert out.stderr.startswith("corral: error: no running stack"), (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
    both = corral(runtime, "up", "-d", "--abort-on-exit", cwd=tmp_path)
    assert both.returncode == 2 and "need the foreground" in both.stderr
    out = corral(runtime, "init")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "not available" in out.stderr and "usage" not in out.stderr
    empty = corral(runtime, "ls")
    assert empty.returncode == 0 and "no running stacks" in empty.stderr


def test_metrics_and_unknown_service(tmp_path, helper, runtime):
    write_stack(tmp_path, helper)
    assert corral(runtime, "up", "-d", cwd=tmp_path).returncode == 0
    metrics = json.loads(corral(runtime, "metrics", "--json", cwd=tmp_path).stdout)
    assert set(metrics) == {"db", "api"} and metrics["db"]["processes"] >= 1
    table = corral(runtime, "metrics", cwd=tmp_path).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "STATE", "PID"] and len(table) == 3
    bad = corral(runtime, "restart", "nosuch", cwd=tmp_path)
    assert bad.returncode == 1 and "no service 'nosuch'" in bad.stderr
    down = corral(runtime, "down", cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr


def test_logs_follow_of_many_services_shares_one_stream(tmp_path, helper, runtime):
    # Beyond 16 services `logs -F` reads one event stream, not one per service: each
    # service's tail comes first, then new lines, none of the tail repeated.
    count = 20
    (tmp_path / "corral.toml").write_text('name = "many"\n' + "".join(
        f'[services.s{i}]\ncommand = ["{helper}", "print", "hello from s{i}", "pause"]\n'
        f'ready = {{ log = "hello" }}\n' for i in range(count)))
    assert corral(runtime, "up", "-d", cwd=tmp_path).returncode == 0
    with subprocess.Popen([sys.executable, "-m", "corral", "logs", "-f"], cwd=tmp_path, env=runtime,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as follow:
        try:
            seen = ""
            while len(set(re.findall(r"hello from (s\d+)", seen))) < count:  # in whatever order
                seen += _read_until(follow.stdout, r"hello from s\d+$")
            assert corral(runtime, "restart", "s7", cwd=tmp_path).returncode == 0
            seen += _read_until(follow.stdout, r"^s7\s+\| hello from s7$")  # the new run's line
            follow.send_signal(signal.SIGINT)
            assert follow.wait(60) == 0
            rest = follow.stdout.read().decode()
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait()
    lines = (seen + rest).splitlines()
    assert sum(1 for line in lines if line.startswith("s7 ")) == 2  # its tail once, its new line once
    assert sum(1 for line in lines if line.startswith("s3 ")) == 1
    down = corral(runtime, "down", cwd=tmp_path)
    assert down.returncode == 0, down.stdout + down.stderr


def test_commands_reach_a_foreground_up_and_down_ends_it(tmp_path, helper, runtime):
    # Whoever owns the stack: here a `corral up` in another shell.
    write_stack(tmp_path, helper)
    with subprocess.Popen([sys.executable, "-m", "corral", "up"], cwd=tmp_path, env=runtime,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as up:
        try:
            _read_until(up.stderr, "stack ready")
            table = corral(runtime, "ls").stdout.splitlines()
            assert table[0].split()[:5] == ["NAME", "PID", "READY", "UPTIME", "OWNER"]
            assert table[1].split()[:3] == ["clitest", str(up.pid), "2/2"] and "process" in table[1]
            down = corral(runtime, "down", cwd=tmp_path)
            assert down.returncode == 0 and "not a corral daemon" in down.stdout, down.stderr
            assert up.wait(60) == 0  # every service has ended: the foreground `up` ends
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
    assert json.loads(corral(runtime, "ls", "--json").stdout) == []
