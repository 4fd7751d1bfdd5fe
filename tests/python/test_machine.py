"""The service machine under the requests that used to break it: overlapping, repeated and
reversed requests, restarts right after a deadline, a host that reaps our children, huge
durations. Real processes throughout (the helper program)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time

import pytest

import corral
from conftest import alive, wait_until


def _pids(svc: corral.Service) -> list[int]:
    return [int(line.split()[1]) for line in svc.logs() if line.startswith("pid ")]


def _collect(errors: list[BaseException], fn, **kw) -> None:  # type: ignore[no-untyped-def]
    try:
        fn(**kw)
    except BaseException as e:
        errors.append(e)


def _zombies_of(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                try:
                    with open(f"/proc/{child}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] == "Z":
                            out.append(int(child))
                except FileNotFoundError:
                    pass
    return out


def test_start_right_after_a_readiness_deadline_waits_for_the_reap(make_stack, helper):
    # The killed process must be reaped before the slot is refilled: never two processes
    # of one service, never a zombie or an orphan.
    stack = make_stack()
    svc = stack.add("web", [helper, "pid", "ignore", "TERM", "pause"],
                    ready=corral.TcpCheck(1, start_timeout=0.3, interval=0.05))
    for _ in range(5):
        errors: list[BaseException] = []
        t = threading.Thread(target=_collect, args=(errors, stack.start), kwargs={"timeout": 60})
        t.start()
        # The moment the state says `failed` (the kill is sent, the reap may not be done),
        # start again.
        wait_until(lambda: svc.state == "failed", 30, "the deadline")
        with pytest.raises(corral.StartError, match="not ready within"):
            stack.start(timeout=60)
        t.join(30)
        assert not t.is_alive() and isinstance(errors[0], corral.StartError)
    pids = _pids(svc)
    assert len(pids) >= 6
    stack.close(timeout=60)
    assert not [p for p in pids if alive(p)]
    assert _zombies_of(os.getpid()) == []


def test_the_same_name_twice_in_one_request(make_stack, helper):
    stack = make_stack()
    stack.add("web", [helper, "pause"])
    stack.start("web", "web", timeout=30)
    stack.stop("web", "web", timeout=30)
    assert stack["web"].state == "stopped"
    stack.start("web", "web", timeout=30)
    assert stack["web"].state == "ready"


def test_a_stop_overtaken_by_a_start_completes(make_stack, helper):
    stack = make_stack()
    # Slow to stop: TERM is trapped, so the stop waits for the SIGKILL after 2 s.
    stack.add("web", [helper, "ignore", "TERM", "print", "armed", "pause"], stop_timeout=2,
              ready=corral.LogCheck("^armed$"))
    stack.start(timeout=30)
    done = threading.Event()
    stop_thread = threading.Thread(target=lambda: (stack.stop("web", timeout=60), done.set()))
    stop_thread.start()
    wait_until(lambda: stack["web"].state == "stopping", 30, "stopping")
    stack.start("web", timeout=60)  # overtakes the stop: it restarts once the stop is done
    stop_thread.join(60)
    assert done.is_set()
    assert stack["web"].state == "ready"


def test_a_start_overtaken_by_a_stop_fails_saying_so(make_stack, helper):
    stack = make_stack()
    stack.add("slow", [helper, "pause"], ready=corral.LogCheck("never printed", start_timeout=60))
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stack.start(timeout=60)
        except corral.StartError as e:
            errors.append(e)

    t = threading.Thread(target=start)
    t.start()
    wait_until(lambda: stack["slow"].state == "starting", 30, "starting")
    stack.stop(timeout=60)
    t.join(60)
    assert not t.is_alive()
    assert errors and "stop" in str(errors[0])


def test_wait_for_log_without_timeout_returns_when_the_stack_closes(make_stack, helper):
    stack = make_stack()
    stack.add("quiet", [helper, "pause"])
    stack.start(timeout=30)
    result: list[BaseException | str] = []

    def wait() -> None:
        try:
            result.append(stack["quiet"].wait_for_log("never printed"))
        except corral.CorralError as e:
            result.append(e)

    t = threading.Thread(target=wait)
    t.start()
    stack.close(timeout=60)
    t.join(30)
    assert not t.is_alive()
    assert result and isinstance(result[0], corral.CorralError)


def test_wait_state_and_start_after_close_do_not_hang(helper):
    stack = corral.Stack(name="closed")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=30)
    stack.close(timeout=60)
    with pytest.raises(corral.CorralError):
        stack.start(timeout=30)


def test_a_host_that_reaps_our_child_does_not_freeze_the_engine(helper):
    # A host calling waitpid() on our child steals the exit status; the engine must notice
    # the exit all the same (not spin, not report a dead pid as ready) and close must
    # complete. Who reaps first is a race: the script tries until the host has won once.
    code = f"""
