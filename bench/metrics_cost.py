"""The cost of metrics sampling: CPU the sampler thread spends per tick, per process read,
and as a share of one core, at N services; and whether unrelated processes on the machine
change it (they should not: a tick reads only the services' members and the pids created
since the previous tick).

    python bench/metrics_cost.py [--services 100,500] [--seconds 10] [--interval 1.0]
                                 [--crowd 2000] [--json OUT]

Each service is a copy of /bin/sleep in a private directory (so every process this run
starts is found by its exact executable path, as in run.py). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import corral


def measure(n: int, seconds: float, interval: float, sleep_bin: str) -> dict[str, float]:
    stack = corral.Stack(f"bench-metrics-{n}", metrics_interval=interval)
    for i in range(n):
        stack.add(f"s{i}", [sleep_bin, "3600"])
    try:
        stack.start(timeout=300)
        t0 = time.monotonic()
        ticks0, cpu0, procs0 = stack._handle.sampler_cost()
        time.sleep(seconds)  # the measurement window: the sampler runs on its own
        ticks, cpu, procs = stack._handle.sampler_cost()
        wall = time.monotonic() - t0
    finally:
        stack.close(timeout=300)
    ticks -= ticks0
    cpu -= cpu0
    procs -= procs0
    return {
        "services": n,
        "ticks": ticks,
        "cpu_ms_per_tick": 1e3 * cpu / max(ticks, 1),
        "us_per_process": 1e6 * cpu / max(procs, 1),
        "core_share_pct": 100.0 * cpu / wall,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--services", default="100,500")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--crowd", type=int, default=2000, help="unrelated sleepers for the last run (0: none)")
    p.add_argument("--json")
    args = p.parse_args()
    counts = [int(x) for x in args.services.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="corral-bench-metrics-") as tmp:
        sleep_bin = os.path.join(tmp, "sleep")
        shutil.copy("/bin/sleep", sleep_bin)
        for n in counts:
            results.append({**measure(n, args.seconds, args.interval, sleep_bin), "crowd": 0})
        if args.crowd:
            crowd = [subprocess.Popen([sleep_bin, "3600"]) for _ in range(args.crowd)]
            try:
                n = counts[-1]
                results.append({**measure(n, args.seconds, args.interval, sleep_bin), "crowd": args.crowd})
            finally:
                for c in crowd:
                    c.kill()
                for c in crowd:
                    c.wait()
    print(f"| services | unrelated processes | ticks | CPU per tick | per process read | share of one core "
          f"(interval {args.interval:g} s) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['services']} | {r['crowd']} | {r['ticks']} | {r['cpu_ms_per_tick']:.2f} ms | "
              f"{r['us_per_process']:.1f} us | {r['core_share_pct']:.2f} % |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
