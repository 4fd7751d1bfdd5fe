"""pytest integration: one stack per test run, shared by every xdist worker.

Name a config file with the ini option ``corral_stack = corral.toml`` (or
``--corral-stack PATH``) and use the session fixture ``corral_stack``::

    def test_api(corral_stack):
        port = corral_stack["api"].ports["http"]

Without xdist the test process owns the stack. Under xdist the first worker to get there
starts it and the others connect to it through its control API (`corral.connect`, to the
socket named in a state file written by the owner), so every worker has the same full
`Service` API: ports, logs, wait_for_log, restart, signal... Each worker holds a shared
lock on the run's directory while it runs; the owner, at its session end, waits for an
exclusive lock (every other worker done) before it stops the stack, so nobody loses a
service under a running test.

When a test fails, the report gets a "corral logs" section, from whichever worker runs it:
each service's current state and the lines it printed during that test (or, when it
printed none, its last lines before it).

The run's directory is <runtime dir>/pytest/<run>, created private like the runtime
directory itself (see docs/config-reference.md); its files are never opened through a
symlink, so nobody else on the machine can plant or redirect them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import CorralError, StartError

if TYPE_CHECKING:
    from .client import Client
    from .stack import Stack
# The engine, the client and the Stack are imported where they are used: pytest loads this
# plugin in every session of an environment where corral is installed, most of which never
# touch a stack.

__all__ = ["SharedService", "SharedStack"]

_LOG_LINES = 20
_KEY = pytest.StashKey["_Session | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("corral")
    group.addoption("--corral-stack", dest="corral_stack", default=None,
                    help="corral config file for the `corral_stack` fixture")
    parser.addini("corral_stack", "corral config file for the `corral_stack` fixture", default="")


class SharedService:
    """A service of a stack owned by another xdist worker whose stack serves no control API
    (`api = false`): its ports and the state it had at start. With the API (the default),
    other workers get a `corral.Client` instead, with the full Service API."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.name: str = row["name"]
        self.ports: dict[str, int] = dict(row["ports"])
        self.pid: int | None = row["pid"]
        self.state: str = row["state"]

    def logs(self, tail: int | None = None) -> list[str]:
        raise CorralError(f"service '{self.name}': logs are kept by the xdist worker that owns the stack")

    def __repr__(self) -> str:
        return f"<SharedService {self.name} {self.state} ports={self.ports}>"


class SharedStack:
    """Read-only view of a stack owned by another worker (ports, states at start)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows
        self._services = {r["name"]: SharedService(r) for r in rows}

    def __getitem__(self, name: str) -> SharedService:
        return self._services[name]

    def __iter__(self) -> Iterator[SharedService]:
        return iter(self._services.values())

    def status(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows]


class _Session:
    """Owns or attaches to the run's stack; created lazily by the first test that asks."""

    def __init__(self, config_file: Path) -> None:
        self.file = config_file
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        self.shared = run is not None
        self.run = run or f"solo-{os.getpid()}"
        self.dir: Path | None = None
        self.stack: Stack | None = None
        self.client: Client | None = None
        self.view: SharedStack | None = None
        self._users: int | None = None
        # Each service's log line count when the running test began: its lines from there
        # on are "the lines it printed during that test".
        self.marks: dict[str, int] | None = None

    def current(self) -> Stack | Client | SharedStack | None:
        return self.stack or self.client or self.view

    def get(self) -> Stack | Client | SharedStack:
        if (got := self.current()) is not None:
            return got
        # Private at each level (ours, 0700, not a symlink), or a CorralError naming the path.
        from . import _core

        base = _core.private_dir(os.path.join(_core.runtime_dir(), "pytest"))
        self.dir = Path(_core.private_dir(os.path.join(base, self.run)))
        self._users = _open(self.dir / "users.lock", os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._users, fcntl.LOCK_SH)
        state = self.dir / "state.json"
        elect = _open(self.dir / "start.lock", os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(elect, fcntl.LOCK_EX)  # one worker starts; the others wait for it here
            data = _read_json(state)
            if data is not None:
                if "error" in data:
                    raise StartError(data["service"], data["error"], data.get("log_tail", []))
                if data.get("socket"):
                    from .client import connect

                    self.client = connect(data["socket"])
                    return self.client
                self.view = SharedStack(data["status"])
                return self.view
            from .stack import Stack

            stack = Stack.load(self.file)
            try:
                stack.start()
            except StartError as exc:
                self._write(state, {"error": exc.reason, "service": exc.service, "log_tail": exc.log_tail})
                stack.close()
                raise
            self.stack = stack
            api = stack.api
            self._write(state, {"owner": os.getpid(), "status": stack.status(),
                                "socket": api["socket"] if api else None})
            return stack
        finally:
            os.close(elect)

    @staticmethod
    def _write(path: Path, data: dict[str, Any]) -> None:
        # A fresh file of our own (O_EXCL: never one planted in its place), then renamed over
        # the old one: readers never see half a file.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = _open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data))
        tmp.replace(path)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._users is None:
            return
        if self.stack is not None and self.shared:
            # Wait for every attached worker to finish before taking their services away.
            fcntl.flock(self._users, fcntl.LOCK_UN)
            fcntl.flock(self._users, fcntl.LOCK_EX)
        if self.stack is not None:
            self.stack.close()
            # Every other worker is done (we hold the lock exclusively): nothing reads the
            # run's directory any more.
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._users)
        self._users = None


