"""The Python edge under ordinary misuse: daemon threads inside corral calls at interpreter
exit, Ctrl+C during events(), dropped stacks, many async waits, concurrent first starts,
and a second running stack with the same name."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import weakref
from pathlib import Path

import pytest

import corral
from conftest import alive, wait_until
from corral import _engine

# Waits until every listed function is the innermost Python frame of some other thread,
# i.e. each of those threads has reached (and is blocked in) its corral call.
WAIT_FOR_FRAMES = """
def wait_for_frames(*names, timeout=60):
    import collections, sys, threading, time
    deadline = time.monotonic() + timeout
    while True:
        me = threading.get_ident()
        seen = collections.Counter(f.f_code.co_name for t, f in sys._current_frames().items() if t != me)
        if all(seen[n] >= names.count(n) for n in names):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"threads not blocked in {names}: {seen}")
        time.sleep(0.01)
"""


def _processes_with(marker: str) -> list[int]:
    """Pids of the live processes whose command line contains `marker`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read() and alive(int(entry)):
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


def _run_script(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WAIT_FOR_FRAMES + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_daemon_threads_blocked_in_corral_calls_at_exit(helper: str):
    # Each kind of call blocks in a daemon thread while the main thread returns: the process
    # must exit 0 (not abort with 134), and nothing may be left running.
    marker = f"exit-{uuid.uuid4().hex}"
    out = _run_script("""
        import asyncio, sys, threading
        import corral
        helper, marker = sys.argv[1], sys.argv[2]
        # One stack per kind of call, so that no call ends another (a stop's state events
        # would end the events() wait).
        up, never, quiet, stubborn = (corral.Stack() for _ in range(4))
        up.add("up", [helper, "print", "up", "print", marker, "pause"], ready=corral.LogCheck("^up$"))
        never.add("never", [helper, "print", marker, "pause"], ready=corral.LogCheck("never"))
        quiet.add("quiet", [helper, "write-file", "/dev/null", marker, "pause"])  # prints nothing
        stubborn.add("stubborn", [helper, "ignore", "TERM", "print", "up", "print", marker, "pause"],
                     ready=corral.LogCheck("^up$"), stop_timeout=10)
        for stack in (up, quiet, stubborn):
            stack.start(timeout=60)
        quiet.events(0)
        calls = [
            lambda: up["up"].wait_for_log("never"),
            lambda: never.start(),
            lambda: quiet.events(600),
            lambda: stubborn.stop(),
            lambda: up.wait("up", "stopped"),
            lambda: asyncio.run(up["up"].async_wait_for_log("nor this")),
        ]
        for call in calls:
            threading.Thread(target=call, daemon=True).start()
        wait_for_frames("wait_for_log", "wait_for_log", "start", "events", "stop", "wait")
        print("exiting", flush=True)
    """, helper, marker)
    assert "exiting" in out.stdout, out.stderr
    assert out.returncode == 0, out.stderr
    wait_until(lambda: not _processes_with(marker), timeout=30, what="services to be gone")


def test_events_wait_is_interrupted_by_ctrl_c(helper: str):
    out = _run_script("""
        import os, signal, sys, threading, time
        import corral
        stack = corral.Stack()
        stack.add("quiet", [sys.argv[1], "pause"])
        stack.events(0)
        stack.start(timeout=60)
        while stack.events(0):
            pass

        def interrupt():
            wait_for_frames("events")
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        began = time.monotonic()
        try:
            stack.events(600)
            print("returned", flush=True)
        except KeyboardInterrupt:
            print(f"interrupted after {time.monotonic() - began:.1f}s", flush=True)
        stack.close()
    """, helper, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "interrupted" in out.stdout, out.stdout + out.stderr
    # The wait was interrupted, not finished: 600 s did not pass.
    assert float(out.stdout.split("after ")[1].rstrip("s\n")) < 300


def test_dropped_stack_closes_in_the_background(helper: str):
    stack = corral.Stack()
    service = stack.add("stubborn", [helper, "ignore", "TERM", "print", "up", "pause"],
                        ready=corral.LogCheck("^up$"), stop_timeout=5)
    stack.start(timeout=60)
    pid = service.pid
    assert pid is not None and alive(pid)
    ref = weakref.ref(stack)
    gc.disable()  # no cycle to collect: dropping the last reference must be enough
    try:
        began = time.monotonic()
        del stack
        elapsed = time.monotonic() - began
        assert ref() is None, "the Stack is kept alive (a reference cycle?)"
    finally:
        gc.enable()
    # The stop (SIGTERM ignored: 5 s, then SIGKILL) runs in the engine, not in `del`.
    assert elapsed < 2.5
    wait_until(lambda: not alive(pid), timeout=5 + 30, what="the dropped stack's service to stop")
    # The service kept its last state and lines; control calls say the stack is gone.
    wait_until(lambda: service.state in ("stopped", "exited", "failed"), timeout=30, what="a final state")
    assert "up" in service.logs()
    with pytest.raises(corral.StackClosed):
        service.start()


def test_dropped_stack_is_stopped_at_interpreter_exit(helper: str):
    marker = f"drop-{uuid.uuid4().hex}"
    out = _run_script("""
        import sys
        import corral
        stack = corral.Stack()
        stack.add("stubborn", [sys.argv[1], "ignore", "TERM", "print", sys.argv[2], "pause"],
                  ready=corral.LogCheck(sys.argv[2]), stop_timeout=2)
        stack.start(timeout=60)
        print("pid", stack["stubborn"].pid, flush=True)
        del stack
    """, helper, marker)
    assert out.returncode == 0, out.stderr
    assert not _processes_with(marker)


def test_async_waits_do_not_occupy_the_default_executor(make_stack, helper: str):
    stack = make_stack()
    service = stack.add("quiet", [helper, "trap", "HUP", "go", "pause"])
    stack.start(timeout=60)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        waits = [asyncio.ensure_future(service.async_wait_for_log("^go$", timeout=120))
                 for _ in range(20)]
        await asyncio.sleep(0)  # let each wait begin
        # The default executor has min(32, cpus + 4) workers: on this machine fewer than 20.
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: 1), timeout=60) == 1
        assert not any(w.done() for w in waits)
        assert service.signal("HUP")  # prints "go": every wait ends
        assert await asyncio.wait_for(asyncio.gather(*waits), timeout=60) == ["go"] * 20

    asyncio.run(main())


