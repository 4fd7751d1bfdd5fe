"""Shared fixtures: the helper program (a real child with modes) and stacks that are always
closed, so a failing test never leaves processes behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import corral

ROOT = Path(__file__).resolve().parents[2]

# pytester runs pytest in a subprocess, for the tests of corral's own pytest plugin.
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def helper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of tests/helper/corral_helper: the CMake-built one when CORRAL_HELPER names
    it, else compiled here with the system C compiler."""
    path = os.environ.get("CORRAL_HELPER")
    if path and os.access(path, os.X_OK):
        return path
    out = tmp_path_factory.mktemp("helper") / "corral_helper"
    subprocess.run(
        [os.environ.get("CC", "cc"), "-std=c11", "-D_GNU_SOURCE", "-O1", "-o", str(out),
         str(ROOT / "tests" / "helper" / "corral_helper.c")],
        check=True,
    )
    return str(out)


@pytest.fixture
def make_stack() -> Iterator[Callable[..., corral.Stack]]:
    stacks: list[corral.Stack] = []

    def make(name: str | None = "test") -> corral.Stack:
        stack = corral.Stack(name=name)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.close(timeout=60)


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def lock_held(path: str | os.PathLike[str]) -> bool:
    """True while some process holds an flock on `path`: the `hop` step's escapees share one,
    so it is free again only when the last of them is dead (a scan of /proc cannot tell:
    each of them lives microseconds)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def kill_hopper(group: int, lock: str | os.PathLike[str]) -> None:
    """After a failure: the hopping escapees of a test do not outlive it. Their group is
    killed by number only while they hold the lock, so the number is still theirs."""
    deadline = time.monotonic() + 20
    while lock_held(lock) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        time.sleep(0.01)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Waits for an event with a generous deadline (tests run on loaded 2-core machines)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def python_script(code: str) -> list[str]:
    return [sys.executable, "-c", code]
