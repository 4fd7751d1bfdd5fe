"""Resources: typed pools claimed machine-wide (issue 7), with real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import corral
from conftest import wait_until
from corral import ConfigError, StartError


def _uid() -> str:
    return f"{os.getpid()}-{time.monotonic_ns() % 10**9}"


@pytest.fixture(autouse=True, scope="module")
def _remove_own_claim_files() -> Iterator[None]:
    # The claim files of ranges and lists are kept for reuse; the types these tests invent
    # (their names carry this pid) would pile up run after run. Not the built-in ones.
    yield
    claims = os.path.join(corral._core.runtime_dir(), "claims")
    marker = f"-{os.getpid()}-"
    for name in os.listdir(claims):
        kind = name.split("@", 1)[0]
        if marker in kind and not kind.startswith("port"):
            os.unlink(os.path.join(claims, name))


def _holders(type_: str) -> list[dict[str, object]]:
    return [c for c in corral.claims() if c["type"] == type_]


def test_gpu_like_list_with_env_and_templates(make_stack, tmp_path: Path) -> None:
    gpu = f"gpu-{_uid()}"
    stack = make_stack(f"res-{_uid()}")
    stack.resource_type(gpu, values=["0", "1", "2", "3"], env="MY_DEVICES")
    env_name = "CORRAL_RES_" + gpu.upper().replace("-", "_")
    train = stack.add(
        "train",
        f'echo "devices=$MY_DEVICES all={{{{res.{gpu}}}}} first={{{{res.{gpu}.0}}}} var=${env_name}"; '
        "exec sleep 600",
        resources={gpu: 2},
    )
    stack.start(timeout=30)
    values = train.resources[gpu]
    assert len(values) == 2 and len(set(values)) == 2 and set(values) <= {"0", "1", "2", "3"}
    joined = ",".join(values)
    line = train.wait_for_log("devices=", timeout=30)
    assert line == f"devices={joined} all={joined} first={values[0]} var={joined}"
    row = next(r for r in stack.status() if r["name"] == "train")
    assert row["resources"] == {gpu: values}
    mine = {(c["value"], c["service"], c["pid"]) for c in _holders(gpu)}
    assert mine == {(v, "train", os.getpid()) for v in values}
    # Released on stop: nothing of it is claimed any more.
    stack.stop("train", timeout=30)
    assert _holders(gpu) == []
    assert train.resources == {}


def test_explicit_value_taken_is_a_start_error_naming_the_holder(make_stack) -> None:
    kind = f"dbfile-{_uid()}"
    first = make_stack(f"holder-{_uid()}")
    first.add("db", "exec sleep 600", resources={kind: "/srv/dev.db"})
    first.start(timeout=30)
    second = make_stack(f"other-{_uid()}")
    second.add("db2", "exec sleep 600", resources={kind: "/srv/dev.db"})
    with pytest.raises(StartError) as info:
        second.start(timeout=30)
    message = str(info.value)
    assert f"stack '{first.name}', service 'db', pid {os.getpid()}" in message
    assert second["db2"].state == "failed"
    # Once the holder stops, the value is free.
    first.stop(timeout=30)
    second.start(timeout=30)
    assert second["db2"].resources == {kind: ["/srv/dev.db"]}


def test_exhausted_pool_fails_listing_holders_or_waits_until_a_holder_stops(make_stack) -> None:
    kind = f"seat-{_uid()}"
    a = make_stack(f"a-{_uid()}")
    a.resource_type(kind, values=["only"])
    a.add("holder", "exec sleep 600", resources={kind: 1})
    a.start(timeout=30)
    b = make_stack(f"b-{_uid()}")
    b.resource_type(kind, values=["only"])
    b.add("eager", "exec sleep 600", resources={kind: 1})
    with pytest.raises(StartError) as info:
        b.start(timeout=30)
    assert "only (stack" in str(info.value) and "service 'holder'" in str(info.value)
    c = make_stack(f"c-{_uid()}")
    c.resource_type(kind, values=["only"])
    patient = c.add("patient", "exec sleep 600", resources={kind: {"count": 1, "wait": True}})
    done = threading.Event()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            c.start(timeout=60)
        except BaseException as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=start, daemon=True).start()
    wait_until(lambda: patient.reason == f"waiting for {kind}", 30, "the pending reason")
    assert patient.state == "pending" and patient.reason == f"waiting for {kind}"
    assert not done.is_set()
    a.stop(timeout=30)
    assert done.wait(60) and not errors, errors
    assert patient.state == "ready" and patient.resources == {kind: ["only"]}


def test_a_given_value_with_wait_waits_for_its_holder(make_stack) -> None:
    kind = f"file-{_uid()}"
    a = make_stack(f"ga-{_uid()}")
    a.add("holder", "exec sleep 600", resources={kind: "/data/x"})
    a.start(timeout=30)
    b = make_stack(f"gb-{_uid()}")
    patient = b.add("patient", "exec sleep 600", resources={kind: {"value": "/data/x", "wait": True}})
    done = threading.Event()
    threading.Thread(target=lambda: (b.start(timeout=60), done.set()), daemon=True).start()
    wait_until(lambda: patient.reason == f"waiting for {kind}", 30, "the pending reason")
    assert not done.is_set()
    a.stop(timeout=30)
    assert done.wait(60)
    assert patient.state == "ready" and patient.resources == {kind: ["/data/x"]}


def test_custom_type_with_a_check_command(make_stack, tmp_path: Path) -> None:
    kind = f"slot-{_uid()}"
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "7").touch()
    stack = make_stack(f"chk-{_uid()}")
    stack.resource_type(kind, range=(3, 9), check=f"test -e {ok}/{{{{value}}}}")
    svc = stack.add("s", f"echo got={{{{res.{kind}}}}}; exec sleep 600", resources={kind: 1})
    stack.start(timeout=30)
    assert svc.resources == {kind: ["7"]}
    assert svc.wait_for_log("got=", timeout=30) == "got=7"


def test_value_held_by_a_foreign_listener_is_skipped(make_stack) -> None:
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port + 1))
            except OSError:
                pytest.skip("the neighbouring port is taken on this machine")
        # The built-in tcpport type narrowed to two ports, the first held by a program
        # outside corral: the bind probe skips it, whatever the scan's random start.
        stack = make_stack(f"fl-{_uid()}")
        stack.resource_type("tcpport", range=(port, port + 1))
        svc = stack.add("s", "exec sleep 600", resources={"tcpport": 1})
        for _ in range(4):  # each start claims anew, from another random start
            stack.start(timeout=30)
            assert svc.resources == {"tcpport": [str(port + 1)]}
            stack.stop(timeout=30)
    finally:
        listener.close()


def test_tcpport_range_probe_skips_a_listener(make_stack) -> None:
    # tcpport is a built-in range type probed by a bind test; a pinned claim of a port
    # a foreign program listens on fails with a clear message.
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stack = make_stack(f"tp-{_uid()}")
    stack.add("s", "exec sleep 600", resources={"tcpport": {"value": port}})
    try:
        with pytest.raises(StartError, match=f"port {port} is in use by a program outside corral"):
            stack.start(timeout=30)
    finally:
        listener.close()


def test_pinned_port_taken_names_the_holder(make_stack) -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
    first = make_stack(f"pin1-{_uid()}")
    first.add("web", "exec sleep 600", ports={"http": port})
    first.start(timeout=30)
    assert first["web"].ports == {"http": port}
    second = make_stack(f"pin2-{_uid()}")
    second.add("web2", "exec sleep 600", ports={"http": port})
    with pytest.raises(StartError) as info:
        second.start(timeout=30)
    assert f"port {port} is taken by stack '{first.name}', service 'web'" in str(info.value)


def test_template_instantiated_three_times_and_replicas_get_distinct_values(make_stack) -> None:
    kind = f"vnc-{_uid()}"
    stack = make_stack(f"tpl-{_uid()}")
    stack.resource_type(kind, range=(0, 99))
    vm = stack.template("vm", f"echo {{{{vars.label}}}} vnc={{{{res.{kind}}}}}; exec sleep 600",
                        resources={kind: 1}, vars={"label": "default"})
    for i in range(3):
        stack.add_from(vm, f"vm{i}", vars={"label": f"L{i}"})
    stack.add("rep", "exec sleep 600", resources={kind: 1}, replicas=3)
    stack.start(timeout=60)
    seen = []
    for i in range(3):
        line = stack[f"vm{i}"].wait_for_log("vnc=", timeout=30)
        assert line.startswith(f"L{i} vnc=")
        seen.append(stack[f"vm{i}"].resources[kind][0])
    for i in range(1, 4):
        seen.append(stack[f"rep-{i}"].resources[kind][0])
    assert len(set(seen)) == 6


def test_claims_kept_across_restarts(make_stack) -> None:
    kind = f"keep-{_uid()}"
    stack = make_stack(f"rs-{_uid()}")
    stack.resource_type(kind, range=(0, 999))
    svc = stack.add("crashy", "exec sleep 600", resources={kind: 1}, restart="always")
    stack.start(timeout=30)
    before = svc.resources
    svc.signal("KILL")
    wait_until(lambda: svc.restarts >= 1, 30, "a restart")
    svc.wait("ready", timeout=30)
    assert svc.restarts >= 1 and svc.resources == before


def test_a_sigkilled_owners_claims_are_free_at_once(tmp_path: Path) -> None:
    kind = f"own-{_uid()}"
    script = textwrap.dedent(f"""
        import sys, corral
        s = corral.Stack("victim-{_uid()}")
        s.add("x", "exec sleep 600", resources={{"{kind}": "v1"}})
        s.start(timeout=30)
        print("ready", flush=True)
        sys.stdin.read()
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            held = _holders(kind)
            assert [(c["value"], c["pid"]) for c in held] == [("v1", child.pid)]
            child.send_signal(signal.SIGKILL)
            child.wait(30)
            assert _holders(kind) == []
        finally:
            if child.poll() is None:
                child.kill()