import os, time, corral
for attempt in range(20):
    stack = corral.Stack(name="stolen")
    svc = stack.add("a", [{helper!r}, "sleep", "0.2"], restart="no")
    stack.start(timeout=30)
    try:
        os.waitpid(svc.pid, 0)
    except ChildProcessError:
        stack.close(timeout=30)  # the engine reaped first: try again
        continue
    stack.wait("a", "exited", timeout=30)
    print("state", svc.state, "exit", svc.exit_code, flush=True)
    t0 = time.process_time()
    time.sleep(0.5)
    print("cpu", round(time.process_time() - t0, 3), flush=True)
    stack.close(timeout=30)
    print("closed", flush=True)
    break
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    if "state" not in out.stdout:
        pytest.skip("the engine reaped first in every attempt")
    # 255 when the host took the status first; 0 (the real one) when the engine had already
    # read it (waitid with WNOWAIT) before the host reaped. Either way: exited, not ready.
    assert re.search(r"state exited exit (255|0)\b", out.stdout), out.stdout
    cpu = float(out.stdout.split("cpu ")[1].split()[0])
    assert cpu < 0.25, out.stdout  # a spinning engine thread would burn the whole 0.5 s
    assert "closed" in out.stdout


def test_huge_stop_timeout_still_sends_term_first(make_stack, helper):
    # 1e10 s overflowed the nanosecond clock and killed at once.
    stack = make_stack()
    svc = stack.add("polite", [helper, "trap", "TERM", "got-term", "print", "armed", "pause"],
                    stop_timeout=1e10, ready=corral.LogCheck("^armed$"))
    stack.start(timeout=30)
    stack.stop(timeout=60)
    assert "got-term" in svc.logs()
    assert svc.exit_code == 0


def test_start_with_an_infinite_timeout_waits_normally(make_stack, helper):
    stack = make_stack()
    stack.add("late", [helper, "sleep", "0.3", "print", "up", "pause"],
              ready=corral.LogCheck("^up$", start_timeout=60))
    t0 = time.monotonic()
    stack.start(timeout=float("inf"))
    assert stack["late"].state == "ready"
    assert time.monotonic() - t0 >= 0.3


def test_readiness_notification_from_another_process_is_ignored(make_stack, helper, tmp_path):
    flag = tmp_path / "go"
    stack = make_stack()
    svc = stack.add("svc", [helper, "env", "NOTIFY_SOCKET", "touch-and-wait", str(flag), "notify", "READY=1",
                            "pause"], ready=corral.NotifyCheck(start_timeout=60))
    errors: list[BaseException] = []
    t = threading.Thread(target=_collect, args=(errors, stack.start), kwargs={"timeout": 60})
    t.start()
    wait_until(lambda: svc.state == "starting", 30, "starting")
    path = svc.wait_for_log("^env NOTIFY_SOCKET=", timeout=30).split("=", 1)[1]
    # Another process (not one of the service's) sends READY=1: it must not count.
    subprocess.run([sys.executable, "-c",
                    "import socket; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
                    f"s.sendto(b'READY=1', {path!r})"], check=True, timeout=30)
    svc.wait_for_log("ignored a notification from pid", timeout=30)
    assert svc.state == "starting"
    flag.touch()  # now the service itself notifies
    t.join(60)
    assert not errors
    assert svc.state == "ready"


def test_replicas_with_long_names_each_get_their_own_notify_socket(make_stack, helper):
    stack = make_stack()
    long = "x" * 60
    for i in range(2):
        stack.add(f"{long}-{i}", [helper, "notify", "READY=1", "pause"],
                  ready=corral.NotifyCheck(start_timeout=60))
    stack.start(timeout=60)
    assert all(s.state == "ready" for s in stack)


def test_nobody_takes_the_port_during_a_restart_backoff(make_stack, helper):
    import socket

    stack = make_stack()
    svc = stack.add("web", [helper, "listen", "PORT", "print", "listening", "sleep", "0.3", "exit", "1"],
                    ports=["http"], restart=corral.Restart("on-failure", backoff=3, max_backoff=3),
                    ready=corral.LogCheck("^listening$"))
    stack.start(timeout=30)
    port = svc.ports["http"]
    stack.wait("web", "backoff", timeout=30)
    for reuse in (0, 1):  # most servers set SO_REUSEADDR; it must not help them
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
            with pytest.raises(OSError):
                s.bind(("0.0.0.0", port))
    # ... and the service itself gets it back when it restarts.
    stack.wait("web", "starting", timeout=30)
    svc.wait_for_log("^listening$", timeout=30, new_only=False)
    wait_until(lambda: svc.restarts >= 1 and svc.logs().count("listening") >= 2, 30, "second listen")


