"""A client for a stack that another process runs: `corral.connect()`.

It talks to the stack's control API (docs/api.md) over its Unix socket, with the standard
library only, and offers the reading and control methods of `Stack` and `Service`:

    import corral
    dev = corral.connect()               # the stack of ./corral.toml (or .yaml)
    dev["web"].restart()
    print(dev["web"].ports, dev["web"].logs(tail=20))

A target is a config file path, a stack name, a socket path, or a loopback URL (with
`token=` or `token_file=`). Each call is one short connection, so a client is safe to use
from several threads; event streams hold a connection of their own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import socket
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from . import _api
from ._service_view import ServiceView
from .errors import CorralError, StackClosed, StartError, Timeout

__all__ = ["Client", "RemoteService", "connect", "list_stacks"]

_DEFAULT_FILES = ("corral.toml", "corral.yaml", "corral.yml")
_REQUEST_TIMEOUT = 30.0


def list_stacks() -> list[dict[str, Any]]:
    """The running stacks of this user (oldest first): name, pid, config, socket, url,
    token_file, started_at. Entries of owners that died are removed on the way."""
    return _api.list_stacks()


def _looks_like_path(target: str) -> bool:
    # A bare word is a stack name unless a *file* of that name is here: a directory that
    # happens to share the name (a project directory "dev" beside stack "dev") is not one.
    return os.sep in target or target.endswith((".toml", ".yaml", ".yml", ".sock")) or os.path.isfile(target)


def _resolve(target: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The info of the running stack `target` names (see connect)."""
    if target is None:
        found = [f for f in _DEFAULT_FILES if os.path.isfile(f)]
        if not found:
            raise CorralError(
                f"no {' or '.join(_DEFAULT_FILES[:2])} in {os.getcwd()}: name a config file or a stack")
        target = found[0]
    target = os.fspath(target)
    if target.endswith(".sock"):
        return {"socket": os.path.abspath(target), "name": None}
    stacks = list_stacks()
    if _looks_like_path(target):
        path = os.path.realpath(target)
        matches = [s for s in stacks if s.get("config") == path]
        what = f"config file {path}"
    else:
        matches = [s for s in stacks if s.get("name") == target]
        what = f"name '{target}'"
    if not matches:
        running = ", ".join(f"{s.get('name')} ({s.get('config') or 'no file'})" for s in stacks) or "none"
        raise CorralError(f"no running stack with {what} (running: {running})")
    return matches[0]  # the oldest: the one that holds the well-known socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _Transport:
    """Where and how to reach the server: a Unix socket, or loopback TCP with a token."""

    def __init__(self, socket_path: str | None, url: str | None, token: str | None) -> None:
        self.socket_path = socket_path
        self.url = url
        self.token = token

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.socket_path:
            return _UnixConnection(self.socket_path, timeout)
        assert self.url is not None
        u = urllib.parse.urlsplit(self.url)
        return http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def where(self) -> str:
        return self.socket_path or self.url or "?"