def _open(path: Path, flags: int) -> int:
    """Opens a file of the run's directory, never through a symlink."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _read_json(path: Path) -> Any:
    """The state file's contents, or None when there is none yet."""
    try:
        fd = _open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as f:
        return json.load(f)


def _config_file(config: pytest.Config) -> Path | None:
    value = config.getoption("corral_stack") or config.getini("corral_stack")
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(config.rootpath) / path


def pytest_configure(config: pytest.Config) -> None:
    path = _config_file(config)
    config.stash[_KEY] = _Session(path) if path is not None else None


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_KEY, None)
    if session is not None:
        session.close()


@pytest.fixture(scope="session")
def corral_stack(request: pytest.FixtureRequest) -> Stack | Client | SharedStack:
    """The run's stack, started (once per run, across xdist workers) from the config file
    named by the `corral_stack` ini option or `--corral-stack`: the `Stack` in the worker
    that started it, a `corral.Client` of it in the others."""
    session = request.config.stash.get(_KEY, None)
    if session is None:
        raise pytest.UsageError("corral_stack: name a config file with the ini option "
                                "`corral_stack = path` or `--corral-stack PATH`")
    return session.get()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    session = item.config.stash.get(_KEY, None)
    if session is None:
        return
    got = session.stack or session.client
    session.marks = None
    if got is not None:
        with contextlib.suppress(CorralError):
            session.marks = {r["name"]: int(r["log_lines"]) for r in got.status()}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and call.when in ("setup", "call"):
        session = item.config.stash.get(_KEY, None)
        got = None if session is None else (session.stack or session.client)
        if session is not None and got is not None:
            try:
                report.sections.append(("corral logs", _log_section(got, session.marks)))
            except CorralError as exc:  # the stack is gone: say so rather than fail the report
                report.sections.append(("corral logs", f"(the stack cannot be read: {exc})"))
        elif session is not None and session.view is not None:
            states = "\n".join(f"{s.name}: {s.state} ports={s.ports}" for s in session.view)
            report.sections.append(("corral services (owned by another worker)", states))
    return report


def _log_section(stack: Stack | Client, marks: dict[str, int] | None) -> str:
    """Each service's current state, then the lines it printed since `marks` (the test's
    start; None: since the stack started, in this test's setup)."""
    parts = []
    for row in stack.status():
        name = row["name"]
        head = f"--- {name} ({row['state']}, pid {row['pid']}, restarts {row['restarts']}) ---"
        since = (marks or {}).get(name, 0)
        during = [text for _, _, text, seq in stack[name].log_records() if seq >= since]
        if during:
            lines = during[-_LOG_LINES * 5:]
            if len(during) > len(lines):
                lines.insert(0, f"[{len(during) - len(lines)} earlier lines of this test not shown]")
        else:
            lines = ["[no lines during this test; its last lines before it:]",
                     *stack[name].logs(tail=_LOG_LINES)]
        parts.append("\n".join([head, *lines]))
    return "\n".join(parts)
