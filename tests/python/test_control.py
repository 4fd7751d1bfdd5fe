"""The control API over its real socket: every endpoint against the OpenAPI document, the
security rules (token, Host, Origin, content type, permissions), hostile and slow clients,
event streams, discovery files, and the Python client."""

from __future__ import annotations

import copy
import http.client
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import corral
from conftest import wait_until

jsonschema = pytest.importorskip("jsonschema")

OPENAPI = json.loads((Path(corral.__file__).parent / "openapi.json").read_text())


def stacks_of(pid: int) -> list[dict[str, Any]]:
    """The running stacks of process `pid` (other test runs may share the runtime dir)."""
    return [i for i in corral.list_stacks() if i["pid"] == pid]


class Unix(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 60) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(stack: corral.Stack, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    conn = Unix(stack._served.socket)  # type: ignore[union-attr]
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=hdrs)
    res = conn.getresponse()
    raw = res.read().decode()
    conn.close()
    ctype = res.getheader("Content-Type", "")
    return res.status, json.loads(raw) if "json" in ctype else raw, ctype


# -- the OpenAPI document as JSON Schema --------------------------------------------------------
def _nullable(schema: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` is not JSON Schema: turn it into a null type."""
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items()}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_nullable(x) for x in schema]
    return schema


DOC = _nullable(copy.deepcopy(OPENAPI))


def check(schema: dict[str, Any], instance: Any) -> None:
    jsonschema.validate(instance, {**schema, "components": DOC["components"]})


def check_response(path: str, method: str, status: int, body: Any) -> None:
    """`body` must match what the document says `path` answers with `status`."""
    op = DOC["paths"][path][method.lower()]
    assert str(status) in op["responses"], f"{method} {path}: {status} is not documented"
    content = op["responses"][str(status)]["content"]
    check(content["application/json"]["schema"], body)


class SSE:
    """A Server-Sent Events response read from a raw socket, frame by frame."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.header_done = False

    def read(self, count: int, timeout: float = 60,
             until: Callable[[list[dict[str, Any]]], bool] | None = None) -> list[dict[str, Any]]:
        """The next events, once `until(events)` holds (or `count` of them came)."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not (until(events) if until else len(events) >= count):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; got {events}"
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                continue
            data = self.sock.recv(65536)
            assert data, f"stream ended; got {events}"
            self.buf += data
            if not self.header_done:
                if b"\r\n\r\n" not in self.buf:
                    continue
                head, self.buf = self.buf.split(b"\r\n\r\n", 1)
                assert head.startswith(b"HTTP/1.1 200"), head
                assert b"text/event-stream" in head
                self.header_done = True
            while b"\n\n" in self.buf:
                frame, self.buf = self.buf.split(b"\n\n", 1)
                lines = frame.decode().split("\n")
                name = [x[7:] for x in lines if x.startswith("event: ")]
                data_lines = [x[6:] for x in lines if x.startswith("data: ")]
                if data_lines:
                    events.append({"event": name[0], **json.loads("\n".join(data_lines))})
        return events


def open_stream(stack: corral.Stack, path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(stack._served.socket)  # type: ignore[union-attr]
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return sock


@pytest.fixture
def running(make_stack: Callable[..., corral.Stack], helper: str) -> corral.Stack:
    stack = make_stack("ctl")
    stack.add("db", [helper, "print", "db up", "listen", "{{port.main}}", "pause"], ports=["main"],
              ready=corral.TcpCheck(port="main"))
    stack.add("web", [helper, "print", "web up", "stderr", "web warn", "pause"], depends_on=["db"])
    stack.start(timeout=60)
    stack["web"].wait_for_log("web warn", timeout=60)  # ready at exec: its lines come after
    return stack


# -- every endpoint against the document --------------------------------------------------------
def test_every_endpoint_answers_as_documented(running: corral.Stack) -> None:
    for path, doc_path in [("/v1/stack", "/v1/stack"), ("/v1/services", "/v1/services"),
                           ("/v1/services/web", "/v1/services/{name}"), ("/v1/metrics", "/v1/metrics"),
                           ("/v1/services/web/logs", "/v1/services/{name}/logs"),
                           ("/v1/services/web/logs?tail=1", "/v1/services/{name}/logs")]:
        status, body, _ = call(running, "GET", path)
        assert status == 200, (path, body)
        check_response(doc_path, "GET", 200, body)
    _, stack_info, _ = call(running, "GET", "/v1/stack")
    assert stack_info["name"] == "ctl" and stack_info["pid"] == os.getpid() and stack_info["ready"]
    _, web, _ = call(running, "GET", "/v1/services/web")
    assert web["state"] == "ready" and web["pid"] == running["web"].pid
    _, db, _ = call(running, "GET", "/v1/services/db")
    assert db["ports"] == running["db"].ports
    _, logs, _ = call(running, "GET", "/v1/services/web/logs")
    assert [(x["stream"], x["text"]) for x in logs["lines"]] == [("stdout", "web up"), ("stderr", "web warn")]
    _, tail, _ = call(running, "GET", "/v1/services/web/logs?tail=1")
    assert [x["text"] for x in tail["lines"]] == ["web warn"]

    status, text, ctype = call(running, "GET", "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert 'corral_service_up{stack="ctl",service="web"} 1' in text
    status, doc, _ = call(running, "GET", "/v1/openapi.json")
    assert status == 200 and doc == OPENAPI

    for action in ("stop", "start", "restart"):
        status, body, _ = call(running, "POST", f"/v1/services/web/{action}", {"timeout": 60})
        check_response(f"/v1/services/{{name}}/{action}", "POST", status, body)
        assert status == 200 and body["ok"], body
        assert body["state"] == ("stopped" if action == "stop" else "ready")
    status, body, _ = call(running, "POST", "/v1/services/web/stop", {"wait": False})
    assert status == 202
    check_response("/v1/services/{name}/stop", "POST", 202, body)
    running["web"].wait("stopped", timeout=60)
    call(running, "POST", "/v1/services/web/start", {})

    status, body, _ = call(running, "POST", "/v1/services/web/wait", {"state": "ready", "timeout": 60})
    assert status == 200
    check_response("/v1/services/{name}/wait", "POST", 200, body)
    status, body, _ = call(running, "POST", "/v1/services/web/wait_log", {"regex": "w.b u", "timeout": 60})
    assert status == 200 and body["line"] == "web up"
    check_response("/v1/services/{name}/wait_log", "POST", 200, body)
    status, body, _ = call(running, "POST", "/v1/services/web/wait_log", {"regex": "never", "timeout": 0.2})
    assert status == 504
    check_response("/v1/services/{name}/wait_log", "POST", 504, body)

    pid = running["web"].pid
    status, body, _ = call(running, "POST", "/v1/services/web/signal", {"signal": "TERM"})
    assert status == 200 and body == {"delivered": True}
    check_response("/v1/services/{name}/signal", "POST", 200, body)
    wait_until(lambda: running["web"].pid != pid, what="web to exit on TERM")

    status, body, _ = call(running, "POST", "/v1/stack/stop", {"timeout": 60})
    assert status == 200 and body["ok"]
    check_response("/v1/stack/stop", "POST", 200, body)
    assert {r["state"] for r in running.status()} <= {"stopped", "exited"}
    assert running._served.server.stop_requests == 1  # type: ignore[union-attr]
    assert running._wait_stop_request(0)


def test_the_document_and_the_server_know_the_same_routes(running: corral.Stack) -> None:
    # Each documented (method, path) reaches a handler (never 404/405), and a method the
    # document does not list for a path is refused with 405.
    paths = sorted(OPENAPI["paths"], key=lambda p: p == "/v1/stack/stop")  # the stop last
    for path in paths:
        concrete = path.replace("{name}", "web").replace("{file}", "app.js")
        for method in ("get", "post"):
            documented = method in OPENAPI["paths"][path]
            if documented and method == "get" and path in ("/v1/events",):
                continue  # a stream: tested below
            status, _, _ = call(running, method.upper(), concrete, {} if method == "post" else None)
            if documented:
                assert status not in (404, 405), (method, path, status)
            else:
                assert status == 405, (method, path, status)


def test_errors_are_json_with_the_documented_status(running: corral.Stack) -> None:
    cases = [
        ("GET", "/v1/services/nope", None, {}, 404),
        ("POST", "/v1/services/nope/start", {}, {}, 404),
        ("GET", "/v1/nothing", None, {}, 404),
        ("GET", "/v1/services/web/start", None, {}, 405),
        ("POST", "/v1/services/web", {}, {}, 405),
        ("GET", "/v1/services/web/logs?tail=x", None, {}, 400),
        ("POST", "/v1/services/web/signal", {"signal": "NOPE"}, {}, 400),
        ("POST", "/v1/services/web/start", b"[1, 2]", {}, 400),
        ("POST", "/v1/services/web/start", b"{not json", {}, 400),
        ("POST", "/v1/services/web/start", {"timeout": -1}, {}, 400),
        ("POST", "/v1/services/web/wait_log", {"regex": "("}, {}, 400),
    ]
    for method, path, body, headers, want in cases:
        status, answer, ctype = call(running, method, path, body, headers)
        assert status == want, (method, path, answer)
        assert ctype == "application/json" and isinstance(answer["error"], str)
        check({"$ref": "#/components/schemas/Error"}, answer)
    assert running["web"].state == "ready"  # none of it disturbed the stack


def test_a_failed_start_names_the_service_reason_and_lines(make_stack: Callable[..., corral.Stack],
                                                          helper: str) -> None:
    stack = make_stack("ctlfail")
    stack.add("ok", [helper, "pause"])
    stack.add("bad", [helper, "stderr", "FATAL: no config", "exit", "3"], restart="no",
              ready=corral.TcpCheck(5))
    stack.start("ok", timeout=60)
    status, body, _ = call(stack, "POST", "/v1/services/bad/start", {"timeout": 60})
    assert status == 409 and not body["ok"] and body["service"] == "bad"
    assert [x["text"] for x in body["logs"]] == ["FATAL: no config"]
    check_response("/v1/services/{name}/start", "POST", 409, body)
    with pytest.raises(corral.StartError) as err:
        corral.connect("ctlfail")["bad"].start(timeout=60)
    assert err.value.service == "bad" and err.value.log_tail[-1] == "FATAL: no config"


# -- events ------------------------------------------------------------------------------------
def test_events_stream_state_changes_and_log_lines(running: corral.Stack, helper: str) -> None:
    sock = open_stream(running, "/v1/events")
    try:
        # The stream is live once its header and first comment arrived; then restart web.
        stream = SSE(sock)
        stream.read(0, until=lambda _: stream.header_done)
        running.restart("web", timeout=60)
        events = stream.read(0, until=lambda ev: any(
            e["event"] == "log" and e["text"] == "web up" for e in ev) and any(
            e["event"] == "state" and e["state"] == "ready" for e in ev))
    finally:
        sock.close()
    states = [e["state"] for e in events if e["event"] == "state" and e["service"] == "web"]
    assert states[:2] == ["stopping", "stopped"] and states[-1] == "ready"
    content = DOC["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
    events_doc = content["text/event-stream"]["x-events"]
    for e in events:
        check(events_doc[e["event"]], {k: v for k, v in e.items() if k != "event"})


def test_log_follow_sends_the_tail_then_new_lines(running: corral.Stack) -> None:
    sock = open_stream(running, "/v1/services/web/logs?follow=1&tail=1")
    try:
        stream = SSE(sock)
        first = stream.read(1)
        assert [e["text"] for e in first] == ["web warn"]
        running.restart("web", timeout=60)
        later = stream.read(2)
    finally:
        sock.close()
    assert [e["text"] for e in later] == ["web up", "web warn"]
    assert all(e["event"] == "log" for e in later)
    client = corral.connect(running.api["socket"])  # by socket: another worker may run a "ctl" too
    follow = client["web"].follow(tail=2, timeout=30)
    assert [next(follow), next(follow)] == ["web up", "web warn"]
    follow.close()


def test_a_slow_stream_client_is_disconnected_when_its_buffer_overflows(
        make_stack: Callable[..., corral.Stack], helper: str) -> None:
    stack = make_stack("ctlflood")
    stack.add("chatty", [helper, "sleep", "0.5", "flood", "40000000", "pause"])
    sock = None
    try:
        stack.start(timeout=60)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(stack._served.socket)  # type: ignore[union-attr]
        sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # Nobody reads while 40 MB (ten times the per-client budget) go by: the engine
        # keeps reading the pipe, and another client is served meanwhile.
        wait_until(lambda: stack["chatty"].status()["log_lines"] >= 400_000, timeout=120,
                   what="the flood to be captured")
        assert corral.connect("ctlflood")["chatty"].state == "ready"
        # Then the reader finds its stream cut short: far less than was printed, then EOF.
        sock.settimeout(60)
        received = 0
        while data := sock.recv(1 << 20):
            received += len(data)
        assert received < 20_000_000
        started = time.monotonic()
        stack.close(timeout=60)
        assert time.monotonic() - started < 30
    finally:
        if sock is not None:
            sock.close()


# -- hostile and slow requests -----------------------------------------------------------------
def raw_exchange(path: str, payload: bytes, timeout: float = 60) -> bytes:
    """Sends `payload`, returns whatever comes back before the server closes (or resets)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    out = b""
    try:
        sock.sendall(payload)
        while data := sock.recv(65536):
            out += data
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return out


def test_malformed_huge_and_slow_requests(running: corral.Stack) -> None:
    path = running._served.socket  # type: ignore[union-attr]
    assert raw_exchange(path, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    bad_header = b"GET /v1/stack HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"
    assert raw_exchange(path, bad_header).startswith(b"HTTP/1.1 400")
    huge_header = b"GET /v1/stack HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    assert raw_exchange(path, huge_header)[:12] in (b"HTTP/1.1 431", b"")
    body = b"{" + b" " * (10 << 20) + b"}"
    huge_body = (b"POST /v1/services/web/start HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body)) + body
    assert raw_exchange(path, huge_body)[:12] in (b"HTTP/1.1 413", b"")
    assert raw_exchange(path, b"GET /v1/%zz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 400")

    # A client that sends half a request and stalls holds only its own connection.
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(path)
    stalled.sendall(b"GET /v1/stack HTTP/1.1\r\nHost: loc")
    try:
        started = time.monotonic()
        status, _, _ = call(running, "GET", "/v1/services/web")
        assert status == 200 and time.monotonic() - started < 5
        assert running["web"].state == "ready"
    finally:
        stalled.close()


def test_a_stalled_request_is_dropped_after_the_read_deadline(running: corral.Stack) -> None:
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(running._served.socket)  # type: ignore[union-attr]
    stalled.sendall(b"GET /v1/stack HTTP/1.1\r\n")
    stalled.settimeout(60)  # the server's deadline is 10 s
    try:
        assert stalled.recv(100) == b""
    finally:
        stalled.close()


def test_post_needs_a_json_content_type(running: corral.Stack) -> None:
    # A cross-site form or fetch with text/plain is a "simple request": no preflight, so
    # the server itself must refuse it.
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _, _ = call(running, "POST", "/v1/services/web/stop", b"{}", {"Content-Type": ctype})
        assert status == 415, ctype
    status, _, _ = call(running, "POST", "/v1/stack/stop", b"", {"Content-Type": "text/plain;charset=UTF-8"})
    assert status == 415
    status, _, _ = call(running, "POST", "/v1/services/web/stop", b"", {"Content-Type": ""})
    assert status == 415
    assert running["web"].state == "ready"


def test_foreign_origin_is_refused_on_the_socket_too(running: corral.Stack) -> None:
    status, _, _ = call(running, "GET", "/v1/stack", headers={"Origin": "https://evil.example"})
    assert status == 403
    status, _, _ = call(running, "GET", "/v1/stack", headers={"Origin": "http://localhost:8000"})
    assert status == 200


# -- permissions and discovery -----------------------------------------------------------------
def test_socket_is_0600_and_its_directory_0700(running: corral.Stack) -> None:
    served = running._served
    assert served is not None
    mode = os.lstat(served.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(served.socket)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.dirname(os.path.dirname(served.socket))).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(served.info).st_mode) == 0o600
    assert len(served.socket) < 108


def test_socket_and_info_file_go_with_the_stack(make_stack: Callable[..., corral.Stack], helper: str) -> None:
    stack = make_stack("ctlgone")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=60)
    served = stack._served
    assert served is not None and os.path.exists(served.socket) and os.path.exists(served.info)
    info = stacks_of(os.getpid())
    assert [(i["name"], i["pid"], i["socket"]) for i in info] == [("ctlgone", os.getpid(), served.socket)]
    assert stack.api == {"socket": served.socket, "url": None, "token_file": None, "info": served.info}
    stack.close(timeout=60)
    assert stack.api is None
    assert not os.path.exists(served.socket) and not os.path.exists(served.info)
    assert stacks_of(os.getpid()) == []


def test_a_daemon_waits_for_a_stop_request(running: corral.Stack) -> None:
    assert not running._wait_stop_request(0.05)
    import threading

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            corral.connect(running.api["socket"]).stop_all(timeout=60)
        except BaseException as exc:  # seen below, not lost in the thread
            errors.append(exc)

    asked = threading.Thread(target=ask)
    asked.start()
    try:
        assert running._wait_stop_request(60)  # told as soon as the request arrives
    finally:
        asked.join(timeout=90)
    assert not asked.is_alive() and not errors, errors
    # stop_all() returned once the stop was done: every service is down by now.
    assert {r["state"] for r in running.status()} <= {"stopped", "exited"}


def test_a_login_link_needs_tcp(running: corral.Stack) -> None:
    status, body, _ = call(running, "POST", "/v1/login_url", {})
    assert status == 409
    check_response("/v1/login_url", "POST", 409, body)
    status, _, _ = call(running, "GET", "/v1/login?nonce=x")
    assert status == 403


def test_api_false_serves_nothing(helper: str) -> None:
    stack = corral.Stack(name="ctloff", api=False)
    stack.add("a", [helper, "pause"])
    with stack:
        assert stack._served is None
        assert stacks_of(os.getpid()) == []


def test_an_owner_killed_with_sigkill_is_pruned_by_the_lister(helper: str) -> None:
    code = (
        "import corral, sys\n"
        "s = corral.Stack(name='victim')\n"
        f"s.add('a', [{helper!r}, 'pause'])\n"
        "s.start(timeout=60)\n"
        "print(s._served.info, s._served.socket, flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as owner:
        try:
            assert owner.stdout is not None
            info, sock = owner.stdout.readline().split()
            assert [i["name"] for i in stacks_of(owner.pid)] == ["victim"]
            assert corral.connect("victim")["a"].state == "ready"
        finally:
            owner.send_signal(signal.SIGKILL)
            owner.wait(timeout=60)
    assert os.path.exists(info)  # nobody removed it: the owner died at once
    assert stacks_of(owner.pid) == []
    assert not os.path.exists(info) and not os.path.exists(sock)
    with pytest.raises(corral.CorralError, match="no running stack"):
        corral.connect("victim")


def test_a_second_owner_of_the_same_name_gets_a_socket_of_its_own(helper: str) -> None:
    first = corral.Stack(name="twin")
    first.add("a", [helper, "pause"])
    second = corral.Stack(name="twin")  # another process in real life: one name per process here
    second.add("a", [helper, "pause"])
    import corral._engine as engine_module

    with first:
        engine_module._names.clear()  # as if `second` ran in a process of its own
        with second:
            assert first._served and second._served
            assert first._served.socket != second._served.socket
            assert corral.connect("twin").pid == os.getpid()
            assert len(stacks_of(os.getpid())) == 2


# -- TCP ---------------------------------------------------------------------------------------
def tcp_exchange(url: str, method: str, path: str, headers: dict[str, str],
                 body: bytes | None = None) -> http.client.HTTPResponse:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request(method, path, body=body, headers=headers)
    res = conn.getresponse()
    res.read()
    conn.close()
    return res


def tcp_call(url: str, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
    return tcp_exchange(url, method, path, headers, body).status


def test_tcp_needs_the_token_a_loopback_host_and_origin(make_stack: Callable[..., corral.Stack],
                                                        helper: str) -> None:
    stack = make_stack("ctltcp")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=60)
    where = stack.serve_api()
    url, token_file = where["url"], where["token_file"]
    assert url and token_file and url.startswith("http://127.0.0.1:")
    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    token = Path(token_file).read_text().strip()
    assert len(token) == 32  # 128 bits
    port = url.rsplit(":", 1)[1]
    good = {"Host": f"127.0.0.1:{port}", "Authorization": f"Bearer {token}"}
    assert tcp_call(url, "GET", "/v1/stack", good) == 200
    assert tcp_call(url, "GET", "/v1/stack", {**good, "Host": f"localhost:{port}"}) == 200
    assert tcp_call(url, "GET", "/v1/stack", {"Host": good["Host"]}) == 401
    assert tcp_call(url, "GET", "/v1/stack", {**good, "Authorization": "Bearer " + "0" * 32}) == 401
    assert tcp_call(url, "GET", "/v1/stack", {**good, "Authorization": f"Bearer {token[:-1]}"}) == 401
    assert tcp_call(url, "GET", "/v1/stack", {**good, "Host": f"evil.example:{port}"}) == 403
    assert tcp_call(url, "GET", "/v1/stack", {**good, "Origin": "http://evil.example"}) == 403
    assert tcp_call(url, "GET", "/v1/stack", {**good, "Origin": f"http://localhost:{port}"}) == 200
    assert tcp_call(url, "POST", "/v1/services/a/stop", {**good, "Content-Type": "text/plain"}, b"{}") == 415
    assert stack["a"].state == "ready"
    client = corral.connect(url, token_file=token_file)
    assert client["a"].state == "ready"

    # A browser logs in once through a one-time link and then holds a session cookie.
    link = corral.connect("ctltcp").login_url()
    assert link.startswith(url + "/v1/login?nonce=")
    path = link.removeprefix(url)
    host = {"Host": f"localhost:{port}"}
    assert tcp_call(url, "GET", path, {"Host": f"evil.example:{port}"}) == 403
    res = tcp_exchange(url, "GET", path, host)
    assert res.status == 303 and res.getheader("Location") == "/"
    cookie = res.getheader("Set-Cookie") or ""
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";")[0]
    assert token not in session
    assert tcp_call(url, "GET", path, host) == 403  # it works once
    with_cookie = {**host, "Cookie": session}
    assert tcp_call(url, "GET", "/v1/stack", with_cookie) == 200
    assert tcp_call(url, "GET", "/v1/stack", {**host, "Cookie": "corral_session=" + "0" * 32}) == 401
    plain = {**with_cookie, "Content-Type": "text/plain"}
    assert tcp_call(url, "POST", "/v1/services/a/stop", plain, b"{}") == 415
    assert tcp_call(url, "POST", "/v1/services/a/stop", {**with_cookie, "Content-Type": "application/json",
                                                         "Origin": "http://evil.example"}, b"{}") == 403
    assert tcp_call(url, "POST", "/v1/services/a/start", {**with_cookie, "Content-Type": "application/json",
                                                          "Origin": f"http://localhost:{port}"}, b"{}") == 200
    client["a"].restart(timeout=60)
    assert stack["a"].restarts == 0 and stack["a"].state == "ready"
    stack.close(timeout=60)
    assert not os.path.exists(token_file)


def test_the_token_never_reaches_a_service(helper: str) -> None:
    stack = corral.Stack(name="ctltok", api_tcp=True)
    stack.add("a", [helper, "pause"])
    with stack:
        assert stack._served and stack._served.token_file
        token = Path(stack._served.token_file).read_text().strip().encode()
        pid = stack["a"].pid
        assert token not in Path(f"/proc/{pid}/environ").read_bytes()
        assert token not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert token not in Path(f"/proc/{os.getpid()}/cmdline").read_bytes()


# -- the client --------------------------------------------------------------------------------
def test_connect_by_config_file_name_and_directory(tmp_path: Path, helper: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "corral.toml"
    config.write_text(f'name = "ctlfile"\n[services.a]\ncommand = ["{helper}", "print", "hi", "pause"]\n')
    stack = corral.Stack.load(config)
    with stack:
        by_file = corral.connect(config)
        assert by_file.name == "ctlfile" and by_file.config == os.path.realpath(config)
        (tmp_path / "link.toml").symlink_to(config)  # the same file by another name
        assert corral.connect(tmp_path / "link.toml").socket == by_file.socket
        assert corral.connect("ctlfile").pid == os.getpid()
        monkeypatch.chdir(tmp_path)
        here = corral.connect()
        assert [r["name"] for r in here.status()] == ["a"]
        svc = here["a"]
        assert svc.wait_for_log("h.", timeout=60) == "hi" and svc.logs() == ["hi"]
        assert svc.pid == stack["a"].pid and svc.ports == {} and svc.restarts == 0
        with pytest.raises(KeyError):
            here["nope"]
        with pytest.raises(corral.Timeout):
            svc.wait_for_log("never", timeout=0.2)
        old = svc.pid
        assert svc.signal("TERM") is True
        wait_until(lambda: stack["a"].pid not in (None, old) or stack["a"].state != "ready",
                   what="a to exit on TERM")
        svc.start(timeout=60) if svc.state != "ready" else None
        here.stop_all(timeout=60)
        assert {r["state"] for r in here.status()} <= {"stopped", "exited"}
        here.start(timeout=60)
        assert svc.state == "ready"
        assert "corral_service_up" in here.prometheus()
        assert here.metrics()["a"]["state"] == "ready"
        first = here.events(0.0)
        assert isinstance(first, list)
        svc.restart(timeout=60)
        seen: list[dict[str, Any]] = []
        wait_until(lambda: seen.extend(here.events(0.1)) or any(
            e["kind"] == "state" and e["state"] == "ready" for e in seen), timeout=60, what="ready event")
        here.close()


def test_connect_to_nothing_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(corral.CorralError, match=r"no corral\.toml"):
        corral.connect()
    with pytest.raises(corral.CorralError, match="no running stack"):
        corral.connect("absent")


def test_a_forked_child_leaves_the_parents_server_alone(running: corral.Stack) -> None:
    served = running._served
    assert served is not None
    pid = os.fork()
    if pid == 0:  # the child: stopping its copy must neither hang nor touch the socket
        try:
            served.server.stop()
            served.close()
            running.close()
        finally:
            os._exit(0)
    done: list[tuple[int, int]] = []
    wait_until(lambda: done.append(os.waitpid(pid, os.WNOHANG)) or done[-1][0] != 0, timeout=60,
               what="the child to exit")
    assert os.waitstatus_to_exitcode(done[-1][1]) == 0
    assert os.path.exists(served.socket) and os.path.exists(served.info)
    status, _, _ = call(running, "GET", "/v1/stack")
    assert status == 200


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


@needs_root
def test_a_peer_of_another_uid_is_dropped_even_when_the_socket_lets_it_in(running: corral.Stack,
                                                                         tmp_path: Path) -> None:
    # The 0700 directory and the 0600 socket keep other users out first; this opens both
    # on purpose to show that the peer's uid (SO_PEERCRED) is checked as well.
    directory = tempfile.mkdtemp(prefix="crlp")
    try:
        os.chmod(directory, 0o711)
        path = os.path.join(directory, "s.sock")
        server = corral._core.ControlServer(running._handle, path)
        try:
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            os.chmod(path, 0o666)
            code = (
                "import os, socket, sys\n"
                "os.setgid(65534); os.setuid(65534)\n"
                "s = socket.socket(socket.AF_UNIX); s.settimeout(60); s.connect(sys.argv[1])\n"
                "try:\n"
                "    s.sendall(b'GET /v1/stack HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
                "    data = s.recv(100)\n"
                "except (BrokenPipeError, ConnectionResetError):  # closed even sooner\n"
                "    data = b''\n"
                "print(repr(data))\n"
            )
            out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                                 timeout=120, check=True)
            assert out.stdout.strip() == "b''"
            mine = raw_exchange(path, b"GET /v1/stack HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert mine.startswith(b"HTTP/1.1 200")
        finally:
            server.stop()
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@needs_root
def test_an_api_directory_owned_by_another_user_is_refused(helper: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tempfile.mkdtemp(prefix="crlo")
    try:
        os.mkdir(os.path.join(directory, "api"), 0o700)
        os.chown(os.path.join(directory, "api"), 65534, 65534)
        monkeypatch.setenv("CORRAL_RUNTIME_DIR", directory)
        stack = corral.Stack(name="ctlowner")
        stack.add("a", [helper, "pause"])
        with pytest.warns(RuntimeWarning, match="owned by uid 65534"):
            stack.start(timeout=60)
        try:
            assert stack._served is None and stack["a"].state == "ready"  # it runs, without the API
            assert os.listdir(os.path.join(directory, "api")) == []
        finally:
            stack.close(timeout=60)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
