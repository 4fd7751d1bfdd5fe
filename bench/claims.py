"""Resource claims against their floor (issue 7).

    python bench/claims.py [--count 1000]

Three measurements, each holding everything it got until the end:
- floor: `count` times bind(0) + open + flock(LOCK_EX|LOCK_NB) of a file in the runtime
  directory, through Python's socket/os/fcntl (each a thin wrapper over the syscall): what
  any cross-process port claim must do at least; once with new files, once reusing them;
- registry: `count` claims of a range of 2 x `count` values through corral's native
  registry (`_core._bench_claims`: lock, fstat/stat, record written), all held, timed per
  claim so the cost at 1 and at `count` live claims can be compared; once creating the
  claim files (every value of the pool), once with them there (ranges keep their files);
- engine: a stack of `count` services each claiming one value, minus the same stack
  without claims (the claims' share of a start), with the claim files there.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import statistics
import sys
import tempfile
import time

import corral
from corral import _core


def floor(count: int) -> tuple[float, float]:
    """(fresh files, the same files again): creating an inode is most of the cost on ext4."""
    took = []
    with tempfile.TemporaryDirectory(dir=_core.runtime_dir()) as tmp:
        for _pass in range(2):
            held = []
            t0 = time.perf_counter()
            for i in range(count):
                s = socket.socket()
                s.bind(("0.0.0.0", 0))
                fd = os.open(f"{tmp}/{i}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append((s, fd))
            took.append(time.perf_counter() - t0)
            for s, fd in held:
                s.close()
                os.close(fd)
    return took[0], took[1]


def _remove_type_files(kind: str) -> None:
    # Claim files of ranges are kept for reuse; this run's own type would pile up.
    claims = os.path.join(_core.runtime_dir(), "claims")
    for name in os.listdir(claims):
        if name.startswith(kind + "@"):
            os.unlink(os.path.join(claims, name))


def stack_start(count: int, claims: bool) -> float:
    kind = f"bench-{os.getpid()}"
    stack = corral.Stack(f"bench-claims-{int(claims)}")
    if claims:
        stack.resource_type(kind, range=(0, 2 * count - 1))
    for i in range(count):
        stack.add(f"s{i}", ["sleep", "3600"], resources={kind: 1} if claims else None)
    t0 = time.perf_counter()
    stack.start(timeout=600)
    took = time.perf_counter() - t0
    stack.close(timeout=600)
    return took


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    n = args.count
    fresh, reused, created, totals, firsts, lasts, with_c, without_c = [], [], [], [], [], [], [], []
    # The stack's pool once, so its claim files are there (the steady state).
    _core._bench_claims(f"bench-{os.getpid()}", 0, 2 * n - 1, 2 * n)
    for rep in range(args.reps):
        a, b = floor(n)
        fresh.append(a)
        reused.append(b)
        # First every value of the pool once, which creates the claim files; then n of
        # them with the files there (the steady state of a machine that uses its pools
        # again), timing the cost at 1 and at n live claims (half the pool held at the end:
        # ~2 probes a claim).
        kind = f"bench-{os.getpid()}-{rep}"
        created.append(sum(_core._bench_claims(kind, 0, 2 * n - 1, 2 * n)) / 2)
        per = _core._bench_claims(kind, 0, 2 * n - 1, n)
        totals.append(sum(per))
        _remove_type_files(f"bench-{os.getpid()}-{rep}")
        tenth = max(1, n // 10)
        firsts.append(statistics.median(per[:tenth]))
        lasts.append(statistics.median(per[-tenth:]))
        without_c.append(stack_start(n, False))
        with_c.append(stack_start(n, True))
    _remove_type_files(f"bench-{os.getpid()}")
    med = statistics.median
    print(f"{n} claims, median of {args.reps} runs")
    def row(what: str, seconds: float) -> None:
        print(f"  {what:<40} {seconds * 1e3:8.1f} ms  {seconds / n * 1e6:6.1f} us/claim")

    row("floor: bind(0) + create + flock", med(fresh))
    row("floor: bind(0) + open existing + flock", med(reused))
    row("registry, files created", med(created))
    row("registry, files there", med(totals))
    first, last = med(firsts) * 1e6, med(lasts) * 1e6
    print(f"    per claim, first tenth / last tenth:  {first:6.1f} us / {last:6.1f} us")
    print(f"  stack start, {n} services: without claims {med(without_c):.3f} s, with {med(with_c):.3f} s"
          f" (+{(med(with_c) - med(without_c)) / n * 1e6:.1f} us/service)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
