"""Where a running stack's control API lives, and the files that let others find it.

Every running stack serves its API on a Unix socket in ``<runtime dir>/api/`` (the per-user
runtime directory, 0700 and owner-checked, see docs/security.md). Its name comes from the
config file's absolute path (or, for a stack built in code, from its name), hashed so that
the path stays far below ``sun_path``'s 108 bytes:

    <runtime dir>/api/<name>-<16 hex>.sock    the socket (0600)
    <runtime dir>/api/<name>-<16 hex>.json    the info file: pid, start time, name, paths
    <runtime dir>/api/<name>-<16 hex>.token   the TCP token (0600), only with TCP

Info files are written atomically and removed on close; one whose owner died (SIGKILL) is
pruned by `list_stacks()`, which checks the pid *and* its start time, so a recycled pid is
never taken for the owner.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
from typing import Any

from .errors import CorralError

_MAX_SUN_PATH = 107


def api_dir() -> str:
    """The directory of the sockets and info files, created private."""
    # Imported here: a client (`corral ps`) needs only these two functions of the engine
    # extension, and only once it looks for a stack.
    from . import _core

    return str(_core.private_dir(os.path.join(_core.runtime_dir(), "api")))


def _sha256() -> Any:
    """CPython's own SHA-256 (`_sha2`, or `_sha256` before 3.12), not OpenSSL's: `hashlib`
    loads libcrypto, megabytes in every process that runs a stack. The digest is the same."""
    import importlib

    for name in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(name).sha256
        except ImportError:
            continue
    from hashlib import sha256  # a build without them

    return sha256


def stack_key(name: str | None, file: str | None) -> str:
    """The file name stem of a stack's socket and info file: a readable prefix plus a hash
    of the config file's absolute path (or of the name, for a stack without a file)."""
    sha256 = _sha256()
    # The real path: the same file reached through a symlink is the same stack.
    ident = "file:" + os.path.realpath(file) if file else "name:" + (name or "corral")
    digest = sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", name or "corral")[:24] or "corral"
    return f"{prefix}-{digest}"


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot): with the pid, it names one
    process for good. None when no such process is visible."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _write_private(path: str, text: str) -> None:
    """Writes `text` to `path` atomically, 0600, never through a symlink."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _remove(*paths: str | None) -> None:
    for p in paths:
        if p:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


# The dashboard's page, served by the control server at / and /static/NAME.
_DASHBOARD_DIR = os.path.join(os.path.dirname(__file__), "dashboard")


@functools.cache
def _openapi_text() -> str:
    path = os.path.join(os.path.dirname(__file__), "openapi.json")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return "{}"


class Served:
    """A stack's running control server and the files that announce it. (A plain class,
    not a dataclass: `dataclasses` would add its imports to every client's start-up.)"""

    def __init__(self, server: Any, socket: str, info: str) -> None:
        self.server = server
        self.socket = socket
        self.info = info
        self.pid = os.getpid()
        self.url: str | None = None
        self.token_file: str | None = None
        self.closed = False

    def close(self) -> None:
        """Stops the server (its socket goes with it) and removes the info and token files.
        Idempotent. In a forked child, nothing: those belong to the parent."""
        if self.closed:
            return
        self.closed = True
        if self.pid != os.getpid():
            from . import _engine

            _engine.orphan(self.server)  # its thread does not exist here: never join it
            return
        self.server.stop()
        _remove(self.info, self.token_file)


def serve(handle: Any, name: str | None, file: str | None, *, tcp: bool = False,
          tcp_port: int = 0) -> Served:
    """Starts the control server of a running stack and writes its info file. Raises
    CorralError (the directory is unsafe, the path too long, ...)."""
    directory = api_dir()
    key = stack_key(name, file)
    socket = os.path.join(directory, key + ".sock")
    if len(socket) > _MAX_SUN_PATH:
        raise CorralError(f"the control socket path is too long ({len(socket)} bytes): {socket}; "
                          "set CORRAL_RUNTIME_DIR to a shorter directory")
    from . import _core

    token = ""
    if tcp:
        import secrets  # only here: it loads hashlib, and with it OpenSSL's libcrypto

        token = secrets.token_hex(16)  # 128 bits
    openapi = _openapi_text()

    def start(path: str) -> Any:
        return _core.ControlServer(handle, path, tcp=tcp, tcp_port=tcp_port, token=token, openapi=openapi,
                                   static_root=_DASHBOARD_DIR)

    # The same config file (or name) may run elsewhere already: then this stack gets a
    # socket of its own (found through its info file), the first keeps the well-known one.
    base = key
    for attempt in range(100):
        try:
            server = start(socket)
            break
        except CorralError as exc:
            if "in use by a running stack" not in str(exc) or attempt == 99:
                raise
        key = f"{base}-{os.getpid()}" + (f"-{attempt + 1}" if attempt else "")
        socket = os.path.join(directory, key + ".sock")
    served = Served(server, socket, os.path.join(directory, key + ".json"))
    try:
        if tcp:
            served.url = f"http://127.0.0.1:{server.tcp_port}"
            served.token_file = os.path.join(directory, key + ".token")
            _write_private(served.token_file, token + "\n")
        info = {
            "version": 1,
            "name": name or "corral",
            "pid": os.getpid(),
            "start_time": process_start_time(os.getpid()),
            "started_at": time.time(),
            "config": os.path.realpath(file) if file else None,
            "socket": socket,
            "url": served.url,
            "token_file": served.token_file,
        }
        _write_private(served.info, json.dumps(info, indent=1) + "\n")
    except BaseException:
        served.close()
        raise
    return served


def _alive(info: dict[str, Any]) -> bool:
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = process_start_time(pid)
    return started is not None and started == info.get("start_time") and not is_zombie(pid)


def is_zombie(pid: int) -> bool:
    """A process that has died but is not reaped yet (its parent, often init after a daemon
    was SIGKILLed, may take its time): it still has its /proc entry and start time, but
    it owns nothing any more."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:][:1] == b"Z"


def list_stacks() -> list[dict[str, Any]]:
    """Every running stack of this user, oldest first, as its info file says: name, pid,
    config, socket, url, token_file, started_at. Files of owners that are gone are removed
    (with their sockets), as `jupyter server list` does."""
    directory = api_dir()
    out = []
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(".json"):
            continue
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict):
            continue
        if not _alive(info):
            stem = path[: -len(".json")]
            _remove(path, stem + ".sock", stem + ".token")
            continue
        out.append(info)
    out.sort(key=lambda i: i.get("started_at") or 0)
    return out
