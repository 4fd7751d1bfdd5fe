"""A randomized stateful test of the service machine (issue 6).

Hypothesis drives random sequences of requests (start, stop, restart, close), SIGKILLs and
other signals, the services' own crashes and readiness deadlines, one call at a time or two
at once from two threads, against a small stack of real processes (the helper program), and
checks after every step what must always hold:

- every call returns within its deadline (a Timeout fails the test);
- no child of this process is left a zombie;
- no orphan: every process carrying the stack's marker (CORRAL_STACK in its environment)
  is in the process group of a running service of an open stack;
- states agree with processes: a starting/ready/unhealthy/stopping service has a live pid,
  any other has none, and no earlier process of a service is still alive;
- once a stop or a close has returned, nothing of what it stopped is left running.

The engine finishes some work after a call returns (an exit is noticed through a pidfd, a
group member dies a little after its leader), so the step checks wait for the first
consistent snapshot, with a generous deadline; the checks right after a stop or a close do
not wait. bench/stateful.py runs the same machine for longer:
CORRAL_STATEFUL_EXAMPLES and CORRAL_STATEFUL_STEPS set its size.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import corral

CALL_TIMEOUT = 60.0  # what every call is given: generous for a loaded 2-core machine
SETTLE = 30.0  # how long the engine may take to catch up with what a step did
RUNNING = frozenset({"starting", "ready", "unhealthy", "stopping"})
# Where a stop leaves a service: settled, or still pending if the stack never started.
DOWN = frozenset({"stopped", "exited", "failed", "pending"})
NAMES = ("db", "api", "flaky", "never")
DEPENDENCIES = {"db": (), "api": ("db",), "flaky": ("db",), "never": ()}
# For debugging a failure: CORRAL_STATEFUL_SHRINK=0 reports the first failing sequence as
# it happened (shrinking replays it, and what an earlier example left behind can mislead).
SHRINK = os.environ.get("CORRAL_STATEFUL_SHRINK", "1") != "0"
# CORRAL_STATEFUL_TRACE=1 prints every call's outcome and every failed check to stderr as it
# happens (with -s), which tells more than the replayed example when a failure is timing.
TRACE = os.environ.get("CORRAL_STATEFUL_TRACE", "0") != "0"
EXAMPLES = int(os.environ.get("CORRAL_STATEFUL_EXAMPLES", "10"))
STEPS = int(os.environ.get("CORRAL_STATEFUL_STEPS", "12"))

# -- /proc -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    """One process as /proc shows it. (pid, start time) names it even if the pid is
    recycled (pid_max may be as low as 32768 on a busy machine)."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int
    start: int

    @property
    def live(self) -> bool:
        return self.state not in "ZX"

    @property
    def escaped(self) -> bool:
        """It left its service's session (setsid) and is no child of ours: what the
        helper's `escape` step makes. A service's own leader is a session leader too,
        but our child."""
        return self.sid == self.pid and self.ppid != os.getpid()


