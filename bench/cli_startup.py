"""CLI start-up: what `import corral` and a `corral ps` cost a fresh process.

    python bench/cli_startup.py [--runs 20] [--services 20]

Each figure is the median and the minimum (the one least disturbed by other work on the
machine) of `--runs` fresh interpreters (wall time around subprocess.run):
a bare interpreter (`python -c pass`, the floor), `import corral`, `import corral.cli`
(what the `corral` console script imports before it parses its arguments), and
`corral ps` (the console script's `corral.cli:main`) against a `corral up -d` stack of
`--services` sleeping services in a runtime directory of its own. The import time of the
heaviest modules comes from `python -X importtime`. docs/benchmarks.md has the results.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The console script's own code (see [project.scripts] in pyproject.toml).
_SCRIPT = "import sys; from corral.cli import main; sys.exit(main())"


def _ms(argv: list[str], runs: int, **kw: object) -> str:
    subprocess.run(argv, check=True, capture_output=True, **kw)  # type: ignore[call-overload]  # warm the caches
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, **kw)  # type: ignore[call-overload]
        times.append(time.perf_counter() - t0)
    times.sort()
    return f"{times[len(times) // 2] * 1000:6.1f} ms (min {times[0] * 1000:5.1f})"


def _importtime(statement: str, top: int = 8, **kw: object) -> list[tuple[str, int]]:
    """The cumulative import time (us) of the `top` heaviest modules `statement` imports."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],  # type: ignore[call-overload]
                         check=True, capture_output=True, text=True, **kw).stderr
    rows = []
    for line in err.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((m.group(4), int(m.group(2))))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--services", type=int, default=20)
    args = p.parse_args()
    py = sys.executable
    print(f"python -c pass       {_ms([py, '-c', 'pass'], args.runs)}")
    print(f"import corral        {_ms([py, '-c', 'import corral'], args.runs)}")
    print(f"import corral.cli    {_ms([py, '-c', 'import corral.cli'], args.runs)}")
    print(f"corral --help        {_ms([py, '-c', _SCRIPT, '--help'], args.runs)}")
    for name, us in _importtime("import corral"):
        print(f"  importtime {name:<28} {us / 1000:6.1f} ms")

    root = Path(tempfile.mkdtemp(prefix="cps-"))
    runtime = tempfile.mkdtemp(prefix="crt-")  # short: the socket path must fit in sun_path
    os.chmod(runtime, 0o700)
    env = dict(os.environ, CORRAL_RUNTIME_DIR=runtime)
    (root / "corral.toml").write_text('name = "startup"\n' + "".join(
        f'[services.s{i}]\ncommand = ["sleep", "3600"]\n' for i in range(args.services)))
    up = subprocess.run([py, "-c", _SCRIPT, "up", "-d"], env=env, cwd=root, capture_output=True,
                        text=True, timeout=300)
    if up.returncode != 0:
        raise SystemExit(f"corral up -d: {up.stderr[-1000:]}")
    try:
        ps = _ms([py, "-c", _SCRIPT, "ps"], args.runs, env=env, cwd=root)
        print(f"corral ps ({args.services} services) {ps}")
        ps_modules = subprocess.run(
            [py, "-c", "import sys; from corral.cli import main; main(['ps']); "
             "print(sorted(m for m in sys.modules if m.startswith('corral')), file=sys.stderr)"],
            env=env, cwd=root, check=True, capture_output=True, text=True).stderr.strip()
        print(f"  modules of corral ps: {ps_modules}")
        for name, us in _importtime(_SCRIPT.replace("main()", "main(['ps'])"), env=env, cwd=root):
            print(f"  importtime (ps) {name:<23} {us / 1000:6.1f} ms")
    finally:
        subprocess.run([py, "-c", _SCRIPT, "down"], env=env, cwd=root, capture_output=True, timeout=300,
                       check=False)
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
