"""The process-wide native engine: created on first use, shut down at interpreter exit.

One engine thread serves every stack of the process (see docs/architecture.md). Stacks that
are still open at exit are closed gracefully first; whatever still runs after that is
killed by the engine's shutdown. A stack dropped without being closed is closed in the
background (`close_in_background`): the thread that dropped it does not wait for its
services' stop timeouts, and interpreter exit waits for those closes to finish. A forked
child (multiprocessing with the "fork" start method) inherits Python objects but not the
engine thread, so it must never touch or tear down the parent's engine: it forgets it and
makes its own if it needs one.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable
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
# Native handles of dropped stacks whose close was posted and is not finished yet; one
# daemon thread waits for them in turn and then lets them go.
_closing: list[Any] = []
_closing_cv = threading.Condition(threading.Lock())
_reaper: threading.Thread | None = None
# The stack that last claimed each name (see claim_name).
_names: weakref.WeakValueDictionary[str, Stack] = weakref.WeakValueDictionary()
_names_lock = threading.Lock()
_log = logging.getLogger("corral")


def start_thread(thread: threading.Thread) -> None:
    """Starts a thread of corral's own, counted with corral's clones: the escapee sweep
    skips its /proc scan only when nothing but corral cloned since a service started, and a
    thread is a clone to the kernel's fork counter."""
    _core.note_clone_begun()
    try:
        thread.start()
    finally:
        # Started (it has an ident) even if a Ctrl+C cut the wait for it short.
        if thread.ident is not None:
            _core.note_clone_done()
        else:
            _core.note_clone_failed()


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


def close_in_background(handle: Any) -> None:
    """Posts the close of a dropped stack's `handle` and returns at once; the reaper thread
    waits for it to finish and only then releases the handle (destroying an open native
    stack would wait for it to close)."""
    global _reaper
    with contextlib.suppress(BaseException):
        handle.close(0.0)  # a zero timeout: post the close, do not wait for it
    with _closing_cv:
        _closing.append(handle)
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap, name="corral-close", daemon=True)
            _reaper.start()
        _closing_cv.notify_all()


def _reap() -> None:
    while True:
        with _closing_cv:
            while not _closing:
                _closing_cv.wait()
            handle = _closing[0]
        with contextlib.suppress(BaseException):
            handle.close(None)
        with _closing_cv:
            _closing.remove(handle)
            _closing_cv.notify_all()
        del handle


def _in_ipython() -> bool:
    """True inside IPython: a Jupyter kernel, or the IPython shell."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None


# Whether a stack that starts replaces a running one with the same name (rather than being
# refused). A module attribute so that tests can exercise both answers.
_replace_namesake: Callable[[], bool] = _in_ipython


def claim_name(stack: Stack) -> None:
    """One running stack per name in this process. Re-running a notebook cell that builds
    `Stack(name="dev")` and starts it must not leave the previous `dev` running: inside
    IPython the previous one is closed (and a message logged); elsewhere two stacks with one
    name are a mistake, and this one is refused with a CorralError naming the other."""
    if stack.name is None:
        return
    with _names_lock:
        other = _names.get(stack.name)
        if other is not None and other is not stack and other._running():
            if not _replace_namesake():
                from .errors import CorralError

                raise CorralError(
                    f"a stack named '{stack.name}' is already running in this process "
                    f"({other!r}); close it first, or give this one another name")
            _log.warning("corral: closing the running stack '%s' that this one replaces", stack.name)
            other.close()
        _names[stack.name] = stack


def _after_fork_in_child() -> None:
    global _engine, _lock, _closing_cv, _reaper, _names_lock
    if _engine is not None:
        # Close this copy of the death watcher's socket, so the watcher still sees EOF
        # the moment the parent dies, however long this child lives.
        _engine.abandon_after_fork()
        _orphans.append(_engine)
    _engine = None
    _lock = threading.Lock()
    # The parent's background closes are the parent's; no reaper thread exists here.
    _orphans.extend(_closing)
    _closing.clear()
    _closing_cv = threading.Condition(threading.Lock())
    _reaper = None
    _names_lock = threading.Lock()
    _names.clear()


def _shutdown() -> None:
    if _engine is None or _pid != os.getpid():
        return
    for stack in list(_live_stacks):
        with contextlib.suppress(BaseException):
            stack.close()
    # Dropped stacks: their closes were posted; let them stop gracefully too.
    with _closing_cv:
        _closing_cv.wait_for(lambda: not _closing or _reaper is None or not _reaper.is_alive())
    _engine.shutdown()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown)
