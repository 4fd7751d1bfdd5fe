"""The Stack / Service API of PRODUCT.md, with real processes."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

import corral
from conftest import alive, wait_until


def test_product_example_with_real_servers(make_stack, helper):
    stack = make_stack("dev")
    stack.add("db", [helper, "listen", "{{port.main}}", "pause"], ports=["main"],
              ready=corral.TcpCheck("main"), restart="on-failure")
    stack.add("api", f"{sys.executable} -m http.server {{{{port.http}}}} --bind 127.0.0.1",
              ports=["http"],
              env={"REDIS_URL": "redis://127.0.0.1:{{db.port.main}}"},
              depends_on={"db": "ready"},
              ready=corral.HttpCheck("/", port="http"))
    with stack:
        api, db = stack["api"], stack["db"]
        assert api.state == "ready" and db.state == "ready"
        port = api.ports["http"]
        assert port != db.ports["main"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
        rows = {r["name"]: r for r in stack.status()}
        assert set(rows) == {"db", "api"}
        for row in rows.values():
            assert {"name", "state", "pid", "restarts", "exit_code", "ports"} <= set(row)
        # The shell command ran through /bin/sh -c, and the env template was filled.
        environ = Path(f"/proc/{api.pid}/environ").read_bytes().split(b"\0")
        assert f"REDIS_URL=redis://127.0.0.1:{db.ports['main']}".encode() in environ
        assert f"PORT={port}".encode() in environ
        assert f"CORRAL_PORT_HTTP={port}".encode() in environ
        old_pid = api.pid
        api.restart()
        assert api.state == "ready" and api.pid != old_pid
        assert api.ports["http"] == port  # ports are stable across restarts
        pids = [db.pid, api.pid]
    for pid in pids:
        assert not alive(pid)
    assert [r["state"] for r in stack.status()] == ["stopped", "stopped"]


def test_stop_is_in_reverse_dependency_order(make_stack, helper):
    stack = make_stack()
    for name, deps in (("base", []), ("mid", ["base"]), ("top", ["mid"])):
        stack.add(name, [helper, "trap", "TERM", name, "print", "up", "pause"], depends_on=deps,
                  ready=corral.LogCheck("^up$"))
    stack.start()
    stack.events(0)  # subscribe: state changes from here on are recorded
    stack.stop()
    stopped = [ev["service"] for ev in stack.events(1.0)
               if ev["kind"] == "state" and ev["state"] == "stopped"]
    assert stopped == ["top", "mid", "base"]
    # Each got its own TERM (the trap printed its name before exiting).
    assert [stack[n].logs()[-1] for n in ("base", "mid", "top")] == ["base", "mid", "top"]


def test_start_error_names_service_reason_and_log_tail(make_stack, helper):
    stack = make_stack()
    stack.add("db", [helper, "stderr", "FATAL: no config", "exit", "2"], ready=corral.TcpCheck(5))
    stack.add("api", [helper, "pause"], depends_on=["db"])
    stack.add("independent", [helper, "print", "hi", "pause"])
    with pytest.raises(corral.StartError) as info:
        stack.start(timeout=60)
    err = info.value
    assert err.service == "db"
    assert "service 'db'" in str(err)
    assert "exited before it was ready (exit code 2)" in str(err)
    assert str(err).rstrip().endswith("FATAL: no config")
    assert stack["api"].state == "failed" and stack["api"].pid is None
    assert "dependency 'db' failed" in stack["api"].reason
    stack.wait("independent", "ready", timeout=30)


def test_failed_with_block_leaves_nothing_running(helper):
    stack = corral.Stack("partial")
    stack.add("ok", [helper, "pause"])
    stack.add("bad", [helper, "exit", "1"], ready=corral.LogCheck("never"))
    with pytest.raises(corral.StartError):
        with stack:
            pass
    assert all(r["pid"] is None for r in stack.status())


def test_exception_and_keyboard_interrupt_in_block_stop_everything(helper):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        stack = corral.Stack()
        stack.add("a", [helper, "grandchild", "300", "pause"])
        with pytest.raises(type(exc)):
            with stack:
                pid = stack["a"].pid
                line = stack["a"].wait_for_log("^grandchild ", timeout=30)
                grandchild = int(line.split()[1])
                raise exc
        assert not alive(pid) and not alive(grandchild)


def test_garbage_collected_stack_stops(helper):
    def start_and_forget() -> int:
        stack = corral.Stack()
        stack.add("a", [helper, "pause"])
        stack.start()
        return stack["a"].pid

    pid = start_and_forget()
    gc.collect()
    wait_until(lambda: not alive(pid), what="the forgotten service to be stopped")


def test_templates_name_tmpdir_and_single_port(make_stack, helper):
    stack = make_stack()
    svc = stack.add("web", [helper, "print", "{{name}}:{{tmpdir}}", "env", "PORT", "cwd", "pause"],
                    ports=["http"], cwd="{{tmpdir}}", ready=corral.LogCheck("^cwd "))
    stack.start()
    lines = svc.logs()
    name, tmpdir = lines[0].split(":", 1)
    assert name == "web" and os.path.isdir(tmpdir)
    assert lines[1] == f"env PORT={svc.ports['http']}"
    assert lines[2] == f"cwd {tmpdir}"
    stack.close()
    assert not os.path.exists(tmpdir)


def test_readiness_checks_log_exec_notify(make_stack, helper, tmp_path):
    flag = tmp_path / "flag"
    stack = make_stack()
    stack.add("logger", [helper, "sleep", "0.2", "print", "server started on 1234", "pause"],
              ready=corral.LogCheck(r"started on \d+", interval=0.01))
    stack.add("execd", [helper, "sleep", "0.2", "write-file", str(flag), "x", "pause"],
              ready=corral.ExecCheck(f"test -f {flag}", interval=0.02))
    stack.add("notifier", [helper, "sleep", "0.2", "notify", "READY=1", "pause"],
              ready=corral.NotifyCheck())
    stack.start(timeout=60)
    assert {r["state"] for r in stack.status()} == {"ready"}
    # The helper prints "notified" after it sent READY=1: the line may come after readiness.
    stack["notifier"].wait_for_log("^notified$", timeout=30)


def test_http_check_wants_the_status(make_stack, helper):
    stack = make_stack()
    stack.add("sick", [helper, "http-status", "PORT", "503"], ports=["http"],
              ready=corral.HttpCheck("/", start_timeout=1.0, interval=0.05))
    with pytest.raises(corral.StartError, match="HTTP status 503"):
        stack.start(timeout=60)


def test_completed_condition_runs_one_shot_jobs_first(make_stack, helper):
    stack = make_stack()
    stack.add("migrate", [helper, "sleep", "0.1", "print", "migrated"])
    stack.add("app", [helper, "pause"], depends_on={"migrate": "completed"})
    stack.start()
    assert stack["migrate"].state == "exited" and stack["migrate"].exit_code == 0
    assert stack["app"].state == "ready"


def test_started_condition_does_not_wait_for_readiness(make_stack, helper):
    stack = make_stack()
    stack.add("slow", [helper, "sleep", "0.5", "print", "ready now", "pause"],
              ready=corral.LogCheck("ready now"))
    stack.add("eager", [helper, "pause"], depends_on={"slow": "started"})
    stack.start()
    slow, eager = (next(r for r in stack.status() if r["name"] == n) for n in ("slow", "eager"))
    assert eager["started_at"] < slow["ready_at"]


def test_signal_and_wait_for_log(make_stack, helper):
    stack = make_stack()
    svc = stack.add("t", [helper, "trap", "USR1", "got usr1", "print", "armed", "pause"],
                    ready=corral.LogCheck("armed"))
    stack.start()
    assert svc.signal("USR1")
    assert svc.wait_for_log("got usr1", timeout=30) == "got usr1"
    stack.wait("t", "exited", timeout=30)
    assert svc.exit_code == 0
    assert svc.signal(signal.SIGTERM) is False
    with pytest.raises(corral.Timeout):
        svc.wait_for_log("never printed", timeout=0.2)


def test_health_check_marks_unhealthy_then_restarts(make_stack, helper, tmp_path):
    stack = make_stack()
    svc = stack.add("h", [helper, "listen", "PORT", "sleep", "0.5", "exit", "0"], ports=["p"],
                    ready=corral.TcpCheck("p"),
                    health=corral.ExecCheck("exit 1", interval=0.05, retries=2),
                    restart=corral.Restart("always", backoff=0.05))
    stack.start()
    stack.wait("h", "unhealthy", timeout=30)
    wait_until(lambda: svc.restarts >= 1, what="a restart after the liveness failure")


def test_status_before_start_and_unknown_names(make_stack, helper):
    stack = make_stack()
    stack.add("a", [helper, "pause"])
    assert stack.status()[0]["state"] == "pending"
    with pytest.raises(KeyError, match="no service 'b'"):
        stack["b"]
    with pytest.raises(KeyError):
        stack.start("b")
    with pytest.raises(corral.ConfigError, match="already defined"):
        stack.add("a", [helper, "pause"])


def test_bad_specs_are_config_errors_and_start_nothing(make_stack, helper):
    stack = make_stack()
    stack.add("a", [helper, "pause"], depends_on=["b"])
    stack.add("b", [helper, "pause"], depends_on={"c": "started"})
    stack.add("c", [helper, "pause"], depends_on=["a"])
    with pytest.raises(corral.ConfigError, match=re.escape("dependency cycle: a -> b -> c -> a")):
        stack.start()
    assert all(r["pid"] is None for r in stack.status())

    other = make_stack()
    other.add("x", [helper, "print", "{{y.port.http}}"])
    with pytest.raises(corral.ConfigError, match="unknown service 'y'"):
        other.start()
    assert isinstance(corral.ConfigError("x"), ValueError)


def test_metrics_and_prometheus(make_stack, helper):
    stack = make_stack("m")
    stack.add("busy", [helper, "grandchild", "60", "busy", "0.3", "pause"])
    stack.start()
    stack["busy"].wait_for_log("grandchild", timeout=30)
    m = stack.metrics()["busy"]
    assert m["processes"] == 2
    assert m["rss_bytes"] > 0 and m["open_fds"] >= 3
    text = stack.prometheus()
    assert 'corral_service_up{stack="m",service="busy"} 1' in text
    assert "# TYPE corral_service_restarts_total counter" in text


def test_async_api(helper):
    async def main() -> tuple[int, str]:
        stack = corral.Stack("aio")
        stack.add("a", [helper, "print", "hello", "pause"], ready=corral.LogCheck("hello"))
        async with stack:
            line = await stack["a"].async_wait_for_log("hel+o", timeout=30)
            await stack.async_restart("a")
            return stack["a"].pid, line

    pid, line = asyncio.run(main())
    assert line == "hello"
    assert not alive(pid)


def test_start_timeout_raises_timeout(make_stack, helper):
    stack = make_stack()
    stack.add("slow", [helper, "pause"], ready=corral.LogCheck("never", start_timeout=600))
    with pytest.raises(corral.Timeout, match="slow") as info:
        stack.start(timeout=0.3)
    assert isinstance(info.value, TimeoutError)


def test_tcp_check_with_fixed_port_number(make_stack, helper):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stack = make_stack()
    stack.add("fixed", [helper, "listen", str(port), "pause"], ready=corral.TcpCheck(port))
    stack.start(timeout=60)
    assert stack["fixed"].state == "ready"


def test_replicas_are_services_of_their_own(make_stack, helper):
    stack = make_stack()
    stack.add("worker", [helper, "env", "CORRAL_SERVICE", "pause"], replicas=3, ports=["p"],
              ready=corral.LogCheck("^env "))
    stack.add("boss", [helper, "pause"], depends_on=["worker"])
    assert stack.levels() == [["worker-1", "worker-2", "worker-3"], ["boss"]]
    stack.start()
    assert [stack[f"worker-{i}"].logs()[0] for i in (1, 2, 3)] == [
        f"env CORRAL_SERVICE=worker-{i}" for i in (1, 2, 3)]
    assert len({stack[f"worker-{i}"].ports["p"] for i in (1, 2, 3)}) == 3
    assert stack["boss"].state == "ready"


def test_liveness_failure_restarts_even_if_the_program_exits_cleanly(make_stack, helper):
    stack = make_stack()
    svc = stack.add("clean", [helper, "trap", "TERM", "bye", "print", "armed", "pause"],
                    ready=corral.LogCheck("armed"),
                    health=corral.ExecCheck("exit 1", interval=0.05, retries=1),
                    restart="on-failure")
    stack.start()
    wait_until(lambda: svc.restarts >= 1, what="a restart after a clean exit on TERM")
    assert "bye" in svc.logs()


def test_owner_environment_does_not_leak_corral_variables(make_stack, helper, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("CORRAL_PORT_OLD", "2")
    monkeypatch.setenv("KEEP_ME", "yes")
    stack = make_stack()
    svc = stack.add("e", [helper, "env", "NOTIFY_SOCKET", "env", "PORT", "env", "CORRAL_PORT_OLD",
                          "env", "KEEP_ME", "pause"], ready=corral.LogCheck("KEEP_ME"))
    stack.start()
    assert svc.logs() == ["env NOTIFY_SOCKET unset", "env PORT unset", "env CORRAL_PORT_OLD unset",
                          "env KEEP_ME=yes"]


def test_service_environment_overrides_the_owners_and_names_each_variable_once(make_stack, helper,
                                                                               monkeypatch):
    # The owner's environment (made once per stack) merged with what each run sets: the
    # service's value wins, and no variable appears twice (a second copy would be read by
    # some programs and not by others).
    monkeypatch.setenv("AAA_FIRST", "owner")
    monkeypatch.setenv("MID_VAR", "owner")
    monkeypatch.setenv("ZZZ_LAST", "owner")
    monkeypatch.setenv("CORRAL_SERVICE", "not-this-one")
    stack = make_stack()
    svc = stack.add("e", [helper, "print", "up", "pause"], env={"MID_VAR": "service", "ZZZ_LAST": "service"},
                    ports=["http"], ready=corral.LogCheck("^up$"))
    stack.start()
    with open(f"/proc/{svc.pid}/environ", "rb") as f:
        entries = [e.decode() for e in f.read().split(b"\0") if e]
    keys = [e.split("=", 1)[0] for e in entries]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    env = dict(e.split("=", 1) for e in entries)
    assert env["AAA_FIRST"] == "owner" and env["MID_VAR"] == "service" and env["ZZZ_LAST"] == "service"
    assert env["CORRAL_SERVICE"] == "e" and env["PORT"] == str(svc.ports["http"])
    assert env["CORRAL_PORT_HTTP"] == env["PORT"]


def test_literal_braces_in_a_command(make_stack, helper):
    stack = make_stack()
    svc = stack.add("b", [helper, "print", '{{ "{{" }}.Names}}', "pause"], ready=corral.LogCheck("Names"))
    stack.start()
    assert svc.logs() == ["{{.Names}}"]