def test_a_fork_of_the_owner_during_a_start_does_not_hold_the_ports(make_stack, helper, tmp_path):
    # A child forked without exec (multiprocessing, os.fork) inherited the socket that keeps
    # a port reserved, so the service's own bind failed with EADDRINUSE.
    flag = tmp_path / "go"
    stack = make_stack()
    stack.add("first", [helper, "touch-and-wait", str(flag), "print", "up", "pause"],
              ready=corral.LogCheck("^up$", start_timeout=60))
    stack.add("web", [helper, "listen", "PORT", "pause"], ports=["http"], depends_on=["first"],
              ready=corral.TcpCheck("http", start_timeout=60))
    errors: list[BaseException] = []
    t = threading.Thread(target=_collect, args=(errors, stack.start), kwargs={"timeout": 60})
    t.start()
    wait_until(lambda: stack["first"].state == "starting", 30, "first starting")
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked child only waits to be killed
        time.sleep(60)
        os._exit(0)
    try:
        flag.touch()
        t.join(60)
        assert not errors, errors
        assert stack["web"].state == "ready"
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def test_metrics_from_many_threads_at_once_agree(make_stack, helper):
    stack = make_stack()
    for i in range(3):
        stack.add(f"s{i}", [helper, "pause"])
    stack.start(timeout=30)
    # A service is ready once its exec has begun (no ready check): for a moment after, the
    # kernel still shows the old memory map as empty (RSS 0). Wait out that moment first.
    wait_until(lambda: all(r["rss_bytes"] > 0 for r in stack.metrics().values()),
               what="every service's exec to finish")
    bad: list[object] = []

    def sample() -> None:
        for _ in range(40):
            for name, row in stack.metrics().items():
                if row["processes"] != 1 or row["threads"] != 1 or row["rss_bytes"] <= 0:
                    bad.append((name, row))

    threads = [threading.Thread(target=sample) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not bad, bad[:3]


_EAGAIN_SCRIPT = """
import os, sys, resource
import corral, corral.stack  # imported while the interpreter's files are still readable
helper, rundir = sys.argv[1], sys.argv[2]
os.setgroups([])
os.setresgid(65534, 65534, 65534)
os.setresuid(65534, 65534, 65534)
os.environ["CORRAL_RUNTIME_DIR"] = rundir
warm = corral.Stack(name="warm")  # the engine, its watcher and helper threads exist now
warm.add("w", [helper, "exit", "0"])
warm.start(timeout=30)
warm.close(timeout=30)
tasks = 0
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            if os.stat(f"/proc/{pid}").st_uid == 65534:
                tasks += len(os.listdir(f"/proc/{pid}/task"))
        except FileNotFoundError:
            pass
# Not one process more for this user: the service's fork fails with EAGAIN.
resource.setrlimit(resource.RLIMIT_NPROC, (tasks, tasks))
stack = corral.Stack(name="eagain")
svc = stack.add("a", [helper, "pause"],
                restart=corral.Restart("on-failure", backoff=0.05, max_backoff=0.05, max_restarts=3))
try:
    stack.start(timeout=60)
    print("started", svc.state)
except corral.StartError as e:
    print("failed", svc.state, svc.restarts, str(e).splitlines()[0])
stack.close(timeout=30)
"""


def test_a_fork_that_fails_with_eagain_follows_the_restart_policy(helper, tmp_path):
    # The failed fork used to reset the restart streak each time: 29 restarts in 3 s with
    # max_restarts=3. It counts as a run that ended at once: backoff, then the limit.
    if os.getuid() != 0:
        pytest.skip("needs root to run the owner as another user with RLIMIT_NPROC")
    tmp_path.chmod(0o777)
    out = subprocess.run([sys.executable, "-c", _EAGAIN_SCRIPT, helper, str(tmp_path / "rt")],
                         capture_output=True, text=True, timeout=120)
    if "Permission denied" in out.stderr:
        pytest.skip(f"the helper or the package is not readable by nobody: {out.stderr.strip()[-200:]}")
    assert out.returncode == 0, out.stderr
    assert "failed failed 3 " in out.stdout, out.stdout
    assert "restart limit reached" in out.stdout


def test_a_listener_left_by_an_earlier_run_does_not_make_the_next_run_ready(make_stack, helper, tmp_path):
    # Run 1 listens, forks a child that escapes its group with the listening socket (and,
    # with an empty environment, carries no marker for the sweep to find), and crashes.
    # Run 2 does not listen at all: the escaped socket must not make it ready.
    flag = tmp_path / "second-run"
    script = (f'if [ -e {flag} ]; then exec {helper} print second pause; fi; touch {flag}; '
              f'exec env -i PORT=$PORT {helper} listen PORT escape 60 print listening sleep 0.5 exit 1')
    stack = make_stack()
    svc = stack.add("web", script, ports=["http"],
                    restart=corral.Restart("on-failure", backoff=0.05, max_restarts=1),
                    ready=corral.TcpCheck("http", start_timeout=2, interval=0.05))
    try:
        stack.start(timeout=60)  # run 1 is ready
        svc.wait_for_log("^second$", timeout=30)
        with pytest.raises(corral.CorralError, match="not by the service"):
            stack.wait("web", "ready", timeout=60)
        assert svc.state == "failed"
    finally:
        # Without a marker no sweep can find it: this test kills what it made escape.
        for line in svc.logs():
            if line.startswith("escaped "):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[1]), 9)