class _EventStream:
    """One Server-Sent Events response read with our own buffer, so that a read that times
    out loses nothing (http.client's reader is not safe to time out mid-line)."""

    def __init__(self, transport: _Transport, path: str) -> None:
        conn = transport.connection(_REQUEST_TIMEOUT)
        try:
            conn.connect()
            sock = conn.sock
            assert sock is not None
            head = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
            head += "Connection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in transport.headers().items()) + "\r\n"
            sock.sendall(head.encode())
        except OSError as exc:
            conn.close()
            raise CorralError(f"cannot reach the stack at {transport.where()}: {exc}") from None
        self._sock: socket.socket = sock
        self._conn = conn
        self._buf = b""
        self._status: int | None = None
        self.closed = False
        try:
            self._header(time.monotonic() + _REQUEST_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self._sock.close()

    def _fill(self, deadline: float | None) -> bool:
        """Reads what is there (waiting until `deadline`); False at the deadline."""
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self._sock], [], [], left)
        if not ready:
            return False
        try:
            data = self._sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.close()
            return True
        self._buf += data
        return True

    def _header(self, deadline: float | None) -> None:
        while self._status is None:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                status_line = self._buf[: self._buf.find(b"\r\n")].decode("latin-1")
                self._status = int(status_line.split()[1])
                if self._status != 200:
                    while not self.closed and self._fill(deadline):
                        pass
                    text = self._buf[end + 4:].decode("utf-8", "replace")
                    raise _error_from(self._status, _json_or_text(text))
                self._buf = self._buf[end + 4:]
                return
            if self.closed:
                raise CorralError("the stack closed the event stream")
            if not self._fill(deadline):
                raise Timeout("no answer from the stack's event stream")

    def next(self, timeout: float | None) -> dict[str, Any] | None:
        """The next event as {"event": name, **data}; None when `timeout` runs out or the
        stream ended (then `closed`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            end = self._buf.find(b"\n\n")
            if end >= 0:
                frame, self._buf = self._buf[:end], self._buf[end + 2:]
                name, data = "message", []
                for line in frame.decode("utf-8", "replace").split("\n"):
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
                if not data:
                    continue  # a comment (keepalive)
                event: dict[str, Any] = {"event": name, **json.loads("\n".join(data))}
                return event
            if self.closed or not self._fill(deadline):
                return None


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"error": text}


def _error_from(status: int, body: Any) -> CorralError:
    message = body.get("error", str(body)) if isinstance(body, dict) else str(body)
    if status == 504:
        return Timeout(message)
    if status == 404:
        return CorralError(message)
    return CorralError(f"the stack refused the request ({status}): {message}")


class RemoteService(ServiceView):
    """A service of a remote stack, with the reading and control methods of `Service`.
    Every attribute asks the stack, so it is always current."""

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self.name = name

    def status(self) -> dict[str, Any]:
        return self._client._get(f"/v1/services/{self._q}")  # type: ignore[no-any-return]

    @property
    def _q(self) -> str:
        return urllib.parse.quote(self.name, safe="")

    def log_records(self, tail: int | None = None) -> list[tuple[float, str, str, int]]:
        """Lines as (wall time, "stdout" | "stderr", text, sequence number), oldest first."""
        query = "" if tail is None else f"?tail={int(tail)}"
        body = self._client._get(f"/v1/services/{self._q}/logs{query}")
        return [(line["time"], line["stream"], line["text"], line["seq"]) for line in body["lines"]]

    def logs(self, tail: int | None = None, *, stream: str | None = None) -> list[str]:
        """The captured lines (stdout and stderr interleaved in arrival order), oldest first."""
        return [text for _, s, text, _ in self.log_records(tail) if stream is None or s == stream]

    def follow(self, tail: int = 10, timeout: float | None = None) -> Iterator[str]:
        """The last `tail` lines, then each new line as it is printed; ends when the stack
        closes, or when no line came for `timeout` seconds."""
        path = f"/v1/services/{self._q}/logs?follow=1&tail={int(tail)}"
        stream = _EventStream(self._client._transport, path)
        try:
            while (event := stream.next(timeout)) is not None:
                yield str(event["text"])
        finally:
            stream.close()

    def wait_for_log(self, regex: str, timeout: float | None = None, *, new_only: bool = False) -> str:
        """Waits for a line matching `regex` (ECMAScript syntax, searched anywhere in the
        line; matched by the stack's engine) and returns it."""
        body: dict[str, Any] = {"regex": regex, "new_only": new_only}
        if timeout is not None:
            body["timeout"] = timeout
        status, answer = self._client._post(f"/v1/services/{self._q}/wait_log", body, timeout)
        if status == 504:
            raise Timeout(f"service '{self.name}': no log line matched {regex!r} within {timeout}s")
        if status == 409:
            error = str(answer.get("error", ""))
            raise (CorralError if answer.get("service") else StackClosed)(f"service '{self.name}': {error}")
        self._client._check(status, answer)
        return str(answer["line"])

    def wait(self, state: str = "ready", timeout: float | None = None) -> None:
        """Waits until the service is in `state`; CorralError when it settles elsewhere."""
        body: dict[str, Any] = {"state": state}
        if timeout is not None:
            body["timeout"] = timeout
        status, answer = self._client._post(f"/v1/services/{self._q}/wait", body, timeout)
        if status == 504:
            raise Timeout(f"service '{self.name}' not {state} within {timeout}s (it is {self.state})")
        if status == 409:
            raise CorralError(f"service '{self.name}' will not become {state}: it {answer.get('error', '')}")
        self._client._check(status, answer)

    def _act(self, action: str, timeout: float | None) -> None:
        body: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        status, answer = self._client._post(f"/v1/services/{self._q}/{action}", body, timeout)
        if status == 409 and action != "stop":
            tail = [line["text"] for line in answer.get("logs", [])]
            raise StartError(answer.get("service") or self.name, str(answer.get("error", "")), tail)
        if status == 504:
            raise Timeout(f"service '{self.name}': {action} not done within {timeout}s")
        self._client._check(status, answer)

    def start(self, timeout: float | None = None) -> None:
        """Starts the service (and what it depends on); returns once it is ready."""
        self._act("start", timeout)

    def stop(self, timeout: float | None = None) -> None:
        self._act("stop", timeout)

    def restart(self, timeout: float | None = None) -> None:
        """Stops the service and starts it again; returns once it is ready."""
        self._act("restart", timeout)

    def signal(self, sig: int | str) -> bool:
        """Sends `sig` ("TERM", "SIGHUP", 15) to the main process. False if not running."""
        if not isinstance(sig, (int, str)):
            raise TypeError("signal must be a name or a number")
        status, answer = self._client._post(f"/v1/services/{self._q}/signal", {"signal": sig}, None)
        self._client._check(status, answer)
        return bool(answer["delivered"])

    def __repr__(self) -> str:
        row = self.status()
        return f"<RemoteService {self.name} {row['state']} pid={row['pid']} ports={row['ports']}>"


class Client:
    """A running stack reached through its control API (see `connect`)."""

    def __init__(self, transport: _Transport, info: dict[str, Any] | None = None) -> None:
        self._transport = transport
        self._info = dict(info or {})
        self._events: _EventStream | None = None
        stack = self._get("/v1/stack")
        self.name: str = stack["name"]
        self.pid: int = stack["pid"]
        self._names = [row["name"] for row in self.status()]

    # -- transport --------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any, timeout: float | None) -> tuple[int, Any, str]:
        conn = self._transport.connection(timeout)
        headers = self._transport.headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            res = conn.getresponse()
            raw = res.read().decode("utf-8", "replace")
            ctype = res.getheader("Content-Type", "")
        except TimeoutError:
            where = self._transport.where()
            raise Timeout(f"no answer from the stack at {where} within {timeout}s") from None
        except OSError as exc:
            raise CorralError(f"cannot reach the stack at {self._transport.where()}: {exc}") from None
        finally:
            conn.close()
        return res.status, _json_or_text(raw) if "json" in ctype else raw, ctype

    def _get(self, path: str) -> Any:
        status, body, _ = self._request("GET", path, None, _REQUEST_TIMEOUT)
        self._check(status, body)
        return body

    def _post(self, path: str, body: Any, timeout: float | None) -> tuple[int, Any]:
        # The server answers by the request's own timeout; the socket waits a little longer.
        status, answer, _ = self._request("POST", path, body, None if timeout is None else timeout + 10)
        return status, answer

    @staticmethod
    def _check(status: int, body: Any) -> None:
        if status >= 300:
            raise _error_from(status, body)

    # -- reading ----------------------------------------------------------------------------
    @property
    def socket(self) -> str | None:
        return self._transport.socket_path

    @property
    def config(self) -> str | None:
        """The config file the stack was loaded from, when its info file says."""
        return self._info.get("config")

    def status(self) -> list[dict[str, Any]]:
        """One row per service: name, state, pid, restarts, exit_code, ports, reason, ..."""
        return list(self._get("/v1/services")["services"])

    def __getitem__(self, name: str) -> RemoteService:
        if name not in self._names:
            raise KeyError(f"stack has no service {name!r} (services: {', '.join(self._names)})")
        return RemoteService(self, name)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[RemoteService]:
        return (RemoteService(self, n) for n in self._names)

    def __len__(self) -> int:
        return len(self._names)

    @property
    def services(self) -> dict[str, RemoteService]:
        return {n: RemoteService(self, n) for n in self._names}

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per service: CPU seconds, RSS bytes, open fds, processes and threads of its
        process group (sampled now), plus state, restarts and log counters."""
        return dict(self._get("/v1/metrics")["services"])

    def prometheus(self) -> str:
        status, body, _ = self._request("GET", "/metrics", None, _REQUEST_TIMEOUT)
        self._check(status, body)
        return str(body)

    def events(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        """State changes and log lines since the previous call (the first call subscribes),
        each a dict with "kind" ("state" | "log"), as `Stack.events`. Waits up to `timeout`
        seconds for at least one. A client that reads too slowly is disconnected by the
        stack (its buffer is bounded); the next call subscribes again."""
        if self._events is None or self._events.closed:
            self._events = _EventStream(self._transport, "/v1/events")
        out: list[dict[str, Any]] = []
        event = self._events.next(timeout)
        while event is not None:
            event["kind"] = event.pop("event")
            out.append(event)
            event = self._events.next(0.0)
        return out

    # -- control ----------------------------------------------------------------------------
    def start(self, *names: str, timeout: float | None = None) -> None:
        """Starts `names` (all when none), one after another; returns once they are ready."""
        for n in names or self._names:
            self[n].start(timeout)

    def stop(self, *names: str, timeout: float | None = None) -> None:
        """Stops `names`; with none, the whole stack (as `stop_all`)."""
        if not names:
            self.stop_all(timeout)
            return
        for n in names:
            self[n].stop(timeout)

    def restart(self, name: str, timeout: float | None = None) -> None:
        self[name].restart(timeout)

    def stop_all(self, timeout: float | None = None) -> None:
        """Stops every service, dependents first. The owner is told too: a detached stack's
        daemon then exits; a stack owned by a script or notebook stays open."""
        body = {} if timeout is None else {"timeout": timeout}
        status, answer = self._post("/v1/stack/stop", body, timeout)
        if status == 504:
            raise Timeout(f"services did not stop within {timeout}s")
        self._check(status, answer)

    def login_url(self) -> str:
        """A browser login link to the stack's TCP port that works once (the stack must
        serve TCP: `Stack.serve_api`); opening it sets an HttpOnly, SameSite=Strict session
        cookie in that browser."""
        status, answer = self._post("/v1/login_url", {}, _REQUEST_TIMEOUT)
        self._check(status, answer)
        return str(answer["url"])

    def close(self) -> None:
        """Closes the event stream, if one is open. The stack goes on running."""
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<corral.Client {self.name} pid={self.pid} at {self._transport.where()}>"


def connect(target: str | os.PathLike[str] | None = None, *, token: str | None = None,
            token_file: str | None = None) -> Client:
    """A client for a running stack: `target` is a config file path, a stack name, a
    socket path, or a loopback URL ("http://127.0.0.1:PORT", with `token` or `token_file`);
    None means the stack of the current directory's corral.toml / corral.yaml. Raises
    CorralError when no such stack runs."""
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        if token is None and token_file is not None:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        return Client(_Transport(None, target.rstrip("/"), token))
    info = _resolve(target)
    return Client(_Transport(info["socket"], None, None), info)
