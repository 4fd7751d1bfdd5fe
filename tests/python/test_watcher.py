"""The death watcher (RELIABILITY.md rows 1 and 2): nothing outlives an owner killed with
SIGKILL, not an escaped grandchild nor a running exec check, and a watcher that is stopped
or killed neither blocks the engine nor leaves the services unprotected."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator

import pytest

import corral
from conftest import alive, kill_hopper, lock_held, python_script, wait_until
from test_reliability import _watcher_binary


def _children_named(parent: int, comm: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/comm") as f:
                name = f.read().strip()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and name == comm:
            found.append(int(entry))
    return found


def _marked(stack_id: str) -> list[int]:
    """Live processes whose environment carries CORRAL_STACK=<stack_id>."""
    marker = f"CORRAL_STACK={stack_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0") and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _with_cmdline(*argv: str) -> list[int]:
    want = "\0".join(argv).encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() == want and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture(params=["exec", "fork"])
def owner_env(request: pytest.FixtureRequest, helper: str) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    if request.param == "exec":
        program = _watcher_binary(helper)
        if program is None:
            pytest.skip("no corral-watch binary built here")
        env["CORRAL_WATCHER"] = program
    else:
        env["CORRAL_WATCHER"] = "/nonexistent"  # falls back to a fork of the owner
    yield env


# The owner: starts what argv[2] names, prints one JSON line, then waits to be killed.
OWNER = textwrap.dedent("""
    import json, sys, threading, corral
    helper, what = sys.argv[1], sys.argv[2]
    stack = corral.Stack("owned")
    info = {}
    if what == "escape":
        stack.add("svc", [helper, "escape", "300", "grandchild", "300", "pause"],
                  ready=corral.LogCheck("^grandchild "))
        stack.start(timeout=60)
        svc = stack["svc"]
        info["pids"] = [svc.pid] + [int(l.split()[1]) for l in svc.logs()]
    elif what == "hop":
        stack.add("svc", [helper, "hop", sys.argv[3], "300", "pause"], ready=corral.LogCheck("^hopping "))
        stack.start(timeout=60)
        info["group"] = int(stack["svc"].logs()[0].split()[1])
    else:
        # The check runs without corral's marker, and its sleep is the shell's child: only
        # the check's process group leads to it.
        check = corral.ExecCheck("env -i /bin/sh -c 'sleep 1000.31; true'", timeout=1000,
                                 start_timeout=1000)
        stack.add("svc", [helper, "pause"], ready=check)
        threading.Thread(target=stack.start, daemon=True).start()
    print(json.dumps(info), flush=True)
    sys.stdin.read()
""")


def _kill_marked(stack_id: str) -> None:
    """After a failure: nothing of the test outlives it."""
    for pid in _marked(stack_id):
        os.kill(pid, signal.SIGKILL)


def _stack_id_of(pid: int) -> str:
    with open(f"/proc/{pid}/environ", "rb") as f:
        for var in f.read().split(b"\0"):
            if var.startswith(b"CORRAL_STACK="):
                return var.split(b"=", 1)[1].decode()
    raise AssertionError(f"pid {pid} has no CORRAL_STACK")


def test_owner_sigkill_kills_a_grandchild_that_escaped_with_setsid(helper, owner_env):
    with subprocess.Popen([*python_script(OWNER), helper, "escape"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=owner_env) as owner:
        stack_id = ""
        try:
            pids = json.loads(owner.stdout.readline())["pids"]
            leader, escaped, _grandchild = pids
            with open(f"/proc/{escaped}/stat") as f:  # it really left the group and session
                assert int(f.read().rsplit(")", 1)[1].split()[2]) != leader
            stack_id = _stack_id_of(escaped)
            assert escaped in _marked(stack_id)
            owner.kill()
            owner.wait(timeout=30)
            wait_until(lambda: not _marked(stack_id), timeout=20,
                       what="every process with the stack's marker to die with the owner")
            assert not any(alive(p) for p in pids)
        finally:
            owner.kill()
            if stack_id:
                _kill_marked(stack_id)


def test_owner_sigkill_kills_an_escapee_that_hops_from_pid_to_pid(helper, owner_env, tmp_path):
    # A new pid every few microseconds: the watcher's sweep kills its group, not its past.
    lock = tmp_path / "hop.lock"
    with subprocess.Popen([*python_script(OWNER), helper, "hop", str(lock)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=owner_env) as owner:
        group = 0
        try:
            group = json.loads(owner.stdout.readline())["group"]
            assert lock_held(lock)
            owner.kill()
            owner.wait(timeout=30)
            wait_until(lambda: not lock_held(lock), what="the hopping escapee to die with the owner")
        finally:
            owner.kill()
            if group:
                kill_hopper(group, lock)


def test_owner_sigkill_kills_a_running_exec_check(helper, owner_env):
    with subprocess.Popen([*python_script(OWNER), helper, "check"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=owner_env) as owner:
        try:
            owner.stdout.readline()
            wait_until(lambda: bool(_with_cmdline("sleep", "1000.31")), timeout=30,
                       what="the exec check to run")
            sleepers = _with_cmdline("sleep", "1000.31")
            owner.kill()
            owner.wait(timeout=30)
            wait_until(lambda: not any(alive(p) for p in sleepers), timeout=20,
                       what="the check's process to die with the owner")
        finally:
            owner.kill()
            for p in _with_cmdline("sleep", "1000.31"):
                os.kill(p, signal.SIGKILL)


def test_a_killed_watcher_is_replaced_and_still_protects(helper, owner_env):
    with subprocess.Popen([*python_script(OWNER), helper, "escape"], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=owner_env) as owner:
        stack_id = ""
        try:
            pids = json.loads(owner.stdout.readline())["pids"]
            stack_id = _stack_id_of(pids[1])
            first = _children_named(owner.pid, "corral-watch")
            assert len(first) == 1
            os.kill(first[0], signal.SIGKILL)
            wait_until(lambda: _children_named(owner.pid, "corral-watch") not in ([], first),
                       timeout=30, what="a new watcher")
            owner.kill()
            owner.wait(timeout=30)
            wait_until(lambda: not _marked(stack_id) and not any(alive(p) for p in pids), timeout=20,
                       what="the services to die with the owner, under the new watcher")
        finally:
            owner.kill()
            if stack_id:
                _kill_marked(stack_id)


def test_a_stopped_watcher_does_not_freeze_the_engine(make_stack, helper):
    stack = make_stack()
    stack.add("svc", [helper, "print", "up", "pause"], ready=corral.LogCheck("^up$"))
    stack.start(timeout=60)  # the engine and its watcher exist
    watchers = _children_named(os.getpid(), "corral-watch")
    assert len(watchers) == 1
    os.kill(watchers[0], signal.SIGSTOP)
    try:
        # Each cycle tells the watcher two things; a socket buffer holds a few hundred.
        deadline = time.monotonic() + 120
        for _ in range(300):
            stack.stop(timeout=30)
            stack.start(timeout=30)
            assert time.monotonic() < deadline, "the engine slowed to a crawl"
        wait_until(lambda: _children_named(os.getpid(), "corral-watch") not in ([], watchers),
                   timeout=30, what="the stopped watcher to be replaced")
        assert not alive(watchers[0])
        assert stack["svc"].state == "ready"
    finally:
        if alive(watchers[0]):
            os.kill(watchers[0], signal.SIGCONT)
