"""The process-wide native engine: created on first use, shut down at interpreter exit.

One engine thread serves every stack of the process (see docs/architecture.md). Stacks that
are still open at exit are closed gracefully first; whatever still runs after that is
killed by the engine's shutdown. A forked child (multiprocessing with the "fork" start
method) inherits Python objects but not the engine thread, so it must never touch or tear
down the parent's engine: it forgets it and makes its own if it needs one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any

try:
    from . import _core
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError(
        "corral's native engine (corral._core) is missing or failed to load; "
        "reinstall corral with `pip install .` from a source checkout, or a wheel for "
        f"this platform ({exc})"
    ) from exc

if TYPE_CHECKING:
    from .stack import Stack

_lock = threading.Lock()
_engine: Any = None
_pid = os.getpid()
_live_stacks: weakref.WeakSet[Stack] = weakref.WeakSet()
# Handles inherited from a parent process across fork: never closed, never collected
# (their destructors would wait on an engine thread that does not exist here).
_orphans: list[Any] = []


def engine() -> Any:
    """The engine of this process, started on first use."""
    global _engine, _pid
    with _lock:
        if _engine is None or _pid != os.getpid():
            _engine = _core.Engine(watcher=_watcher_program())
            _pid = os.getpid()
        return _engine


def _watcher_program() -> str:
    """The corral-watch binary installed beside the module ($CORRAL_WATCHER overrides);
    without it (a source checkout) the engine forks its watcher instead."""
    path = os.environ.get("CORRAL_WATCHER") or os.path.join(os.path.dirname(__file__), "corral-watch")
    return path if os.access(path, os.X_OK) else ""


def register(stack: Stack) -> None:
    _live_stacks.add(stack)


def owned_here(pid: int) -> bool:
    return pid == os.getpid()


def orphan(handle: Any) -> None:
    _orphans.append(handle)


def _after_fork_in_child() -> None:
    global _engine, _lock
    if _engine is not None:
        # Close this copy of the death watcher's socket, so the watcher still sees EOF
        # the moment the parent dies, however long this child lives.
        _engine.abandon_after_fork()
        _orphans.append(_engine)
    _engine = None
    _lock = threading.Lock()


def _shutdown() -> None:
    if _engine is None or _pid != os.getpid():
        return
    for stack in list(_live_stacks):
        with contextlib.suppress(BaseException):
            stack.close()
    _engine.shutdown()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown)
