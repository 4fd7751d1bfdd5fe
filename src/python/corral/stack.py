"""`Stack` and `Service`: the synchronous and asyncio facade over the native engine.

A `Stack` collects service specs (``add`` or ``Stack.load``); the first ``start`` hands them
to the engine, which owns the processes from then on. Every blocking call here waits with
the GIL released, in short slices so that Ctrl+C interrupts it; the ``async_*`` twins run
the same call in a thread of their own (never the event loop's default executor, which
long waits would starve), so an event loop is never blocked.

A `Service` keeps only a weak reference to its `Stack`: a stack nobody references any more
is closed (in the background, without blocking the thread that dropped it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal as _signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from . import _core, _engine, _metrics, _stack_api, _stack_metrics, _stack_spec
from ._dashboard import publish_runs
from ._events import EventBatch
from ._records import Records
from ._service_view import ServiceView
from .errors import ConfigError, CorralError, StackClosed, StartError, Timeout
from .resources import ResourceType, make_resource_type
from .spec import (
    LogFiles,
    ServiceSpec,
    StackConfig,
    load_file,
    log_files,
    make_service,
    stack_name,
    wait_timeout,
)
from .templates import Template, instantiate

if TYPE_CHECKING:
    from . import _api

__all__ = ["STATES", "Service", "Stack"]

STATES = (
    "pending",
    "starting",
    "ready",
    "unhealthy",
    "stopping",
    "stopped",
    "exited",
    "backoff",
    "failed",
)

_T = TypeVar("_T")
# The keyword options of Stack.add are those of spec.make_service.
# (read off its code object: `inspect` alone would cost a megabyte of imports)
_code = make_service.__code__
_OPTIONS = frozenset(
    name for name in _code.co_varnames[_code.co_argcount:_code.co_argcount + _code.co_kwonlyargcount]
    if not name.startswith("_"))
_LOG_TAIL = 20
_LIVE = frozenset(("starting", "ready", "unhealthy", "stopping", "backoff"))


class _Native:
    """The native stack handle, shared by a Stack and its Services. Services reach the Stack
    itself only through a weak reference, so there is no Stack <-> Service cycle: the last
    reference to a Stack going away closes it at once, not at some later garbage collection."""

    __slots__ = ("handle",)

    def __init__(self) -> None:
        self.handle: Any = None


class Service(ServiceView):
    """One service of a stack. Reading an attribute asks the engine, so it is always current."""

    def __init__(self, stack: Stack, spec: ServiceSpec) -> None:
        self._stack_ref = weakref.ref(stack)
        self._native = stack._native
        self.spec = spec
        self.name = spec.name

    @property
    def _stack(self) -> Stack:
        stack = self._stack_ref()
        if stack is None:
            raise StackClosed(f"service '{self.name}': its stack is closed (no reference to it was kept)")
        return stack

    # -- state ------------------------------------------------------------------------------
    def _row(self) -> dict[str, Any]:
        # The handle outlives a dropped Stack while a Service is kept: its last states and
        # lines can still be read.
        core = self._native.handle
        if core is None:
            return {"name": self.name, "state": "pending", "pid": None, "restarts": 0,
                    "exit_code": None, "ports": {}, "reason": ""}
        row: dict[str, Any] = core.service_status(self.name)
        return row

    def status(self) -> dict[str, Any]:
        return self._row()

    # -- logs -------------------------------------------------------------------------------
    def logs(self, tail: int | None = None, *, stream: str | None = None) -> list[str]:
        """The captured lines (stdout and stderr interleaved in arrival order), oldest first."""
        return [text for _, s, text, _ in self.log_records(tail) if stream is None or s == stream]

    def log_records(self, tail: int | None = None) -> list[tuple[float, str, str, int]]:
        """Lines as (wall time, "stdout" | "stderr", text, sequence number)."""
        core = self._native.handle
        if core is None:
            return []
        return core.logs(self.name, -1 if tail is None else int(tail))  # type: ignore[no-any-return]

    def wait_for_log(self, regex: str, timeout: float | None = None, *, new_only: bool = False) -> str:
        """Waits for a line matching `regex` (ECMAScript syntax, searched anywhere in the
        line) and returns it. Lines already captured count unless `new_only`. Raises
        CorralError if the pattern is too costly to match on a line."""
        core = self._stack._core()
        start = 0
        if new_only:
            records = core.logs(self.name, 1)
            start = records[-1][3] + 1 if records else 0
        outcome = core.wait_log(self.name, regex, start, wait_timeout(timeout))
        if outcome is None:
            raise Timeout(f"service '{self.name}': no log line matched {regex!r} within {timeout}s")
        ok, service, line = outcome
        if not ok:
            # Without a service the stack closed; with one, the engine gave up on the pattern
            # (too costly to match on a line).
            if not service:
                raise StackClosed(f"service '{self.name}': {line}")
            raise CorralError(f"service '{self.name}': {line}")
        return str(line)

    # -- control ----------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> None:
        self._stack.start(self.name, timeout=timeout)

    def stop(self, timeout: float | None = None) -> None:
        self._stack.stop(self.name, timeout=timeout)

    def restart(self, timeout: float | None = None) -> None:
        self._stack.restart(self.name, timeout=timeout)

    def wait(self, state: str = "ready", timeout: float | None = None) -> None:
        self._stack.wait(self.name, state, timeout)

    def signal(self, sig: int | str) -> bool:
        """Sends `sig` to the main process (through its pidfd). False if it is not running."""
        core = self._stack._core()
        return bool(core.signal(self.name, _signal_number(sig)))

    async def async_start(self, timeout: float | None = None) -> None:
        await _in_thread(self.start, timeout)

    async def async_stop(self, timeout: float | None = None) -> None:
        await _in_thread(self.stop, timeout)

    async def async_restart(self, timeout: float | None = None) -> None:
        await _in_thread(self.restart, timeout)

    async def async_wait(self, state: str = "ready", timeout: float | None = None) -> None:
        await _in_thread(self.wait, state, timeout)

    async def async_wait_for_log(self, regex: str, timeout: float | None = None) -> str:
        return await _in_thread(self.wait_for_log, regex, timeout)

    def _repr_html_(self) -> str:
        return self._stack._repr_html_(only=self.name)

    def __repr__(self) -> str:
        row = self._row()
        return f"<Service {self.name} {row['state']} pid={row['pid']} ports={row['ports']}>"


def _signal_number(sig: int | str) -> int:
    if isinstance(sig, str):
        name = sig.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(getattr(_signal.Signals, name))
        except AttributeError:
            raise ConfigError(f"unknown signal {sig!r}") from None
    return int(sig)


async def _in_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Runs `fn(*args)` in a new thread of its own and awaits its result. Not the loop's
    default executor: it has a few workers, and 20 waits for a log line would leave nothing
    for `getaddrinfo` and the like. A thread per call cannot starve another call; each one
    is blocked in the engine, not computing."""
    import asyncio  # only async callers pay for it

    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the awaiting task was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, raised there
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    name = f"corral-{getattr(fn, '__name__', 'call')}"
    _engine.start_thread(threading.Thread(target=run, name=name, daemon=True))
    return await future


