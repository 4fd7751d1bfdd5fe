#!/usr/bin/env python3
"""The long run of the randomized stateful test (tests/python/test_stateful.py).

    python bench/stateful.py                                   200 sequences of 40 steps
    python bench/stateful.py --examples 1000 --steps 60 --seed 7
    python bench/stateful.py --trace --no-shrink               every call as it happens

The test command runs a few sequences (enough to catch a regression quickly); this runs
the same machine, with the same checks after every step, for as long as asked. It runs
pytest on `test_random_sequences` with the interpreter that runs this script, so it tests
whatever `import corral` finds there (`pip install .` from the checkout first). The
helper program is compiled by the tests' conftest unless CORRAL_HELPER names a built one.

A failure prints the shortest sequence Hypothesis found and a `@reproduce_failure` blob.
When the failure depends on timing, that replay may not fail again: `--no-shrink --trace`
shows the first failing sequence as it happened instead. Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST = "tests/python/test_stateful.py::test_random_sequences"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200, help="random sequences to run (default 200)")
    parser.add_argument("--steps", type=int, default=40, help="steps per sequence, at most (default 40)")
    parser.add_argument("--seed", type=int, help="Hypothesis seed (default: random)")
    parser.add_argument("--trace", action="store_true", help="print every call and failed check to stderr")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failure as it happened")
    args = parser.parse_args(argv)

    env = dict(os.environ, CORRAL_STATEFUL_EXAMPLES=str(args.examples), CORRAL_STATEFUL_STEPS=str(args.steps))
    if args.trace:
        env["CORRAL_STATEFUL_TRACE"] = "1"
    if args.no_shrink:
        env["CORRAL_STATEFUL_SHRINK"] = "0"
    # pytest-timeout's 300 s per test is for the test command; a long run has no limit
    # (every call inside it still has its own deadline).
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "timeout=0", TEST]
    if args.seed is not None:
        cmd.append(f"--hypothesis-seed={args.seed}")
    if args.trace:
        cmd.append("-s")
    print(f"stateful: {args.examples} sequences of up to {args.steps} steps", flush=True)
    t0 = time.monotonic()
    rc = subprocess.call(cmd, cwd=REPO, env=env)
    print(f"stateful: {'passed' if rc == 0 else 'FAILED'} in {time.monotonic() - t0:.0f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
