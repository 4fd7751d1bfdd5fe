"""The per-user runtime directory cannot be prepared by someone else on the machine: a
planted symlink, a directory of another user, a swapped subdirectory are refused with a
clear error naming the path, and nothing of ours is written through them. "Another user"
is uid 65534 (nobody), which needs root to arrange; those cases skip otherwise."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import python_script

ARGS = ["-p", "corral.pytest_plugin", "-p", "no:cacheprovider"]
NOBODY = 65534


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """TMPDIR is the scratch directory, so the default runtime directory is
    <tmp_path>/corral-<uid>; nothing else chooses it."""
    monkeypatch.delenv("CORRAL_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path / f"corral-{os.getuid()}"


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")


@pytest.fixture
def project(pytester: pytest.Pytester, helper: str, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makefile(".toml", corral=f"""
[services.db]
command = ["{helper}", "print", "up", "pause"]
ready = {{ log = "^up$" }}
""")
    pytester.makeini("[pytest]\ncorral_stack = corral.toml\n")
    pytester.makepyfile("""
        def test_uses_the_stack(corral_stack):
            assert corral_stack["db"].state == "ready"
    """)
    return pytester


def test_pytest_plugin_refuses_a_planted_symlink(project: pytest.Pytester, clean_env: Path, tmp_path: Path):
    victim = tmp_path / "victim"
    victim.mkdir()
    clean_env.symlink_to(victim)
    result = project.runpytest_subprocess(*ARGS)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*unsafe runtime directory {clean_env}: it is a symbolic link*"])
    assert list(victim.iterdir()) == []  # nothing was created or overwritten through it


def test_pytest_plugin_refuses_another_users_directory(project: pytest.Pytester, clean_env: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    _needs_root()
    # Planted: the run's directory with a state file that names the planter's services.
    run = clean_env / "pytest" / "planted-run"
    run.mkdir(parents=True)
    (run / "state.json").write_text('{"owner": 1, "status": [{"name": "db", "ports": {}, '
                                    '"pid": 1, "state": "ready"}]}')
    for path in (clean_env, clean_env / "pytest", run, run / "state.json"):
        os.chown(path, NOBODY, NOBODY)
    clean_env.chmod(0o777)
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "planted-run")
    result = project.runpytest_subprocess(*ARGS)
    result.assert_outcomes(errors=1)  # the planted state would have made the test pass
    result.stdout.fnmatch_lines([f"*unsafe runtime directory {clean_env}: it is owned by uid {NOBODY}*"])
    assert sorted(p.name for p in run.iterdir()) == ["state.json"]


def test_pytest_plugin_files_are_private(project: pytest.Pytester, clean_env: Path):
    project.makepyfile(test_more="""
        import os, stat

        def test_directory(corral_stack):
            base = os.path.join(os.environ["TMPDIR"], f"corral-{os.getuid()}")
            for path in (base, os.path.join(base, "pytest")):
                st = os.lstat(path)
                assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
                assert st.st_uid == os.geteuid()
    """)
    project.runpytest_subprocess(*ARGS).assert_outcomes(passed=2)


SCRIPT = textwrap.dedent("""
    import sys, corral
    stack = corral.Stack("rt")
    stack.add("svc", [sys.argv[1], "print", "up", "pause"], ready=corral.LogCheck("^up$"),
              **({"ports": ["main"]} if sys.argv[2] == "ports" else
                 {"env": {"DIR": "{{tmpdir}}"}}))
    try:
        stack.start(timeout=60)
    except corral.CorralError as exc:
        print("refused:", exc)
    else:
        print("started")
    finally:
        stack.close()
""")


def _run(helper: str, what: str) -> str:
    out = subprocess.run([*python_script(SCRIPT), helper, what], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("what", ["ports", "tmpdir"])
def test_stack_refuses_a_planted_runtime_directory(helper: str, clean_env: Path, tmp_path: Path, what: str):
    victim = tmp_path / "victim"
    victim.mkdir()
    clean_env.symlink_to(victim)
    out = _run(helper, what)
    assert f"unsafe runtime directory {clean_env}: it is a symbolic link" in out, out
    assert list(victim.iterdir()) == []


def test_tmpdir_is_never_created_in_a_swapped_subdirectory(helper: str, clean_env: Path, tmp_path: Path):
    # Our own directory, but left open (0777) long enough for someone to swap "stacks" for a
    # symlink to a directory they read.
    clean_env.mkdir()
    clean_env.chmod(0o777)
    spy = tmp_path / "spy"
    spy.mkdir()
    (clean_env / "stacks").symlink_to(spy)
    out = _run(helper, "tmpdir")
    assert f"unsafe runtime directory {clean_env / 'stacks'}: it is a symbolic link" in out, out
    assert list(spy.iterdir()) == []
    assert clean_env.stat().st_mode & 0o777 == 0o700  # and the directory is ours alone again


def test_a_private_directory_of_ours_is_used(helper: str, clean_env: Path):
    assert _run(helper, "tmpdir").strip() == "started"
    assert _run(helper, "ports").strip() == "started"
    assert clean_env.stat().st_mode & 0o777 == 0o700
