"""The cases of issue 6 ("the service machine") that load the engine from outside: a stop
among thousands of unrelated processes, status() under a crash loop, and `corral up` idle
with thousands of services. run.py calls these; each returns a dict of figures and raw runs.

Every process started here runs one of the bench's private binaries (Workspace.bin), so
that it can be found and killed by exact executable path, and nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else None


def _say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


# ---- unrelated processes ---------------------------------------------------------------------------


class Crowd:
    """`n` copies of the bench's private `sleep`, children of the driver (not of the corral
    worker): the unrelated processes of a busy machine. Spawned with posix_spawn and no fds
    kept; killed and reaped by pid at the end (only these pids, which are our children)."""

    def __init__(self, sleep: Path, n: int) -> None:
        self.pids: list[int] = []
        argv = [str(sleep), "3600"]
        try:
            for _ in range(n):
                self.pids.append(os.posix_spawn(argv[0], argv, os.environ))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.pids.clear()


def bench_stop_noise(r, ws, cfg: dict) -> dict:
    """One service's stop (and start again) in a small stack, without and with `noise`
    unrelated processes on the machine; alternating, `reps` times. The crowd is up before
    the worker starts its stack, as on a machine that was busy already."""
    sleep = [str(ws.sleep), "3600"]
    runs: dict[str, list] = {"quiet": [], "crowd": []}
    for rep in range(cfg["stop1_reps"]):
        q = r.corral("stop1", argv=sleep, cycles=cfg["stop1_cycles"])
        listdir_q = _listdir_proc_s()
        crowd = Crowd(ws.sleep, cfg["stop1_noise"])
        try:
            c = r.corral("stop1", argv=sleep, cycles=cfg["stop1_cycles"])
            listdir_c = _listdir_proc_s()
        finally:
            crowd.close()
        for key, x in (("quiet", q), ("crowd", c)):
            runs[key].append({"stop": _median(x["stop"]), "start": _median(x["start"]),
                              "stop_p90": _pct(x["stop"], 0.9),
                              "listdir_proc": listdir_q if key == "quiet" else listdir_c})
        _say(f"  stop one, rep {rep + 1}: {runs['quiet'][-1]['stop'] * 1e3:.2f} ms quiet, "
             f"{runs['crowd'][-1]['stop'] * 1e3:.2f} ms with {cfg['stop1_noise']} processes")
    figures = ("stop", "start", "stop_p90", "listdir_proc")
    out = {k: {m: _median([x[m] for x in v]) for m in figures} | {"runs": v} for k, v in runs.items()}
    out["ratio"] = _median([c["stop"] / q["stop"] for q, c in zip(runs["quiet"], runs["crowd"], strict=True)])
    out["ratio_cycle"] = _median([(c["stop"] + c["start"]) / (q["stop"] + q["start"])
                                  for q, c in zip(runs["quiet"], runs["crowd"], strict=True)])
    out["noise"], out["cycles"] = cfg["stop1_noise"], cfg["stop1_cycles"]
    return out


def bench_crashloop(r, ws, cfg: dict) -> dict:
    """status() under a crash loop, with the default jitter (0.1, what restart="always"
    gives) and with none (every service respawns in the same instant, in lockstep)."""
    out = {}
    for jitter in cfg["crash_jitters"]:
        runs = []
        for rep in range(cfg["crash_reps"]):
            c = r.corral("crashloop", helper=str(ws.helper), n=cfg["crash_n"], backoff=cfg["crash_backoff"],
                         jitter=jitter, calls=cfg["crash_calls"])
            xs = c["status_ns"]
            runs.append({"p50": _pct(xs, 0.5), "p99": _pct(xs, 0.99), "max": max(xs),
                         "restarts_per_s": c["restarts_per_s"], "owner_cpu_share": c["owner_cpu_share"]})
            _say(f"  status under a crash loop, jitter {jitter:g}, rep {rep + 1}: "
                 f"p50 {runs[-1]['p50'] / 1e6:.3f} ms, p99 {runs[-1]['p99'] / 1e6:.3f} ms, "
                 f"{c['restarts_per_s']:.0f} restarts/s")
        out[str(jitter)] = {k: _median([x[k] for x in runs]) for k in runs[0]} | {
            "jitter": jitter, "runs": runs}
    return out | {"n": cfg["crash_n"], "backoff": cfg["crash_backoff"], "calls": cfg["crash_calls"]}


def _listdir_proc_s(k: int = 20) -> float:
    """Median time of one os.listdir("/proc"): what a walk of every pid on the machine
    costs before it opens anything."""
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        os.listdir("/proc")
        ts.append(time.perf_counter() - t)
    return _median(ts)


# ---- corral up, idle -------------------------------------------------------------------------------


def _cpu_and_switches(pid: int) -> tuple[float, int]:
    """CPU seconds of the process, all its threads, and the voluntary + involuntary context
    switches of all its threads. CPU from /proc/PID/task/*/schedstat (nanoseconds; the
    utime + stime of /proc/PID/stat count in 10 ms ticks, too coarse for "no CPU")."""
    cpu_ns, switches = 0, 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            cpu_ns += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
    return cpu_ns / 1e9, switches


def _thread_switches(pid: int) -> dict[str, int]:
    """Context switches per thread, keyed "tid comm" (which thread wakes up)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            n = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
            out[f"{tid} {comm}"] = n
    return out


def _ticks_cpu(pid: int) -> float:
    """utime + stime of /proc/PID/stat (all threads, 10 ms ticks): a cross-check."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def _watcher(pid: int) -> int | None:
    for child in _children(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == "corral-watch":
                return child
    return None


def up_idle_once(ws, env: dict, n: int, seconds: float, settle: float) -> dict:
    """`python -m corral up -f FILE` with `n` sleeps; once it has said "stack ready" (and
    `settle` seconds more), its CPU time and wake-ups over `seconds`. Its stdout goes to
    /dev/null (a pipe nobody reads would block a lossless `up`)."""
    path = ws.root / f"up-{n}.toml"
    lines = ['name = "benchup"', ""]
    for i in range(n):
        lines += [f"[services.s{i}]", f'command = ["{ws.sleep}", "3600"]', ""]
    path.write_text("\n".join(lines))
    p = subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(path)], env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    ready = threading.Event()
    err: list[str] = []

    def read() -> None:  # keeps stderr drained for the whole run, and notes "stack ready"
        assert p.stderr is not None
        for line in p.stderr:
            err.append(line)
            if "stack ready" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    t0 = time.monotonic()
    try:
        if not ready.wait(300) or p.poll() is not None:
            raise RuntimeError(f"corral up did not get ready:\n{''.join(err)[-3000:]}")
        startup = time.monotonic() - t0
        time.sleep(settle)
        watcher = _watcher(p.pid)
        cpu0, sw0, ticks0 = *_cpu_and_switches(p.pid), _ticks_cpu(p.pid)
        per0 = _thread_switches(p.pid)
        wcpu0, wsw0 = _cpu_and_switches(watcher) if watcher else (0.0, 0)
        time.sleep(seconds)
        cpu1, sw1, ticks1 = *_cpu_and_switches(p.pid), _ticks_cpu(p.pid)
        per1 = _thread_switches(p.pid)
        wcpu1, wsw1 = _cpu_and_switches(watcher) if watcher else (0.0, 0)
        threads = len(os.listdir(f"/proc/{p.pid}/task"))
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        reader.join(timeout=10)
    return {"cpu": cpu1 - cpu0, "wakeups": sw1 - sw0, "cpu_ticks": ticks1 - ticks0,
            "watcher_cpu": wcpu1 - wcpu0, "watcher_wakeups": wsw1 - wsw0, "threads": threads,
            "startup": startup,
            "wakeups_by_thread": {k: v - per0.get(k, 0) for k, v in per1.items()},
            "exit_code": p.returncode}


def bench_up_idle(r, ws, cfg: dict) -> dict:
    runs = []
    for rep in range(cfg["up_reps"]):
        x = up_idle_once(ws, r.env, cfg["up_n"], cfg["up_seconds"], cfg["settle"])
        runs.append(x)
        _say(f"  corral up idle, rep {rep + 1}: {x['cpu'] * 1e3:.1f} ms CPU, {x['wakeups']} wake-ups in "
             f"{cfg['up_seconds']:.0f} s (watcher {x['watcher_cpu'] * 1e3:.1f} ms, {x['watcher_wakeups']}); "
             f"ready after {x['startup']:.1f} s")
    keys = ("cpu", "wakeups", "watcher_cpu", "watcher_wakeups", "startup")
    return {k: _median([x[k] for x in runs]) for k in keys} | {
        "n": cfg["up_n"], "seconds": cfg["up_seconds"], "runs": runs}
