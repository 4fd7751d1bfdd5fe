"""What `import corral` costs: nothing but the package until a name is used (PEP 562), so
that the CLI's client commands (`corral ps`, which only talk to a socket) start fast. Each
check runs in a fresh interpreter: this one has imported everything already."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator

import pytest

import corral

# Modules a client command must not load: the engine extension, the stack machinery, spec
# parsing (TOML/YAML), the history database, and the notebook extras.
_HEAVY = ("corral._core", "corral.stack", "corral._engine", "corral.spec", "corral.history",
          "corral.checks", "corral._metrics", "sqlite3", "yaml", "tomllib", "asyncio",
          "dataclasses", "numpy", "pandas", "matplotlib")

_REPORT = "import json, sys; print(json.dumps(sorted(sys.modules)), file=sys.stderr)"


def _modules_after(code: str, **kw: object) -> tuple[list[str], str]:
    """The modules loaded by `code` in a fresh interpreter, and what it printed."""
    out = subprocess.run([sys.executable, "-c", f"{code}\n{_REPORT}"], capture_output=True, text=True,
                         check=True, timeout=120, **kw)  # type: ignore[call-overload]
    return json.loads(out.stderr.strip().splitlines()[-1]), out.stdout


@pytest.mark.parametrize("code", [
    "import corral",
    # What the `corral` console script imports, and the parser every command builds.
    "import corral.cli; corral.cli._parser()",
    "import corral.client",
])
def test_import_loads_no_engine_and_no_parser(code: str) -> None:
    modules, _ = _modules_after(code)
    assert [m for m in _HEAVY if m in modules] == []


def test_the_pytest_plugin_loads_no_engine() -> None:
    # pytest loads the plugin in every session of an environment with corral installed,
    # most of which never start a stack. (What pytest itself imports does not count.)
    modules, _ = _modules_after("import corral.pytest_plugin")
    baseline, _ = _modules_after("import pytest")
    assert [m for m in _HEAVY if m in modules and m not in baseline] == []


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A runtime directory of the test's own (short: a socket path must fit in sun_path)."""
    directory = tempfile.mkdtemp(prefix="crt-")
    os.chmod(directory, 0o700)
    monkeypatch.setenv("CORRAL_RUNTIME_DIR", directory)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_corral_ps_loads_only_the_client(runtime: str, helper: str,
                                         make_stack: Callable[..., corral.Stack]) -> None:
    stack = make_stack("imports")
    stack.add("sleeper", [helper, "pause"])
    stack.start(timeout=60)
    modules, printed = _modules_after(
        "from corral.cli import main\nmain(['ps', '--name', 'imports'])",
        env=dict(os.environ, CORRAL_RUNTIME_DIR=runtime))
    assert "sleeper" in printed and "ready" in printed  # it did ask the stack
    # The engine extension is loaded only for the runtime directory's checks (in C++, so
    # that both languages trust the same directories); nothing else of the engine side.
    assert [m for m in _HEAVY if m in modules and m != "corral._core"] == []


def test_every_public_name_resolves_lazily() -> None:
    code = ("import corral\n"
            "missing = [n for n in corral.__all__ if not hasattr(corral, n)]\n"
            "from corral import *\n"
            "print(missing, sorted(set(corral.__all__) - set(dir(corral))), Stack.__module__,"
            " ConfigError.__mro__[1].__name__)\n")
    _, printed = _modules_after(code)
    assert printed.split() == ["[]", "[]", "corral.stack", "CorralError"]
    # Names are the same objects wherever they are imported from.
    from corral.stack import Stack

    assert corral.Stack is Stack
    with pytest.raises(AttributeError, match="no attribute 'Stak'"):
        corral.Stak  # noqa: B018  # type: ignore[attr-defined]


def test_submodules_are_reached_as_attributes() -> None:
    # `import corral` once imported corral.stack and corral.history: code that reaches them
    # as attributes keeps working.
    _, printed = _modules_after("import corral\nprint(corral.stack.Stack is corral.Stack,"
                                " corral.history.parse_since('1m'))")
    assert printed.split() == ["True", "60.0"]


def test_a_running_stack_loads_neither_openssl_nor_sqlite_nor_an_http_server(helper: str) -> None:
    # A started stack serves its control API and samples nothing by default: OpenSSL's
    # libcrypto (hashlib, ssl), sqlite3 (history) and http.server (serve_metrics) were
    # megabytes of every owner's memory (19.6 MB for 100 services against a 12 MB target).
    code = (f"import corral\ns = corral.Stack('imports')\ns.add('a', [{helper!r}, 'pause'])\n"
            "s.start()\nprint(s.api is not None)\ns.close()")
    modules, printed = _modules_after(code)
    assert printed.strip() == "True"  # the control API was served
    assert not {"ssl", "_ssl", "hashlib", "_hashlib", "sqlite3", "http.server"} & set(modules)
