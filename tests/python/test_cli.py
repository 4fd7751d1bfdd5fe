"""The `corral` command line: up (foreground), check, graph."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, alive, wait_until


def corral(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "corral", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120, **kw)


def write_stack(tmp_path: Path, helper: str, extra: str = "") -> Path:
    path = tmp_path / "corral.toml"
    path.write_text(f"""
name = "clitest"

[services.db]
command = ["{helper}", "pid", "listen", "{{{{port.main}}}}", "pause"]
ports = ["main"]
ready = {{ tcp = "main", interval = 0.02 }}

[services.api]
command = "{helper} pid print api-up pause"
depends_on = {{ db = "ready" }}
ready = {{ log = "api-up" }}
env = {{ DB = "127.0.0.1:{{{{db.port.main}}}}" }}
{extra}
""")
    return path


def test_check_prints_levels(tmp_path, helper):
    path = write_stack(tmp_path, helper)
    out = corral("check", "-f", str(path))
    assert out.returncode == 0, out.stderr
    assert "2 services, 2 levels" in out.stdout
    assert "level 0: db" in out.stdout and "level 1: api" in out.stdout


def test_check_finds_default_file_and_graph(tmp_path, helper):
    write_stack(tmp_path, helper)
    out = corral("graph", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["db", "api <- db (ready)"]


def test_check_reports_errors_with_file_and_exit_code(tmp_path, helper):
    path = write_stack(tmp_path, helper, extra='[services.web]\ncommand = "x"\ndepends_on = ["nope"]\n')
    out = corral("check", "-f", str(path))
    assert out.returncode == 1
    assert "corral.toml" in out.stderr and "nope" in out.stderr and "web" in out.stderr
    cyc = tmp_path / "cycle.toml"
    cyc.write_text('[services.a]\ncommand="x"\ndepends_on=["b"]\n[services.b]\ncommand="x"\ndepends_on=["a"]\n')
    out = corral("check", "-f", str(cyc))
    assert out.returncode == 1 and "dependency cycle: a -> b -> a" in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    out = corral("check", cwd=empty)
    assert out.returncode == 1 and "no corral.toml" in out.stderr


_pending: dict[int, str] = {}


def _read_until(stream, pattern: str, timeout: float = 60) -> str:
    """Reads lines from a pipe until one matches; returns everything read up to it.

    Reads the raw fd (a buffered reader would hide lines from select()); lines after the
    match stay pending for the next call on the same stream.
    """
    fd = stream.fileno()
    seen = ""
    buf = _pending.pop(fd, "")
    deadline = time.monotonic() + timeout
    while True:
        while "\n" in buf:
            line, buf = buf.split("\n", 1)
            seen += line + "\n"
            if re.search(pattern, line):
                _pending[fd] = buf
                return seen
        if time.monotonic() > deadline:
            break
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk.decode()
    raise AssertionError(f"no line matching {pattern!r} in:\n{seen}{buf}")


def _rest(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """Everything the process still writes until it exits, after _read_until's reads."""
    head_out = _pending.pop(proc.stdout.fileno(), "")
    head_err = _pending.pop(proc.stderr.fileno(), "")
    out, err = proc.communicate(timeout=timeout)
    return head_out + out, head_err + err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_streams_prefixed_logs_and_stops_cleanly_on_signal(tmp_path, helper, sig):
    path = write_stack(tmp_path, helper)
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(path), "--verbose"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        _check_up(proc, sig)


def _check_up(proc: subprocess.Popen[str], sig: int) -> None:
    try:
        _read_until(proc.stderr, r"stack ready")
        out = _read_until(proc.stdout, r"^api +\| \[corral\] ready")
        assert re.search(r"^db +\| \[corral\] run: .*corral_helper pid listen \d+ pause", out, re.M)
        pids = [int(m) for m in re.findall(r"\| pid (\d+)", out)]
        while len(pids) < 2:  # db's first line may trail api's readiness in the stream
            more = _read_until(proc.stdout, r"\| pid \d+")
            pids += [int(m) for m in re.findall(r"\| pid (\d+)", more)]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        proc.send_signal(sig)
        rest, err = _rest(proc)
        assert proc.returncode == 0, err
        assert "api" in rest and "[corral] stopped" in rest
        # api (the dependent) stopped before db
        stops = re.findall(r"^(\w+) +\| \[corral\] stopped", rest, re.M)
        assert stops == ["api", "db"]
        wait_until(lambda: not any(alive(p) for p in pids), what="services to be gone")
    finally:
        proc.kill()


