"""corral's pytest plugin, run in real pytest subprocesses (with and without xdist)."""

from __future__ import annotations

import json
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