def _proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return Proc(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def _marker(pid: int) -> tuple[str, str] | None:
    """(CORRAL_STACK, CORRAL_SERVICE) from the environment of `pid`, if it has them."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:  # gone, or another user's
        return None
    found = {}
    for item in data.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in (b"CORRAL_STACK", b"CORRAL_SERVICE"):
            found[key] = value.decode(errors="replace")
    if b"CORRAL_STACK" not in found:
        return None
    return found[b"CORRAL_STACK"], found.get(b"CORRAL_SERVICE", "")


@dataclass(frozen=True)
class Marked:
    proc: Proc
    stack: str  # the stack's id: "<name>-<owner pid>-<n>"
    service: str


def _marked(prefix: str) -> list[Marked]:
    """Every live process whose CORRAL_STACK starts with `prefix`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        mark = _marker(int(entry))
        if mark is None or not mark[0].startswith(prefix):
            continue
        proc = _proc(int(entry))
        if proc is not None and proc.live:
            out.append(Marked(proc, *mark))
    return out


def _pending(pid: int) -> set[int]:
    """The signals pending for `pid` (its threads' and the process's)."""
    mask = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")):
                    mask |= int(line.split()[1], 16)
    except OSError:
        return set()
    return {n + 1 for n in range(64) if mask >> n & 1}


def _describe(pid: int) -> str:
    """What a failure message says about a process: its state, parent, group and command."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return f"pid {pid} (gone)"
    return f"pid {pid} state {fields[0]} ppid {fields[1]} pgid {fields[2]}: {command}"


def _zombie_children() -> set[tuple[int, int]]:
    """(pid, start time) of every child of this process that is a zombie."""
    out = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for child in children:
            proc = _proc(int(child))
            if proc is not None and proc.state == "Z":
                out.add((proc.pid, proc.start))
    return out


# -- calls ---------------------------------------------------------------------------------------


def _concurrently(*calls: Callable[[], object]) -> list[BaseException | None]:
    """Runs the calls at once, one thread each; returns what each raised. A call that does
    not return within its deadline fails the test (a hang is what this looks for)."""
    barrier = threading.Barrier(len(calls))
    raised: list[BaseException | None] = [None] * len(calls)

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait(CALL_TIMEOUT)
            call()
        except BaseException as e:  # handed to the test thread
            raised[i] = e

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    end = time.monotonic() + CALL_TIMEOUT + 30
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    stuck = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not stuck, f"calls {stuck} did not return within {CALL_TIMEOUT + 30}s"
    return raised


def _trace(message: str) -> None:
    if TRACE:
        print(f"stateful {time.monotonic():.3f}: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    """What a sequence draws once: how its services behave (see StackMachine)."""

    life: float = 0.5  # how long flaky runs before it exits
    flaky_policy: str = "on-failure"
    flaky_limit: int | None = None
    never_timeout: float = 0.1  # never's readiness deadline
    never_policy: str = "no"
    first: tuple[str, ...] = ()  # what the sequence starts before its first step
    db_policy: str = "on-failure"  # with "no", an unhealthy db stays so (until SIGCONT)


def _judge(what: str, exc: BaseException | None, allowed: tuple[type[BaseException], ...] = ()) -> None:
    """Re-raises `exc` unless it is one of `allowed`; a Timeout is never allowed."""
    _trace(f"{what}: {exc!r}")
    if exc is None:
        return
    if isinstance(exc, corral.Timeout):
        raise AssertionError(f"{what}: timed out ({exc})") from exc
    if not isinstance(exc, allowed):
        raise exc


def _closure(names: Iterable[str]) -> set[str]:
    """The services a start of `names` starts (all of them when none are named)."""
    out: set[str] = set()
    todo = list(names) or list(NAMES)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(DEPENDENCIES[n])
    return out


# -- the machine ---------------------------------------------------------------------------------

names_strategy = st.lists(st.sampled_from(NAMES), max_size=3)  # empty: all; repeats on purpose
op_strategy = st.tuples(st.sampled_from(["start", "stop", "restart", "kill"]), names_strategy)
# A known defect: a process that escaped its service's group outlives the run that made it
# when that run ends by itself (test_an_escaped_process_goes_with_the_run_that_made_it).
# Until that test passes, the step checks let such escapees be; stops and close still
# must sweep them. Set this to False once it passes.
ESCAPEES_OUTLIVE_THEIR_RUN = False
SIGNALS = [signal.SIGTERM, signal.SIGSTOP, signal.SIGCONT, signal.SIGUSR1, signal.SIGKILL]
# (service, state) -> how many step checks saw it, for the trace's summary.
SEEN_STATES: Counter[tuple[str, str]] = Counter()
DEADLY = {signal.SIGKILL, signal.SIGUSR1, signal.SIGTERM}  # the helper traps none of them


class StackMachine(RuleBasedStateMachine):
    """Services (the helper program, see tests/helper/corral_helper.c):
    db     an HTTP server with a liveness check (a SIGSTOP makes it unhealthy, and the
           policy, when it has one, restarts it); it forks a grandchild into its group first, and one
           that escapes it (double fork and setsid).
    api    depends on db being ready; ignores SIGTERM, so a stop ends in SIGKILL after
           a short stop_timeout.
    flaky  depends on db being started; exits by itself after a short random time, under
           a random restart policy (and dies of SIGUSR1 or SIGTERM like the others).
    never  its readiness never comes: a start of it ends at its short start_timeout.
    """

    helper = ""  # set by the test
    serial = 0  # stacks made so far, for unique names

    def __init__(self) -> None:
        super().__init__()
        self.stack: corral.Stack | None = None
        self.prefix = ""  # the marker prefix of the open stack's processes
        # Every process each service has been seen with: none but the current may live.
        self.seen: dict[str, set[tuple[int, int]]] = {n: set() for n in NAMES}
        self.restarts = dict.fromkeys(NAMES, 0)  # a service's count never goes down
        self.baseline_zombies = _zombie_children()  # not ours: left by whatever ran before
        self.all_prefix = f"stateful-{os.getpid()}-"
        self.config = Config()

    # -- the stack -------------------------------------------------------------------------------
    @initialize(
        life=st.sampled_from([0.05, 0.2, 0.5, 1.5]),
        flaky_policy=st.sampled_from(["on-failure", "always"]),
        flaky_limit=st.sampled_from([None, 0, 2]),
        never_timeout=st.sampled_from([0.1, 0.3]),
        never_policy=st.sampled_from(["no", "always"]),
        first=st.sampled_from([(), ("db",), ("api", "flaky")]),
        db_policy=st.sampled_from(["on-failure", "no"]),
    )
    def open_stack(self, life: float, flaky_policy: str, flaky_limit: int | None, never_timeout: float,
                   never_policy: str, first: tuple[str, ...] = (), db_policy: str = "on-failure") -> None:
        self.config = Config(life, flaky_policy, flaky_limit, never_timeout, never_policy, first, db_policy)
        self._open()

    def _open(self) -> None:
        StackMachine.serial += 1
        # The name goes into the marker (CORRAL_STACK=<name>-<owner pid>-<n>): unique per
        # stack, so a process left by an earlier stack is told apart from the open one's.
        name = f"stateful-{os.getpid()}-{StackMachine.serial}"
        self.prefix = f"{name}-"
        self.seen = {n: set() for n in NAMES}
        self.restarts = dict.fromkeys(NAMES, 0)
        c = self.config
        h = self.helper
        stack = corral.Stack(name=name)
        _trace(f"open {name} {self.config}")
        stack.add("db", [h, "pid", "escape", "1000", "grandchild", "1000", "http", "{{port.http}}"],
                  ports=["http"],
                  ready=corral.HttpCheck("/", port="http", start_timeout=CALL_TIMEOUT),
                  health=corral.HttpCheck("/", port="http", interval=0.1, timeout=0.5, retries=1),
                  restart=corral.Restart(c.db_policy, backoff=0.05, max_backoff=0.2))
        stack.add("api", [h, "pid", "ignore", "TERM", "print", "up", "pause"], depends_on={"db": "ready"},
                  ready=corral.LogCheck("^up$", start_timeout=CALL_TIMEOUT), stop_timeout=0.3)
        stack.add("flaky", [h, "pid", "sleep", str(c.life), "exit", "3"], depends_on={"db": "started"},
                  restart=corral.Restart(c.flaky_policy, backoff=0.05, max_backoff=0.2,
                                         max_restarts=c.flaky_limit))
        stack.add("never", [h, "pid", "pause"], restart=c.never_policy,
                  ready=corral.LogCheck("^never printed$", start_timeout=c.never_timeout))
        self.stack = stack
        # Most sequences begin with some services up, so that signals and kills have
        # something to hit (and a fresh, never started stack is tried too).
        if c.first:
            (exc,) = _concurrently(self._call("start", list(c.first)))
            _judge(f"first start{c.first}", exc, (corral.StartError,))

    def _close(self, calls: tuple[Callable[[], object], ...] = ()) -> list[BaseException | None]:
        assert self.stack is not None
        stack = self.stack
        raised = _concurrently(lambda: stack.close(timeout=CALL_TIMEOUT), *calls)
        _judge("close", raised[0])
        # Nothing waits here: when close returns, everything it stopped must be gone.
        left = _marked(self.prefix)
        assert not left, f"running after close: {[(m.service, _describe(m.proc.pid)) for m in left]}"
        self._assert_seen_dead(NAMES)
        zombies = _zombie_children() - self.baseline_zombies
        assert not zombies, f"zombie children after close: {zombies}"
        for row in stack.status():
            assert row["state"] not in RUNNING and row["pid"] is None, f"after close: {row}"
        self.stack = None
        return raised[1:]

    def teardown(self) -> None:
        if self.stack is not None:
            self._close()

    # -- requests --------------------------------------------------------------------------------
    def _call(self, op: str, names: list[str]) -> Callable[[], object]:
        stack = self.stack
        assert stack is not None
        if op == "start":
            return lambda: stack.start(*names, timeout=CALL_TIMEOUT)
        if op == "stop":
            return lambda: stack.stop(*names, timeout=CALL_TIMEOUT)
        if op == "restart":
            return lambda: stack.restart(names[0] if names else "db", timeout=CALL_TIMEOUT)
        return lambda: stack.kill(*names)

    @rule(names=names_strategy)
    def start(self, names: list[str]) -> None:
        (exc,) = _concurrently(self._call("start", names))
        _judge(f"start{tuple(names)}", exc, (corral.StartError,))
        closure = _closure(names)
        if "never" in closure:
            # Its readiness cannot come: the start must fail at its deadline.
            assert isinstance(exc, corral.StartError), "a start of 'never' succeeded"
        elif exc is None and "api" in closure:
            # Nothing else acts on api (it never exits by itself): ready is where it stays.
            assert self.stack is not None
            assert self.stack["api"].state == "ready", self.stack.status()

    @rule(names=names_strategy)
    def stop(self, names: list[str]) -> None:
        (exc,) = _concurrently(self._call("stop", names))
        _judge(f"stop{tuple(names)}", exc)
        self._assert_stopped(names or NAMES)

    @rule(name=st.sampled_from(NAMES))
    def restart(self, name: str) -> None:
        (exc,) = _concurrently(self._call("restart", [name]))
        _judge(f"restart({name})", exc, (corral.StartError,))
        if name == "never":
            assert isinstance(exc, corral.StartError), "a restart of 'never' succeeded"

    @rule(names=names_strategy)
    def kill(self, names: list[str]) -> None:
        assert self.stack is not None
        before = {n: self.stack[n].pid for n in set(names or NAMES)}
        self.stack.kill(*names)
        _trace(f"kill{tuple(names)}")
        for n, pid in before.items():
            if pid is not None:
                self._wait_pid_changed(n, pid)

    @rule(name=st.sampled_from(NAMES), sig=st.sampled_from(SIGNALS))
    def send_signal(self, name: str, sig: signal.Signals) -> None:
        assert self.stack is not None
        svc = self.stack[name]
        pid = svc.pid
        proc = None if pid is None else _proc(pid)
        if pid is None or proc is None:
            return
        stopped = proc.state == "T"  # a stopped process keeps TERM and USR1 pending
        deadly = DEADLY - ({signal.SIGTERM} if name == "api" else set())  # api ignores TERM
        pending = _pending(pid) & deadly
        sent = svc.signal(sig)
        _trace(f"signal {name} {sig!r}: {sent}")
        if not sent:
            return
        woken = stopped and sig == signal.SIGCONT and pending
        if sig == signal.SIGKILL or (not stopped and sig in deadly) or woken:
            # It dies: let the engine see that before the next step, so that the step's
            # expectations are about a known state.
            self._wait_pid_changed(name, pid)

    @rule()
    def freeze_db(self) -> None:
        # A SIGSTOPped server fails its liveness check: db turns unhealthy, and under a
        # restart policy is stopped and started again. (send_signal may do the same, but
        # rarely; this makes every sequence likely to go through `unhealthy`.)
        assert self.stack is not None
        svc = self.stack["db"]
        pid = svc.pid
        if pid is None or svc.state != "ready" or not svc.signal(signal.SIGSTOP):
            return
        _trace("freeze db")
        end = time.monotonic() + SETTLE
        while svc.state == "ready" and svc.pid == pid:
            assert time.monotonic() < end, f"a frozen db stayed ready for {SETTLE}s: {svc.status()}"
            time.sleep(0.01)  # polling for the liveness check to fail, bounded by SETTLE

    @rule(first=op_strategy, second=op_strategy)
    def concurrently(self, first: tuple[str, list[str]], second: tuple[str, list[str]]) -> None:
        # Two requests at once, e.g. a start and a stop of the same service: each completes
        # (with its result, or superseded), whatever the interleaving.
        raised = _concurrently(self._call(*first), self._call(*second))
        for (op, names), exc in zip((first, second), raised, strict=True):
            _judge(f"{op}{tuple(names)} (concurrent)", exc, (corral.StartError,))

    @rule()
    def close(self) -> None:
        self._close()
        self._open()

    @rule(other=op_strategy)
    def close_during(self, other: tuple[str, list[str]]) -> None:
        # A request racing a close completes too: done, failed, or "the stack is closed".
        (exc,) = self._close((self._call(*other),))
        _judge(f"{other[0]}{tuple(other[1])} during close", exc, (corral.CorralError,))
        self._open()

    # -- what must hold --------------------------------------------------------------------------
    @invariant()
    def consistent(self) -> None:
        end = time.monotonic() + SETTLE
        while True:
            problem = self._inconsistency()
            if problem is None:
                assert self.stack is not None
                for row in self.stack.status():
                    SEEN_STATES[row["name"], row["state"]] += 1
                return
            if time.monotonic() > end:
                _trace(f"FAILED: {problem}")
                raise AssertionError(f"still inconsistent after {SETTLE}s: {problem}")
            time.sleep(0.02)  # polling for the engine to catch up, bounded by SETTLE

    def _inconsistency(self) -> str | None:
        """What is wrong right now, or None. Looks at the processes between two status
        snapshots and gives up (to be asked again) when anything moved meanwhile."""
        assert self.stack is not None
        full = {r["name"]: r for r in self.stack.status()}
        rows = {name: (r["state"], r["pid"]) for name, r in full.items()}
        marked = _marked(self.all_prefix)
        zombies = _zombie_children() - self.baseline_zombies
        if self._rows() != rows:
            return "the states moved while looking"
        for name, r in full.items():
            if r["restarts"] < self.restarts[name]:
                return f"{name}'s restart count went down from {self.restarts[name]}: {r}"
            self.restarts[name] = r["restarts"]
            if r["state"] == "exited" and r["exit_code"] is None:
                return f"{name} exited without an exit code: {r}"
        for name, (state, pid) in rows.items():
            if state in RUNNING:
                proc = None if pid is None else _proc(pid)
                if pid is None or proc is None or not proc.live:
                    return f"{name} is {state} but its process {pid} is not alive"
                mark = _marker(pid)
                if mark is None or not mark[0].startswith(self.prefix) or mark[1] != name:
                    return f"{name} is {state} with pid {pid}, which is not its process"
                self.seen[name].add((pid, proc.start))
            elif pid is not None:
                return f"{name} is {state} but has pid {pid}"
        if zombies:
            return f"zombie children: {sorted(zombies)}"
        for m in marked:
            if not m.stack.startswith(self.prefix):
                return f"pid {m.proc.pid} of the closed stack {m.stack} still runs: {_describe(m.proc.pid)}"
            state, pid = rows.get(m.service, ("?", None))
            if state in RUNNING and m.proc.pgid == pid:
                continue  # in its service's process group
            if m.proc.escaped and (state in RUNNING or ESCAPEES_OUTLIVE_THEIR_RUN):
                continue  # escaped the group of a run (of this service) that is still going
            return (f"orphan: pid {m.proc.pid} of {m.service} (group {m.proc.pgid}) while {m.service} is "
                    f"{state} (pid {pid}): {_describe(m.proc.pid)}")
        for name, (_, pid) in rows.items():
            for old, start in self.seen[name]:
                proc = _proc(old)
                if old != pid and proc is not None and proc.start == start and proc.live:
                    return f"an earlier process of {name}, pid {old}, is still alive"
        return None

    def _rows(self) -> dict[str, tuple[str, int | None]]:
        assert self.stack is not None
        return {r["name"]: (r["state"], r["pid"]) for r in self.stack.status()}

    def _assert_stopped(self, names: Iterable[str]) -> None:
        # Right after the stop returned: no waiting, nothing of theirs may be left.
        rows = self._rows()
        for name in set(names):
            state, pid = rows[name]
            assert state in DOWN and pid is None, f"{name} is {state} (pid {pid}) after its stop returned"
        left = [m for m in _marked(self.prefix) if m.service in set(names)]
        left_now = [(m.service, _describe(m.proc.pid)) for m in left]
        assert not left, f"left after their stop returned: {left_now}"
        self._assert_seen_dead(names)

    def _assert_seen_dead(self, names: Iterable[str]) -> None:
        for name in set(names):
            for pid, start in self.seen[name]:
                proc = _proc(pid)
                assert proc is None or proc.start != start or not proc.live, f"{name}'s pid {pid} is alive"

    def _wait_pid_changed(self, name: str, pid: int) -> None:
        assert self.stack is not None
        svc = self.stack[name]
        end = time.monotonic() + SETTLE
        while svc.pid == pid:
            assert time.monotonic() < end, f"{name}: the death of pid {pid} went unnoticed for {SETTLE}s"
            time.sleep(0.01)  # polling for the engine to notice the exit, bounded by SETTLE


def test_random_sequences(helper: str) -> None:
    StackMachine.helper = helper
    SEEN_STATES.clear()
    run_state_machine_as_test(
        StackMachine,
        # Hypothesis tries many one-step sequences otherwise, each a stack for nothing.
        _min_steps=min(STEPS, 5),
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), print_blob=True,
                          phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate]),
    )
    # What the sequences reached, to see that the machine is exercised (with --trace).
    for name in NAMES:
        seen = sorted((state, n) for (svc, state), n in SEEN_STATES.items() if svc == name)
        _trace(f"{name} seen in: " + ", ".join(f"{state} {n}" for state, n in seen))


def test_the_checks_can_fail(helper: str) -> None:
    # The step checks must see what they look for: a process carrying the open stack's
    # marker outside any service is an orphan, an unreaped child a zombie.
    StackMachine.helper = helper
    machine = StackMachine()
    machine.open_stack(life=0.5, flaky_policy="no", flaky_limit=None, never_timeout=0.1, never_policy="no")
    assert machine._inconsistency() is None
    env = {**os.environ, "CORRAL_STACK": f"{machine.prefix}1", "CORRAL_SERVICE": "db"}
    with subprocess.Popen([helper, "pause"], env=env) as p:
        try:
            assert "orphan" in str(machine._inconsistency())
        finally:
            p.kill()
            p.wait()
    with subprocess.Popen([helper, "exit", "0"]) as p:
        end = time.monotonic() + SETTLE
        while (proc := _proc(p.pid)) is None or proc.state != "Z":
            assert time.monotonic() < end, "the child did not exit"
            time.sleep(0.01)  # polling for its exit, bounded by SETTLE
        assert "zombie" in str(machine._inconsistency())
    assert machine._inconsistency() is None  # Popen's exit reaped it
    machine.teardown()


def _start_twice(helper: str, attempt: int) -> tuple[int, int, int] | None:
    """Two first starts at once on a fresh stack: (attempt, processes while started, left
    after close) when that ran the service more than once, else None."""
    name = f"twice-{os.getpid()}-{attempt}"
    stack = corral.Stack(name=name)
    stack.add("a", [helper, "pause"])

    def start() -> None:
        stack.start(timeout=CALL_TIMEOUT)

    for exc in _concurrently(start, start):
        _judge("start", exc)
    # Right after an exec /proc/PID/environ may still read empty for a moment: wait for the
    # marker to show, then count.
    end = time.monotonic() + SETTLE
    while not (running := len(_marked(f"{name}-"))) and time.monotonic() < end:
        time.sleep(0.01)  # polling /proc, bounded by SETTLE
    stack.close(timeout=CALL_TIMEOUT)
    left = len(_marked(f"{name}-"))
    # The copy close() did not stop goes when the Stack is collected, before the test
    # asserts, so a failure leaves nothing behind.
    return (attempt, running, left) if running != 1 or left else None


def test_two_concurrent_first_starts_run_each_service_once(helper: str) -> None:
    # Found by test_random_sequences (two restarts at once on a fresh stack). The race is
    # in Stack._core(), so it is not certain on one try; ten tries make missing it
    # (a false pass) practically impossible while the defect is there.
    duplicated = []
    for attempt in range(10):
        found = _start_twice(helper, attempt)
        gc.collect()  # the copy close() did not stop goes with its Stack (which is in a cycle)
        if found:
            duplicated.append(found)
    assert not _marked(f"twice-{os.getpid()}-")
    assert not duplicated, f"(attempt, processes of 'a' while started, left after close): {duplicated}"


def test_an_escaped_process_goes_with_the_run_that_made_it(helper: str) -> None:
    stack = corral.Stack(name=f"escapee-{os.getpid()}")
    svc = stack.add("a", [helper, "escape", "300", "exit", "3"])
    try:
        with contextlib.suppress(corral.StartError):  # ready at exec, but its exit may come first
            stack.start(timeout=CALL_TIMEOUT)
        stack.wait("a", "exited", timeout=CALL_TIMEOUT)
        escaped = _proc(int(svc.wait_for_log("^escaped ", timeout=CALL_TIMEOUT).split()[1]))
        assert escaped is not None and escaped.escaped
        # The run is over (reaped, its group killed): what it left behind should go with it,
        # as its group members did. 5 s is far more than a sweep takes.
        end = time.monotonic() + 5
        while (now := _proc(escaped.pid)) is not None and now.start == escaped.start and now.live:
            assert time.monotonic() < end, f"the escapee of an ended run still runs: {_describe(escaped.pid)}"
            time.sleep(0.01)  # polling for it to die, bounded by `end`
    finally:
        stack.close(timeout=CALL_TIMEOUT)
    assert not _marked(f"escapee-{os.getpid()}-")


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