def _double_start_stack(helper: str, marker: str) -> corral.Stack:
    stack = corral.Stack()
    for name in ("a", "b"):
        stack.add(name, [helper, "print", f"{marker}-{name}", "pause"],
                  ready=corral.LogCheck(f"{marker}-{name}"))
    return stack


def _one_process_each(marker: str) -> None:
    for name in ("a", "b"):
        assert len(_processes_with(f"{marker}-{name}")) == 1, f"service {name} runs more than once"


def test_two_threads_starting_one_stack_share_it(helper: str):
    marker = f"twice-{uuid.uuid4().hex}"
    stack = _double_start_stack(helper, marker)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait(timeout=30)
            stack.start(timeout=60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors
        _one_process_each(marker)
    finally:
        stack.close(timeout=60)
    assert not _processes_with(marker)


def test_gathered_async_starts_share_one_stack(helper: str):
    marker = f"gather-{uuid.uuid4().hex}"
    stack = _double_start_stack(helper, marker)

    async def main() -> None:
        await asyncio.gather(stack.async_start(timeout=60), stack.async_start(timeout=60))

    try:
        asyncio.run(main())
        _one_process_each(marker)
    finally:
        stack.close(timeout=60)
    assert not _processes_with(marker)


def _named(helper: str, name: str | None) -> corral.Stack:
    stack = corral.Stack(name=name)
    stack.add("svc", [helper, "print", "up", "pause"], ready=corral.LogCheck("^up$"))
    return stack


def test_second_running_stack_with_one_name_is_refused(helper: str):
    name = f"dup-{uuid.uuid4().hex[:8]}"
    first, second = _named(helper, name), _named(helper, name)
    try:
        first.start(timeout=60)
        with pytest.raises(corral.CorralError, match=f"'{name}' is already running"):
            second.start(timeout=60)
        assert first["svc"].state == "ready"
        first.close(timeout=60)
        second.start(timeout=60)  # the name is free again
        # Stacks without a name are not affected.
        with _named(helper, None) as a, _named(helper, None) as b:
            assert a["svc"].state == b["svc"].state == "ready"
    finally:
        first.close(timeout=60)
        second.close(timeout=60)


def test_second_running_stack_with_one_name_replaces_in_ipython(helper: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_engine, "_replace_namesake", lambda: True)
    name = f"dup-{uuid.uuid4().hex[:8]}"
    first, second = _named(helper, name), _named(helper, name)
    try:
        first.start(timeout=60)
        pid = first["svc"].pid
        assert pid is not None
        second.start(timeout=60)
        assert not alive(pid)
        assert first["svc"].state == "stopped"
        assert second["svc"].state == "ready"
    finally:
        first.close(timeout=60)
        second.close(timeout=60)


def test_rerun_notebook_cell_replaces_the_stack(helper: str, tmp_path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    marker = f"nb-{uuid.uuid4().hex}"
    cell = f"""
import corral
stack = corral.Stack(name="dev")
stack.add("svc", [{helper!r}, "print", {marker!r}, "pause"], ready=corral.LogCheck({marker!r}))
stack.start(timeout=60)
stack
"""
    count = f"""
import os
def count():
    n = 0
    for e in os.listdir("/proc"):
        try:
            with open(f"/proc/{{e}}/cmdline", "rb") as f:
                n += {marker!r}.encode() in f.read()
        except OSError:
            pass
    return n
print(count())
"""
    nb = nbformat.v4.new_notebook()
    # The same cell run twice, as a user re-running it would; its value (the stack, shown
    # as a table) stays referenced by the kernel's Out, so only the name rule stops it.
    nb.cells = [nbformat.v4.new_code_cell(cell), nbformat.v4.new_code_cell(cell),
                nbformat.v4.new_code_cell(count), nbformat.v4.new_code_cell("stack.close()")]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    assert nb.cells[2].outputs[-1]["text"].strip() == "1"
    assert not _processes_with(marker)

