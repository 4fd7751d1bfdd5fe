"""corral's pytest plugin, run in real pytest subprocesses (with and without xdist)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import alive

ARGS = ["-p", "corral.pytest_plugin", "-p", "xdist.plugin", "-p", "no:cacheprovider"]


@pytest.fixture
def project(pytester: pytest.Pytester, helper: str, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # Only the plugins named in ARGS: the same with corral installed or run from a checkout.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makefile(".toml", corral=f"""
[services.db]
command = ["{helper}", "print", "db says hello", "listen", "{{{{port.main}}}}", "pause"]
ports = ["main"]
ready = {{ tcp = "main", interval = 0.02 }}
""")
    pytester.makeini("[pytest]\ncorral_stack = corral.toml\n")
    return pytester


def test_fixture_gives_the_stack_and_failures_show_its_logs(project: pytest.Pytester, tmp_path: Path):
    out = tmp_path / "seen.json"
    project.makepyfile(f"""
        import json, socket

        def test_port(corral_stack):
            port = corral_stack["db"].ports["main"]
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
            with open({str(out)!r}, "w") as f:
                json.dump({{"pid": corral_stack["db"].pid}}, f)

        def test_fails(corral_stack):
            assert False, "on purpose"
    """)
    result = project.runpytest_subprocess(*ARGS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*corral logs*", "*--- db (ready, pid *", "db says hello"])
    pid = json.loads(out.read_text())["pid"]
    assert not alive(pid)  # stopped at the end of the run


def test_one_stack_shared_by_xdist_workers(project: pytest.Pytester, tmp_path: Path):
    seen = tmp_path / "seen"
    seen.mkdir()
    project.makepyfile(f"""
        import json, os, socket, time
        import pytest

        @pytest.mark.parametrize("i", range(8))
        def test_port(corral_stack, i):
            port = corral_stack["db"].ports["main"]
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
            with open(os.path.join({str(seen)!r}, f"{{i}}.json"), "w") as f:
                json.dump({{"worker": os.environ["PYTEST_XDIST_WORKER"], "port": port,
                           "pid": corral_stack["db"].pid}}, f)
    """)
    result = project.runpytest_subprocess(*ARGS, "-n", "2")
    result.assert_outcomes(passed=8)
    rows = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert len(rows) == 8
    assert len({r["worker"] for r in rows}) == 2  # both workers ran tests...
    assert len({r["port"] for r in rows}) == 1  # ...against the one stack
    assert len({r["pid"] for r in rows}) == 1
    assert not alive(rows[0]["pid"])


def test_fixture_without_config_is_a_usage_error(pytester: pytest.Pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile("def test_x(corral_stack):\n    pass\n")
    result = pytester.runpytest_subprocess(*ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*corral_stack = path*"])


def test_xdist_workers_both_restart_and_read_logs_and_report_this_tests_lines(
        project: pytest.Pytester, tmp_path: Path):
    # Whichever worker started the stack, both get the full Service API (a Client in the
    # other one): restart, logs, wait_for_log; and a failure report from either shows the
    # service's current state and the lines it printed during that very test.
    seen = tmp_path / "seen"
    seen.mkdir()
    lock = tmp_path / "restart.lock"
    project.makepyfile(f"""
        import contextlib, fcntl, json, os, socket
        import pytest

        @contextlib.contextmanager
        def alone():
            # Two restarts of one service at once: the later overtakes the earlier, which
            # then fails (as it would locally). Tests that restart a shared service take turns.
            with open({str(lock)!r}, "w") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                yield

        @pytest.mark.parametrize("i", range(2))
        def test_restart(corral_stack, i):
            db = corral_stack["db"]
            with alone():
                old = db.pid
                db.restart(timeout=60)
                assert db.pid != old and db.state == "ready"
                socket.create_connection(("127.0.0.1", db.ports["main"]), timeout=10).close()
            assert "db says hello" in db.logs()
            db.wait_for_log("db says hello", timeout=30)
            worker = os.environ["PYTEST_XDIST_WORKER"]
            with open(os.path.join({str(seen)!r}, f"{{i}}-{{worker}}.json"), "w") as f:
                json.dump({{"worker": os.environ["PYTEST_XDIST_WORKER"],
                           "kind": type(corral_stack).__name__}}, f)

        def test_fails(corral_stack):
            with alone():
                corral_stack["db"].restart(timeout=60)
                socket.create_connection(("127.0.0.1", corral_stack["db"].ports["main"]), timeout=10).close()
            assert False, "on purpose " + os.environ["PYTEST_XDIST_WORKER"]
    """)
    # --dist each: every test runs in both workers, so both restart and both fail.
    result = project.runpytest_subprocess(*ARGS, "-n", "2", "--dist", "each")
    result.assert_outcomes(passed=4, failed=2)
    rows = [json.loads(p.read_text()) for p in seen.iterdir()]
    assert len(rows) == 4
    assert {r["kind"] for r in rows} == {"Stack", "Client"}  # the owner and the other worker
    text = result.stdout.str()
    # Both failures carry the section, in the owner's report and the other worker's alike.
    assert len(re.findall(r"corral logs", text)) == 2, text
    assert "on purpose gw0" in text and "on purpose gw1" in text
    # The state is the current one (the other worker may be restarting db right then).
    sections = re.findall(r"--- db \((\w+), pid \w+, restarts \d+\) ---\ndb says hello", text)
    assert len(sections) == 2, text
    assert "[no lines during this test" not in text  # db printed its hello during each