def test_up_fails_with_reason_and_log_tail(tmp_path, helper):
    path = tmp_path / "corral.yaml"
    path.write_text(f"""
services:
  broken:
    command: ["{helper}", "stderr", "listen failed: address in use", "exit", "3"]
    ready: {{ tcp: 1 }}
  after:
    command: ["{helper}", "pause"]
    depends_on: [broken]
""")
    out = subprocess.run([sys.executable, "-m", "corral", "up"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert "service 'broken' failed to start" in out.stderr
    assert "exit code 3" in out.stderr
    assert "listen failed: address in use" in out.stderr
    assert "broken | listen failed: address in use" in out.stdout


def test_up_unknown_service_fails_before_starting(tmp_path, helper):
    path = write_stack(tmp_path, helper)
    out = corral("up", "-f", str(path), "nosuch")
    assert out.returncode == 1 and "nosuch" in out.stderr


def test_console_script_and_module_agree(tmp_path, helper):
    path = write_stack(tmp_path, helper)
    exe = Path(sys.executable).parent / "corral"
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    a = subprocess.run([str(exe), "check", "-f", str(path)], capture_output=True, text=True, timeout=60)
    b = corral("check", "-f", str(path))
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


def test_demo_stack_in_repo_runs():
    """The README's first command: the demo stack comes up ready and stops on Ctrl+C."""
    demo = ROOT / "examples" / "demo" / "corral.toml"
    out = corral("check", "-f", str(demo))
    assert out.returncode == 0, out.stderr
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(demo)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _read_until(proc.stderr, r"stack ready", timeout=120)
            proc.send_signal(signal.SIGINT)
            _, err = _rest(proc)
            assert proc.returncode == 0, err
        finally:
            proc.kill()


def test_up_second_ctrl_c_kills_without_waiting(tmp_path, helper):
    path = tmp_path / "corral.toml"
    path.write_text(f"""
[services.stubborn]
command = ["{helper}", "ignore", "INT", "ignore", "TERM", "print", "armed", "pause"]
ready = {{ log = "armed" }}
stop_timeout = 600
""")
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _read_until(proc.stderr, r"stack ready")
            proc.send_signal(signal.SIGINT)
            _read_until(proc.stderr, r"press Ctrl\+C again")
            proc.send_signal(signal.SIGINT)
            out, err = _rest(proc, timeout=60)  # far less than the 600 s grace period
            assert proc.returncode == 0, err
            assert "corral: killing" in err
            assert re.search(r"stubborn \| \[corral\] stopped \(exit code -9\)", out)
        finally:
            proc.kill()


def test_up_is_lossless_when_the_terminal_is_slower_than_the_services(tmp_path, helper):
    # 300,000 lines (about 28 MB of events, more than the 16 MiB queue) while the reader
    # of corral up's output starts late: the services must wait, not lose lines.
    n = 300_000
    path = tmp_path / "corral.toml"
    path.write_text(f'[services.burst]\ncommand = ["{helper}", "lines", "{n}", "a-line-of-output"]\n')
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(path)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as up:
        time.sleep(2)  # a slow reader, not a synchronisation: nothing waits for this
        out, err = up.communicate(timeout=240)
    assert up.returncode == 0, err
    got = [line for line in out.splitlines() if "a-line-of-output " in line]
    assert len(got) == n, (len(got), err[-500:])
    assert got[-1].endswith(f"a-line-of-output {n - 1}")
    assert "dropped" not in err


def _wakeups(pid: int) -> dict[str, int]:
    """Voluntary context switches per thread: how often each one went to sleep."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                out[tid] = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except (OSError, StopIteration):
            pass
    return out


def test_up_sleeps_while_the_stack_is_idle(tmp_path, helper):
    # The main thread used to wait for events in 50 ms slices (to let Ctrl+C through):
    # 20 wake-ups a second with nothing happening. Now every thread sleeps until an event,
    # a signal or the end of a request, and Ctrl+C still works (checked at the end).
    path = write_stack(tmp_path, helper)
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            _read_until(proc.stderr, r"stack ready")
            _read_until(proc.stdout, r"^api +\| \[corral\] ready")
            before = _wakeups(proc.pid)
            time.sleep(3)  # a measurement window, not a synchronisation
            after = _wakeups(proc.pid)
            woke = {tid: after[tid] - before.get(tid, 0) for tid in after}
            assert sum(woke.values()) < 10, woke  # was 60: the main thread alone
            proc.send_signal(signal.SIGINT)
            _, err = _rest(proc)
            assert proc.returncode == 0, err
        finally:
            proc.kill()


def test_version():
    import corral as corral_module

    out = corral("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"corral {corral_module.__version__}"


def _job_stack(tmp_path: Path, helper: str, job_exit: int) -> Path:
    path = tmp_path / "corral.toml"
    path.write_text(f"""
[services.srv]
command = ["{helper}", "pid", "listen", "{{{{port.main}}}}", "pause"]
ports = ["main"]
ready = {{ tcp = "main", interval = 0.02 }}

[services.job]
command = ["{helper}", "print", "job-done", "exit", "{job_exit}"]
depends_on = {{ srv = "ready" }}
""")
    return path


@pytest.mark.parametrize(("option", "job_exit", "expected"), [
    (["--exit-code-from", "job"], 7, 7),
    (["--exit-code-from", "srv"], 0, 128 + signal.SIGTERM),  # srv was stopped by the abort
    (["--abort-on-exit"], 0, 0),
    (["--abort-on-exit"], 4, 4),
])
def test_up_aborts_when_a_service_ends_and_exits_with_its_code(tmp_path, helper, option, job_exit, expected):
    # docker compose's --abort-on-container-exit / --exit-code-from: the one-shot job ends,
    # everything else is stopped, and `corral up` exits with the chosen service's code.
    out = corral("up", "-f", str(_job_stack(tmp_path, helper, job_exit)), *option)
    assert out.returncode == expected, out.stderr
    assert "job-done" in out.stdout and "job ended" in out.stderr
    assert re.search(r"^srv +\| \[corral\] stopped", out.stdout, re.M)
    pid = int(re.search(r"srv +\| pid (\d+)", out.stdout).group(1))
    wait_until(lambda: not alive(pid), what="srv to be gone")


def test_up_exit_code_from_an_unknown_service_fails_before_starting(tmp_path, helper):
    out = corral("up", "-f", str(_job_stack(tmp_path, helper, 0)), "--exit-code-from", "nosuch")
    assert out.returncode == 1 and "--exit-code-from: unknown service 'nosuch'" in out.stderr
    assert "job-done" not in out.stdout


def test_up_prints_the_ports_once_ready(tmp_path, helper):
    path = write_stack(tmp_path, helper)
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            err = _read_until(proc.stderr, r"^  db: main=\d+$")
            assert "stack ready" in err
            proc.send_signal(signal.SIGINT)
            _rest(proc)
            assert proc.returncode == 0
        finally:
            proc.kill()
