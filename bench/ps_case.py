"""The case of issue 9 ("the control API"): `corral ps` of N services end to end, against
`supervisorctl status`, `s6-svstat` (one per service: s6 has no aggregate command) and
`sv status`, and the API's request latency (`GET /v1/services` over the Unix socket).

corral's stack runs as a `corral up -d` daemon in a runtime directory of the bench's own,
so `ps` is measured exactly as a user meets it: a fresh `python -m corral ps` process that
finds the stack, connects, asks and prints the table. The latency is measured in one
client process (the request as any tool pays it: connect, request, JSON answer).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LATENCY = r"""
import json, sys, time
from corral.client import connect
c = connect(sys.argv[1])
for _ in range(20):
    c.status()  # warm: imports, first connections
xs = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter_ns()
    c._get("/v1/services")
    xs.append(time.perf_counter_ns() - t0)
xs.sort()
print(json.dumps({"p50": xs[len(xs) // 2], "p99": xs[int(len(xs) * 0.99)], "n": len(xs)}))
"""


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def _timed(argv: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{argv}: exit {out.returncode}: {out.stderr.decode()[-500:]}")
    return took


def bench_ps(ws, env: dict, sleep: str, peers_mod, peer_names: list[str], with_peer, release_peer,
             n: int = 100, reps: int = 10, requests: int = 2000) -> dict:
    res: dict = {"n": n}
    root = Path(tempfile.mkdtemp(prefix="cps-"))
    runtime = tempfile.mkdtemp(prefix="crt-")  # short: the socket path must fit in sun_path
    os.chmod(runtime, 0o700)
    cenv = dict(env, CORRAL_RUNTIME_DIR=runtime)
    config = root / "corral.toml"
    config.write_text('name = "bench-ps"\n' + "".join(
        f'[services.s{i}]\ncommand = ["{sleep}", "3600"]\n' for i in range(n)))
    py = [sys.executable, "-m", "corral"]
    up = subprocess.run([*py, "up", "-d"], env=cenv, cwd=root, capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        raise RuntimeError(f"corral up -d: {up.stderr[-1000:]}")
    try:
        _timed([*py, "ps"], cenv, root)  # warm the page cache
        res["corral"] = _median([_timed([*py, "ps"], cenv, root) for _ in range(reps)])
        res["corral_json"] = _median([_timed([*py, "ps", "--json"], cenv, root) for _ in range(reps)])
        lat = subprocess.run([sys.executable, "-c", _LATENCY, str(config), str(requests)], env=cenv,
                             capture_output=True, text=True, timeout=300, check=True)
        res["api"] = json.loads(lat.stdout)
    finally:
        subprocess.run([*py, "down"], env=cenv, cwd=root, capture_output=True, timeout=300, check=False)
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    for name in peer_names:
        d = with_peer(ws, peers_mod.PEERS[name], {f"s{i}": [sleep, "3600"] for i in range(n)})
        try:
            d.start_all()
            d.status_cli()  # warm
            res[name] = _median([d.status_cli() for _ in range(reps)])
        finally:
            release_peer(ws, d)
    return res


def rows(R: dict) -> list[tuple]:
    """The table rows of run.py's render (metric, unit, {subject: value}, note)."""
    if "ps" not in R:
        return []
    p = R["ps"]
    out = [(f"`ps` of {p['n']} services, end to end", "s",
            {k: p[k] for k in ("corral", "supervisord", "s6", "runit") if k in p},
            "a fresh CLI process: corral ps; supervisorctl status; s6-svstat per service; sv status")]
    if "api" in p:
        out.append(("API GET /v1/services, p50", "ms", {"corral": p["api"]["p50"] / 1e9},
                    f"{p['n']} services"))
        out.append(("API GET /v1/services, p99", "ms", {"corral": p["api"]["p99"] / 1e9}, ""))
    return out
