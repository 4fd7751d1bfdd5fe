"""corral/_core.pyi is generated (pybind11-stubgen), never hand-written; it must not drift
from the compiled module. Regenerate with:
    pybind11-stubgen corral._core -o /tmp/stubs && cp /tmp/stubs/corral/_core.pyi src/python/corral/
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytest.importorskip("pybind11_stubgen")


def _api(source: str) -> set[str]:
    """Every class, attribute, and function or method with its parameter names, that the
    stub declares (annotation spellings vary with pybind11 versions; names do not)."""

    def sig(f: ast.FunctionDef) -> str:
        a = f.args
        return f"{f.name}({', '.join(x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs])})"

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(f"{node.name}.{sig(item)}")
                elif isinstance(item, ast.AnnAssign):
                    names.add(f"{node.name}.{ast.unparse(item.target)}")
            names.add(node.name)
        elif isinstance(node, ast.FunctionDef) and node.col_offset == 0:
            names.add(sig(node))
    return names


def test_committed_stub_matches_the_module(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pybind11_stubgen", "corral._core", "-o", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = (tmp_path / "corral" / "_core.pyi").read_text()
    committed = (ROOT / "src" / "python" / "corral" / "_core.pyi").read_text()
    assert _api(fresh) == _api(committed)