def _close_handle(handle: Any, pid: int) -> None:
    """Finalizer: stop everything a collected (or never closed) stack still runs. It may run
    on any thread (the one that dropped the last reference, or the garbage collector's), so
    it only posts the close; the engine finishes it and `_engine` releases the handle."""
    if not _engine.owned_here(pid):
        _engine.orphan(handle)  # inherited across fork: not ours to stop
        return
    _engine.close_in_background(handle)


class Stack:
    """A set of services started in dependency order and stopped in reverse.

    ``with stack:`` starts everything and waits until all are ready; leaving the block (also
    by an exception or Ctrl+C) stops everything. A stack that is garbage-collected, or still
    open when the interpreter exits, is stopped too.
    """

    def __init__(self, name: str | None = None, *, api: bool = True, api_tcp: bool = False,
                 metrics_interval: float | None = None, metrics_pss: bool = False,
                 history: str | os.PathLike[str] | None = None,
                 logs: str | os.PathLike[str] | Mapping[str, Any] | LogFiles | None = None) -> None:
        """`api`: serve the control API (docs/api.md) on a Unix socket while the stack runs;
        `api_tcp`: on loopback TCP with a token too (for browsers and tools without Unix
        sockets; see `serve_api`). `metrics_interval`: seconds between samples of every
        service's process tree (0: off; the default is off, or 1 s with a `history`).
        `metrics_pss` adds PSS (~180 us per process). `history`: an SQLite file that keeps
        state changes, exits, readiness times and resource summaries (see docs/metrics.md).
        `logs`: a directory (or `{"dir", "max_size", "keep"}`) where every service's lines
        also go, to `<dir>/<service>.log`, stamped and rotated (see docs/user-guide.md)."""
        self.name = stack_name(name)
        self.file: str | None = None
        self._api = api or api_tcp
        self._api_tcp = api_tcp
        self._control = _stack_api.ControlApi()
        self._history_path, self._metrics_interval = _stack_metrics.sampling(metrics_interval, history)
        self._metrics_pss = bool(metrics_pss)
        self._logs = logs if isinstance(logs, LogFiles) or logs is None else log_files(logs)
        self._telemetry = _stack_metrics.Telemetry()
        self._specs: dict[str, ServiceSpec] = {}
        self._resource_types: dict[str, ResourceType] = {}
        self._templates: dict[str, Template] = {}
        self._services: dict[str, Service] = {}
        self._native = _Native()
        # Two first starts at once (threads, or asyncio.gather of async_start) must share
        # one native stack, not run every service twice.
        self._create_lock = threading.Lock()
        self._api_pending = False  # created, its control API not served yet (first start)
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False
        self._pid = os.getpid()

    @property
    def _handle(self) -> Any:
        return self._native.handle

    @property
    def _served(self) -> _api.Served | None:
        """The control server while the stack serves its API (tests and the dashboard read it)."""
        return self._control.served

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], environ: dict[str, str] | None = None, *,
             api: bool = True, api_tcp: bool = False) -> Stack:
        """A stack from a TOML or YAML file (by extension). `api`, `api_tcp`: as `Stack()`."""
        config: StackConfig = load_file(path, environ=environ) if environ is not None else load_file(path)
        stack = cls(config.name, api=api, api_tcp=api_tcp, metrics_interval=config.metrics_interval,
                    metrics_pss=config.metrics_pss, history=config.history, logs=config.logs)
        stack.file = config.file
        # Like docker compose, a file's relative paths mean "next to the file": commands run
        # in its directory unless they say otherwise.
        base = os.path.dirname(os.path.abspath(config.file or ""))
        for spec in config.services:
            if spec.cwd is None:
                spec.cwd = base
            elif not os.path.isabs(spec.cwd) and not spec.cwd.startswith("{{"):
                spec.cwd = os.path.join(base, spec.cwd)
            stack._add_spec(spec)
        for t in config.resource_types:
            stack._resource_types[t.name] = t
        stack._validate()
        return stack

    def add(self, name: str, command: list[str] | str, **options: Any) -> Service:
        """Adds a service; see the user guide for the options. Raises ConfigError."""
        if self._handle is not None or self._closed:
            raise CorralError(f"cannot add service '{name}': the stack has already been started")
        if isinstance(name, str) and name in self._specs:
            raise ConfigError(f"service '{name}' is already defined", service=name)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], _OPTIONS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown option '{unknown[0]}'{hint}", service=name)
        spec = make_service(name, command, **options)
        return self._add_spec(spec)

    def resource_type(
        self,
        name: str,
        *,
        range: tuple[int, int] | list[int] | None = None,
        values: list[Any] | tuple[Any, ...] | None = None,
        check: str | None = None,
        env: str | None = None,
        timeout: float = 10.0,
    ) -> ResourceType:
        """Declares a pool of values services may claim (``resources={name: count}``):
        an inclusive integer `range`, a list of `values`, or neither (each claim gives its
        value). `check` (``{{value}}`` filled in, run by /bin/sh) must exit 0 within
        `timeout` seconds for a value to be used; `env` also exports the claimed values
        under that name, comma-joined. Raises ConfigError."""
        if self._handle is not None or self._closed:
            raise CorralError(f"cannot declare resource '{name}': the stack has already been started")
        t = make_resource_type(name, range=range, values=values, check=check, env=env, timeout=timeout)
        if t.name in self._resource_types:
            raise ConfigError(f"resource type '{t.name}' is already declared", key=f"resources.{t.name}")
        self._resource_types[t.name] = t
        return t

    def template(self, name: str, command: list[str] | str, *, vars: dict[str, Any] | None = None,
                 **options: Any) -> Template:
        """A command with options (those of `add`) and default `vars`, to instantiate with
        `add_from`; ``{{vars.KEY}}`` in its strings is filled in per instance."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"invalid template name {name!r}", key="templates")
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"unknown option '{unknown[0]}'", key=f"templates.{name}")
        t = Template(name, command, dict(options), dict(vars or {}))
        self._templates[name] = t
        return t

    def add_from(self, template: Template | str, name: str, *, vars: dict[str, Any] | None = None,
                 **overrides: Any) -> Service:
        """A service from a template (or a template's name): its options, then `overrides`,
        with ``{{vars.KEY}}`` filled from `vars` over the template's defaults. Each
        instance claims its own resources and ports. Raises ConfigError."""
        if isinstance(template, str):
            if template not in self._templates:
                raise ConfigError(f"unknown template '{template}'", service=name, key="template")
            template = self._templates[template]
        if self._handle is not None or self._closed:
            raise CorralError(f"cannot add service '{name}': the stack has already been started")
        if isinstance(name, str) and name in self._specs:
            raise ConfigError(f"service '{name}' is already defined", service=name)
        unknown = sorted(set(overrides) - _OPTIONS)
        if unknown:
            raise ConfigError(f"unknown option '{unknown[0]}'", service=name)
        options = {"command": template.command, **template.options, **overrides}
        return self._add_spec(instantiate(name, options, template.vars, vars))

    def _add_spec(self, spec: ServiceSpec) -> Service:
        self._specs[spec.name] = spec
        if spec.replicas == 1:
            service = Service(self, spec)
            self._services[spec.name] = service
            return service
        # Replicas are services of their own, `name-1` .. `name-N` (as docker compose names
        # its containers); the first is returned.
        replicas = [Service(self, clone) for _, clone in _stack_spec.expand_replicas([spec])]
        for r in replicas:
            self._services[r.name] = r
        return replicas[0]

    def _core_spec(self) -> Any:
        return _stack_spec.stack_spec(self.name or "corral", self._specs, self._resource_types.values(),
                                      self._logs)

    def _validate(self) -> None:
        try:
            _core.validate(self._core_spec())
        except ConfigError as exc:
            if self.file and not str(exc).startswith(self.file):
                raise ConfigError(f"{self.file}: {exc}", file=self.file) from None
            raise

    def _core(self, *, serve: bool = True) -> Any:
        """The native stack, created on first use. `serve=False`: its control API may still
        be to serve (`_serve_api_now()`), so that a first start spawns meanwhile."""
        if self._closed:
            raise StackClosed(f"stack '{self.name or 'corral'}' is closed")
        if self._handle is not None:
            if serve and self._api_pending:
                self._serve_api_now()
            return self._handle
        with self._create_lock:
            if self._closed:
                raise StackClosed(f"stack '{self.name or 'corral'}' is closed")
            if self._handle is None:
                spec = self._core_spec()
                # One running stack per name in this process: an earlier one with the same
                # name is closed (in IPython, a re-run cell) or this one is refused.
                # The history database first: a path that cannot be opened starts nothing.
                db = _stack_metrics.open_history(self._history_path)
                if self._logs is not None:
                    try:
                        os.makedirs(self._logs.dir, exist_ok=True)
                    except OSError as exc:
                        raise ConfigError(f"cannot create the log directory {self._logs.dir}: "
                                          f"{exc.strerror or exc}", key="logs.dir") from None
                _engine.claim_name(self)
                handle = _engine.engine().create_stack(spec)
                self._finalizer = weakref.finalize(self, _close_handle, handle, self._pid)
                self._telemetry.attach(self, handle, db, interval=self._metrics_interval,
                                       pss=self._metrics_pss, name=self.name or "corral", file=self.file)
                self._native.handle = handle
                _engine.register(self)
                self._api_pending = self._api
        if serve and self._api_pending:
            self._serve_api_now()
        return self._handle

    def _serve_api_now(self) -> None:
        with self._create_lock:
            # close() clears the flag first: no server starts for a stack being closed.
            if self._api_pending:
                self._api_pending = False
                try:
                    self._control.start(self, self._handle, self.name, self.file, tcp=self._api_tcp)
                except BaseException:
                    self._api_pending = True  # a Ctrl+C in the middle: the next call serves it
                    raise

    def serve_api(self, port: int = 0) -> dict[str, str | None]:
        """Serves the control API on loopback TCP too (port 0: any free one) and returns
        where: ``{"socket", "url", "token_file"}``. The token is in the 0600 token file, for
        the ``Authorization: Bearer`` header; it is never on a command line or in a
        service's environment. Starts the stack's engine side if needed."""
        handle = self._core()
        with self._create_lock:
            before = self._control.served
            where = self._control.serve_tcp(self, handle, self.name, self.file, port)
            if self._control.served is not before:
                publish_runs(self)  # the new server starts without the runs document
        return where

    def dashboard_url(self) -> str:
        """A one-time login link to this stack's live dashboard (docs/dashboard.md). Turns
        the control API's loopback TCP listener on if it is off (as `serve_api()`), and
        metrics sampling (1 s) if it is off, so the page has sparklines."""
        if not self._api:
            raise CorralError("this stack has no control API (Stack(api=False)): no dashboard")
        if self._served is None or self._served.url is None:
            self.serve_api()
        if self._metrics_interval <= 0 and self._handle is not None:
            self._metrics_interval = 1.0
            self._handle.configure_metrics(self._metrics_interval, self._metrics_pss)
        assert self._served is not None
        return str(self._served.server.login_url())

    def dashboard(self, refresh: float | None = None, *, window: float = 300.0) -> Any:
        """The dashboard as HTML for a notebook, without a server: the services with their
        state and why, pid, ports, uptime, restarts, health, CPU and memory sparklines (over
        the last `window` seconds), and the start-up timeline. Jupyter renders the returned
        object; with `refresh` (seconds) it is displayed now and updated in place."""
        from ._dashboard import Dashboard

        view = Dashboard(self, window)
        if refresh is not None:
            view.show(refresh)
        return view

    @property
    def api(self) -> dict[str, str | None] | None:
        """Where the running stack serves its control API: ``{"socket", "url",
        "token_file", "info"}`` (url and token_file only with TCP); None when it does not."""
        return self._control.where()

    def _wait_stop_request(self, timeout: float | None = None) -> bool:
        """For a detached stack's daemon: waits until a client asked the stack to stop
        (``POST /v1/stack/stop``, `Client.stop_all`); False at the timeout or without an
        API. Ctrl+C interrupts it."""
        return self._control.wait_stop_request(timeout)

    def _running(self) -> bool:
        """Open, with a service that has (or is about to have) a process."""
        if self._handle is None or self._closed:
            return False
        return any(r["state"] in _LIVE for r in self._handle.status())

    def _core_or_none(self) -> Any:
        # A closed stack still answers status and logs questions: its last states and lines
        # are what a failing test's report wants to show.
        return self._handle

    # -- access -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Service:
        try:
            return self._services[name]
        except KeyError:
            raise KeyError(f"stack has no service {name!r} (services: {', '.join(self._services)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def __iter__(self) -> Iterator[Service]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    @property
    def services(self) -> dict[str, Service]:
        return dict(self._services)

    def levels(self) -> list[list[str]]:
        """The start order, level by level (level 0 first). Raises ConfigError."""
        return _core.levels(self._core_spec())

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, *names: str, timeout: float | None = None) -> None:
        """Starts `names` (all when none) and what they depend on; returns once all of them
        are ready. Raises StartError (a service failed) or Timeout."""
        for n in names:
            self[n]
        limit = wait_timeout(timeout)  # a bad timeout starts nothing
        deadline = None if limit is None else time.monotonic() + limit
        # The first start spawns while its control API is being served (Python work of a few
        # milliseconds: the engine thread is busy with the spawns meanwhile).
        core = self._core(serve=False)
        pending = core.begin_start(list(names))
        self._core()
        publish_runs(self)  # the dashboard's earlier runs (GET /v1/runs), while this one starts
        outcome = pending.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if outcome is None:
            waiting = [r["name"] for r in core.status() if r["state"] in ("pending", "starting", "backoff")]
            raise Timeout(f"stack not ready within {timeout}s; still waiting for: {', '.join(waiting)}")
        ok, service, reason = outcome
        if not ok:
            raise self._start_error(service, reason)
        publish_runs(self)  # and this run's start-up among them

    def _start_error(self, service: str, reason: str) -> StartError:
        tail = []
        if service and self._handle is not None:
            tail = [text for _, _, text, _ in self._handle.logs(service, _LOG_TAIL)]
        return StartError(service, reason, tail)

    def stop(self, *names: str, timeout: float | None = None) -> None:
        """Stops `names` (all when none). Among the services stopped, dependents stop before
        what they depend on; like `docker compose stop db`, naming a service stops only it."""
        for n in names:
            self[n]
        if self._handle is None or self._closed:
            return
        if self._handle.stop(list(names), wait_timeout(timeout)) is None:
            raise Timeout(f"services did not stop within {timeout}s")

    def restart(self, name: str, timeout: float | None = None) -> None:
        """Stops `name` and starts it again (with the same ports); waits until ready.
        `timeout` covers both halves."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.stop(name, timeout=timeout)
        if self._handle is not None:
            self._handle.note_manual_restart(name)  # corral_service_restarts_total{reason="manual"}
        self.start(name, timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))

    def kill(self, *names: str) -> None:
        """SIGKILL to `names` (all when none) at once, without a grace period; what they
        leave in their process groups is killed as each exits. A stop in progress then
        completes right away."""
        handle = self._core_or_none()
        if handle is None:
            return
        for name in names or list(self._services):
            self[name]
            handle.signal(name, int(_signal.SIGKILL))

    def wait(self, name: str, state: str = "ready", timeout: float | None = None) -> None:
        """Waits until `name` is in `state`; raises CorralError if it settles elsewhere."""
        if state not in STATES and state != "healthy":
            raise ConfigError(f"unknown state {state!r} (states: {', '.join(STATES)})")
        self[name]
        outcome = self._core().wait_state(name, state, wait_timeout(timeout))
        if outcome is None:
            raise Timeout(f"service '{name}' not {state} within {timeout}s (it is {self[name].state})")
        ok, _, message = outcome
        if not ok:
            raise CorralError(f"service '{name}' will not become {state}: it {message}")

    def close(self, timeout: float | None = None) -> None:
        """Stops everything and releases ports and private directories. Idempotent."""
        if self._closed:
            return
        if not _engine.owned_here(self._pid):
            self._closed = True  # inherited across fork: the parent owns those processes
            return
        with self._create_lock:
            self._api_pending = False  # a first start still to serve its API: not any more
        if self._handle is None:
            # A first start may be creating the native stack right now: then close that one.
            with self._create_lock:
                if self._handle is None:
                    self._closed = True
                    return
        try:
            if self._handle.close(wait_timeout(timeout)) is None:
                raise Timeout(f"stack did not stop within {timeout}s")
        finally:
            # After the close: event-stream clients see the last state changes.
            self._control.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._closed = True
        self._telemetry.close()

    def _post_close(self) -> None:
        """Begins closing and returns at once (close() then waits for the end). Safe in a
        signal handler: it only posts to the engine."""
        if self._handle is not None and not self._closed and _engine.owned_here(self._pid):
            self._handle.close(0.0)

    # -- observation ------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """One row per service: name, state, pid, restarts, exit_code, ports, reason, ..."""
        if self._handle is None:
            return [Service(self, s)._row() for s in self._specs.values()]
        return self._handle.status()  # type: ignore[no-any-return]

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per service, over its whole process tree: cpu_seconds, cpu_percent, rss_bytes,
        processes, threads, open_fds, read_bytes, write_bytes; and restarts, uptime_seconds,
        ready_seconds (spawn to ready), health (0-100), state, pid, log counters. From the
        latest sample, or read now when sampling is off."""
        if self._handle is None or self._closed:
            return {}
        return _metrics.MetricsTable(_metrics.metrics_rows(self._handle))

    def samples(self, service: str | None = None, since: float | None = None) -> Records:
        """The recent raw samples (a bounded ring per service) as plain dicts with `time`
        (seconds since the epoch), `service` and the fields of `metrics()`; `since` is a
        number of seconds ago. `pandas.DataFrame(stack.samples())` takes them as they are."""
        if service is not None:
            self[service]
        if self._handle is None:
            return Records()
        return _metrics.samples(self._handle, service, since)

    def prometheus(self) -> str:
        """The metrics in the Prometheus text exposition format."""
        return "" if self._handle is None or self._closed else str(self._handle.prometheus())

    def serve_metrics(self, port: int = 0) -> str:
        """Serves `prometheus()` at http://127.0.0.1:PORT/metrics (0: any free port) until
        the stack closes; returns the URL."""
        if self._telemetry.server is None:
            self._core()
        return self._telemetry.serve(self.prometheus, port)

    def history(self, service: str | None = None, since: float | str | None = None) -> Records:
        """What the history database holds (every run of this stack's file), oldest first:
        state changes, spawns, readiness times, exits, check result changes. `since`:
        seconds ago, or a duration such as "1h". Needs ``Stack(history=...)``."""
        return self._telemetry.history(self._history_path, service, since)

    def plot(self, metric: str = "cpu_percent", services: list[str] | None = None,
             since: float | None = None) -> Any:
        """A matplotlib figure of `metric` (a field of `samples()`) over time, a line per
        service. matplotlib is optional: ImportError says how to get it."""
        return _metrics.plot(self.samples(since=since), metric, services)

    def _subscribe(self, lossless: bool) -> None:
        """Starts the event stream before anything runs. Lossless (for `corral up`): when
        the reader falls behind, the services are slowed down (their output is left unread)
        instead of losing lines. The first subscription decides."""
        self._core().subscribe(lossless)

    def events(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """Log lines and state changes since the previous call (the first call subscribes).
        Waits up to `timeout` seconds (``math.inf``: until something happens) for at least
        one; Ctrl+C interrupts the wait. A closed stack still hands out what was queued."""
        handle = self._handle if self._closed else self._core()
        if handle is None:
            return []
        return handle.events(timeout)  # type: ignore[no-any-return]

    def event_batch(self, timeout: float = 0.0) -> EventBatch:
        """The same stream as `events()` (they share it: each event goes to one of them),
        as columns: every queued log line's text, service, stream and time in parallel
        lists, and the state events beside them, each with its place among the lines. It
        builds no dict per line, so a reader keeps up with a service that floods; iterating
        the batch gives `events()`'s dicts. Waits as `events()` does."""
        handle = self._handle if self._closed else self._core()
        if handle is None:
            return EventBatch([], [], [], b"", [], 0)
        return EventBatch(*handle.event_columns(timeout))

    # -- context managers -------------------------------------------------------------------
    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Stack:
        try:
            await self.async_start()
        except BaseException:
            await _in_thread(self.close)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await _in_thread(self.close)

    async def async_start(self, *names: str, timeout: float | None = None) -> None:
        await _in_thread(functools.partial(self.start, *names, timeout=timeout))

    async def async_stop(self, *names: str, timeout: float | None = None) -> None:
        await _in_thread(functools.partial(self.stop, *names, timeout=timeout))

    async def async_restart(self, name: str, timeout: float | None = None) -> None:
        await _in_thread(self.restart, name, timeout)

    async def async_wait(self, name: str, state: str = "ready", timeout: float | None = None) -> None:
        await _in_thread(self.wait, name, state, timeout)

    async def async_close(self, timeout: float | None = None) -> None:
        await _in_thread(self.close, timeout)

    # -- display ----------------------------------------------------------------------------
    def __repr__(self) -> str:
        states = ", ".join(f"{r['name']}={r['state']}" for r in self.status())
        return f"<Stack {self.name or 'corral'}: {states}>"

    def _repr_html_(self, only: str | None = None) -> str:
        import html

        rows = []
        for r in self.status():
            if only is not None and r["name"] != only:
                continue
            ports = ", ".join(f"{k}={v}" for k, v in r["ports"].items())
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
                    r["name"], r["state"], r["pid"] or "", r["restarts"],
                    "" if r["exit_code"] is None else r["exit_code"], ports, r.get("reason", ""))) + "</tr>")
        columns = ("service", "state", "pid", "restarts", "exit", "ports", "reason")
        head = "".join(f"<th>{h}</th>" for h in columns)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