def test_two_processes_and_two_threads_never_share_a_value(tmp_path: Path) -> None:
    kind = f"race-{_uid()}"
    script = textwrap.dedent(f"""
        import json, sys, threading, corral
        stacks, out = [], []
        def run(t):
            s = corral.Stack(f"race-{{sys.argv[1]}}-{{t}}")
            s.resource_type("{kind}", range=(0, 99))
            for i in range(10):
                s.add(f"s{{i}}", "exec sleep 600", resources={{"{kind}": 2}})
            s.start(timeout=60)
            stacks.append(s)
            out.extend(v for svc in s for v in svc.resources["{kind}"])
        ts = [threading.Thread(target=run, args=(t,)) for t in range(2)]
        for t in ts: t.start()
        for t in ts: t.join()
        print(json.dumps(out), flush=True)
        sys.stdin.read()
    """)
    for _round in range(3):
        kids = [subprocess.Popen([sys.executable, "-c", script, str(k)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for k in range(2)]
        try:
            values: list[str] = []
            for kid in kids:
                assert kid.stdout is not None
                values.extend(json.loads(kid.stdout.readline()))
            assert len(values) == 2 * 2 * 10 * 2
            assert len(set(values)) == len(values)
        finally:
            for kid in kids:
                assert kid.stdin is not None and kid.stdout is not None
                kid.stdin.close()
                kid.wait(60)
                kid.stdout.close()


@pytest.mark.parametrize(("options", "key", "text"), [
    ({"resources": 3}, "resources", "expected a table of resource names"),
    ({"resources": {"gpu": 0}}, "resources.gpu", ">= 1"),
    ({"resources": {"gpu": True}}, "resources.gpu", "expected a count"),
    ({"resources": {"gpu": {"count": 1, "wiat": True}}}, "resources.gpu", "unknown key 'wiat'"),
    ({"resources": {"gpu": {"wait": "yes"}}}, "resources.gpu.wait", "true or false"),
    ({"resources": {"bad.name": 1}}, "resources", "invalid resource name"),
    ({"resources": {"gpu": []}}, "resources.gpu", "empty list"),
    ({"ports": {"http": 70000}}, "ports.http", "<= 65,535"),
    ({"ports": ["http"], "listen": ["web"]}, "listen", "not a port of the service"),
])
def test_bad_resource_specs_are_config_errors_naming_the_key(make_stack, options, key, text) -> None:
    stack = make_stack()
    with pytest.raises(ConfigError) as info:
        stack.add("svc", "true", **options)
    assert info.value.key == key, str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize(("kwargs", "key", "text"), [
    ({"range": (5, 1)}, "resources.t.range", "above the last"),
    ({"range": (1, 2), "values": ["a"]}, "resources.t.values", "either range or values"),
    ({"values": []}, "resources.t.values", "non-empty list"),
    ({"env": "A-B"}, "resources.t.env", "invalid variable name"),
    ({"timeout": -1}, "resources.t.timeout", "expected"),
])
def test_bad_resource_types_are_config_errors_naming_the_key(make_stack, kwargs, key, text) -> None:
    with pytest.raises(ConfigError) as info:
        make_stack().resource_type("t", **kwargs)
    assert info.value.key == key, str(info.value)
    assert text in str(info.value)


def test_pool_less_count_is_a_config_error(make_stack) -> None:
    stack = make_stack()
    stack.add("svc", "true", resources={"undeclared": 2})
    with pytest.raises(ConfigError, match="no pool of values"):
        stack.start(timeout=10)


def test_config_file_resources_and_templates(tmp_path: Path) -> None:
    kind = f"gpu-{os.getpid()}-f"
    config = tmp_path / "corral.toml"
    config.write_text(textwrap.dedent(f"""
        name = "file-{_uid()}"
        [resources.{kind}]
        values = ["0", "1", "2"]
        env = "DEVS"

        [templates.worker]
        command = "echo {{{{vars.who}}}} $DEVS; exec sleep 600"
        resources = {{ {kind} = 1 }}
        vars = {{ who = "nobody" }}

        [services.w1]
        template = "worker"
        vars = {{ who = "alice" }}

        [services.w2]
        template = "worker"
    """))
    stack = corral.Stack.load(config)
    try:
        stack.start(timeout=30)
        a, b = stack["w1"].resources[kind], stack["w2"].resources[kind]
        assert a != b
        assert stack["w1"].wait_for_log("alice", timeout=30) == f"alice {a[0]}"
        assert stack["w2"].wait_for_log("nobody", timeout=30) == f"nobody {b[0]}"
    finally:
        stack.close(timeout=60)


def test_config_file_bad_resource_type_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "corral.toml"
    config.write_text('[resources.gpu]\nrange = [3, 1]\n[services.a]\ncommand = "true"\n')
    with pytest.raises(ConfigError) as info:
        corral.Stack.load(config)
    assert info.value.key == "resources.gpu.range"
    config.write_text('[services.a]\ntemplate = "nope"\n')
    with pytest.raises(ConfigError, match="unknown template 'nope'"):
        corral.Stack.load(config)


_SOCKET_SERVER = """
import os, socket, sys
assert os.environ["LISTEN_PID"] == str(os.getpid()), os.environ.get("LISTEN_PID")
assert os.environ["LISTEN_FDS"] == "1" and os.environ["LISTEN_FDNAMES"] == "http"
server = socket.socket(fileno=3)
print("serving", flush=True)
while True:
    conn, _ = server.accept()
    data = conn.recv(100)
    conn.sendall(f"{os.getpid()}".encode())
    conn.close()
    if data.startswith(b"quit"):
        sys.exit(3)  # crash: the next run takes the same listening socket
"""


def _ask(port: int, what: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        c.sendall(what)
        return int(c.recv(100).decode())


def test_inherited_listen_socket_serves_across_a_restart(make_stack) -> None:
    stack = make_stack(f"sa-{_uid()}")
    web = stack.add("web", [sys.executable, "-c", _SOCKET_SERVER], ports=["http"], listen=["http"],
                    restart={"policy": "always", "backoff": 0.5})
    stack.start(timeout=30)
    port = web.port
    first = _ask(port, b"hi")
    assert first == web.pid
    assert _ask(port, b"quit") == first
    # The service is down or restarting now; this client waits in the listener's backlog
    # and is served by the next run instead of being refused.
    second = _ask(port, b"hi")
    assert second != first
    wait_until(lambda: web.restarts >= 1, 30, "the restart to be counted")
    assert web.pid == second


_TWO_SOCKETS = """
import os, socket
assert os.environ["LISTEN_PID"] == str(os.getpid())
assert os.environ["LISTEN_FDS"] == "2" and os.environ["LISTEN_FDNAMES"] == "a:b"
assert not os.path.exists("/proc/self/fd/5")  # nothing else crosses exec
for fd, port in ((3, int(os.environ["CORRAL_PORT_A"])), (4, int(os.environ["CORRAL_PORT_B"]))):
    assert socket.socket(fileno=os.dup(fd)).getsockname()[1] == port
print("ok", flush=True)
"""


def test_two_listening_sockets_arrive_as_fds_3_and_4(make_stack) -> None:
    stack = make_stack(f"sa2-{_uid()}")
    svc = stack.add("two", [sys.executable, "-c", _TWO_SOCKETS + "import time; time.sleep(600)"],
                    ports=["a", "b"], listen=["a", "b"])
    stack.start(timeout=30)
    assert svc.wait_for_log("ok", timeout=30) == "ok"


def test_cli_resources_lists_live_claims(make_stack) -> None:
    kind = f"cli-{_uid()}"
    stack = make_stack(f"cli-{_uid()}")
    stack.add("holder", "exec sleep 600", resources={kind: "v9"})
    stack.start(timeout=30)
    out = subprocess.run([sys.executable, "-m", "corral", "resources", "--json"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    rows = [r for r in json.loads(out) if r["type"] == kind]
    assert [(r["value"], r["stack"], r["service"], r["pid"]) for r in rows] == [
        ("v9", stack.name, "holder", os.getpid())]
    text = subprocess.run([sys.executable, "-m", "corral", "resources"], capture_output=True,
                          text=True, check=True, timeout=60).stdout
    assert text.splitlines()[0].split() == ["type", "value", "stack", "service", "pid"]
    assert any(line.split()[:3] == [kind, "v9", stack.name] for line in text.splitlines())
