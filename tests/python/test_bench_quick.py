"""The benchmark's smoke mode runs, so bench/ cannot rot (it asserts no speed: the full
run and its figures live in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def test_bench_quick_mode_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert len(data["results"]) >= 5 and data["targets"]  # every case produced figures
    assert "floor" in result.stdout and "corral" in result.stdout
