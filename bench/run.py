#!/usr/bin/env python3
"""corral's benchmarks: corral, the physical floor and the peers, side by side in one run.

    python bench/run.py                   the full run (~6 min; first run also builds a
                                          Release engine, ~2.5 min on 2 cores)
    python bench/run.py --quick --json OUT   the smoke mode (a few seconds, peers skipped)

See bench/README.md for what each figure means and docs/benchmarks.md for the results.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import engine_load as _load  # noqa: E402
import peers as _peers  # noqa: E402
import ps_case as _ps  # noqa: E402

SUBJECTS = ("corral", "floor", "supervisord", "s6", "runit", "pm2")
PEERS = ("supervisord", "s6", "runit", "pm2")


# ---- configuration ----------------------------------------------------------------------------


def settings(quick: bool) -> dict:
    if quick:
        return dict(
            ns=[20],
            reps=1,
            peer_reps=1,
            restart_window=0.5,
            peer_restart_window=3.0,
            exitlat_k=20,
            exitlat_gap=0.01,
            exitlat_reps=1,
            chain=3,
            idle_n=20,
            idle_seconds=1.0,
            idle_reps=1,
            mem_ns=[0, 20],
            status_n=20,
            status_calls=100,
            log_bytes=2_000_000,
            log_reps=1,
            claims=100,
            per=10,
            supervisord_default_n=None,
            stop1_noise=200,
            stop1_cycles=5,
            stop1_reps=1,
            crash_n=10,
            crash_backoff=0.05,
            crash_jitters=[0.1],
            crash_calls=100,
            crash_reps=1,
            tick_backoff=0.05,
            up_n=20,
            up_seconds=1.0,
            up_reps=1,
            settle=0.2,
            stop_settle=0.1,
            quick=True,
        )
    return dict(
        ns=[100, 500],
        reps=7,
        peer_reps=3,
        restart_window=2.0,
        peer_restart_window=6.0,
        exitlat_k=200,
        exitlat_gap=0.02,
        exitlat_reps=3,
        chain=10,
        idle_n=100,
        idle_seconds=20.0,
        idle_reps=3,
        mem_ns=[0, 100, 500],
        status_n=100,
        status_calls=1000,
        log_bytes=50_000_000,
        log_reps=3,
        claims=1000,
        per=10,
        supervisord_default_n=500,
        stop1_noise=5000,
        stop1_cycles=40,
        stop1_reps=5,
        crash_n=100,
        crash_backoff=0.05,
        crash_jitters=[0.1, 0.0],
        crash_calls=2000,
        crash_reps=3,
        tick_backoff=0.02,
        up_n=2000,
        up_seconds=20.0,
        up_reps=3,
        settle=1.0,
        stop_settle=0.5,  # between "all ready" and the stop (not timed), for every subject
    )


# ---- small utilities --------------------------------------------------------------------------


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def say(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_pressure() -> dict:
    """The share of time some runnable task waited for a CPU (/proc/pressure/cpu), percent:
    how busy the machine was with other work around the run."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0].split()
        return {k: float(v) for k, v in (f.split("=") for f in first[1:])}
    except (OSError, IndexError, ValueError):
        return {}


def cpu_steal() -> float:
    """Seconds of CPU the hypervisor gave to others (steal), summed over the CPUs."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def _pressure_pct(before: dict, seconds: float):
    after = cpu_pressure()
    if "total" not in before or "total" not in after or seconds <= 0:
        return None
    return round((after["total"] - before["total"]) / (seconds * 1e6) * 100, 1)


def wait_quiet(limit: float, threshold: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        p = cpu_pressure().get("avg10")
        if p is None or p < threshold:
            return
        say(f"waiting for a quieter machine (CPU pressure avg10 {p:.0f}%)")
        time.sleep(10)


# ---- the bench's private directory and binaries ----------------------------------------------------


class Workspace:
    """A private temp dir: the floor, the helper and a copy of /bin/sleep are compiled/copied
    into tmp/bin, so every service of every subject runs a binary only this run uses (and
    leftovers can be found exactly, by executable path)."""

    def __init__(self, keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="corral-bench-"))
        self.bin = self.root / "bin"
        self.bin.mkdir()
        shm = Path("/dev/shm")
        self.fast = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=shm)) if shm.is_dir() else self.root
        self.keep = keep
        self.daemons: list[_peers.Daemon] = []
        cc = os.environ.get("CC", "cc")
        self.floor = self.bin / "floor"
        self.helper = self.bin / "corral_helper"
        subprocess.run(
            [cc, "-O2", "-std=c11", "-D_GNU_SOURCE", "-o", self.floor, HERE / "floor.c"], check=True
        )
        subprocess.run(
            [
                cc,
                "-O2",
                "-std=c11",
                "-D_GNU_SOURCE",
                "-o",
                self.helper,
                REPO / "tests" / "helper" / "corral_helper.c",
            ],
            check=True,
        )
        self.sleep = self.bin / "sleep"
        shutil.copy2(shutil.which("sleep") or "/bin/sleep", self.sleep)
        atexit.register(self.cleanup)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def leftovers(self) -> list[int]:
        out = []
        prefix = str(self.bin) + "/"
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/exe").startswith(prefix):
                        out.append(int(entry))
                except OSError:
                    pass
        return out

    def cleanup(self) -> None:
        for d in self.daemons:
            with contextlib.suppress(Exception):
                d.down()
        self.daemons.clear()
        for pid in self.leftovers():  # only processes running one of our private binaries
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
            if self.fast != self.root:
                shutil.rmtree(self.fast, ignore_errors=True)


# ---- which corral ------------------------------------------------------------------------------


def _build_type_of(so: Path) -> str:
    for parent in so.resolve().parents:
        cache = parent / "CMakeCache.txt"
        if cache.exists():
            for line in cache.read_text(errors="replace").splitlines():
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    return line.split("=", 1)[1] or "(none)"
            return "(unknown)"
    return "installed wheel (Release)" if "site-packages" in str(so) else "(unknown)"


def release_engine(build_dir: Path, source: Path = REPO) -> Path:
    """Configures and builds a Release engine from `source` (this checkout by default) into
    `build_dir`, and returns a directory to put on PYTHONPATH whose `corral` package is that
    source's Python code with that engine."""
    import sysconfig

    ext = sysconfig.get_config_var("EXT_SUFFIX")
    so = build_dir / "src" / "cpp" / "bindings" / f"_core{ext}"
    # A build directory configured from another checkout (a worktree, a clone) would build
    # that checkout's engine, not this one's: start it again.
    cache = build_dir / "CMakeCache.txt"
    if cache.exists() and f"CMAKE_HOME_DIRECTORY:INTERNAL={Path(source).resolve()}\n" not in cache.read_text():
        say(f"{build_dir} was configured from another checkout: configuring it again")
        shutil.rmtree(build_dir)
    if not (build_dir / "build.ninja").exists():
        say(f"configuring a Release engine in {build_dir} (first run only)")
        pybind11_dir = subprocess.run(
            [sys.executable, "-m", "pybind11", "--cmakedir"], check=True, capture_output=True, text=True
        ).stdout.strip()
        subprocess.run(
            [
                "cmake",
                "-S",
                source,
                "-B",
                build_dir,
                "-G",
                "Ninja",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DCORRAL_BUILD_PYTHON=ON",
                "-DCORRAL_BUILD_TESTS=OFF",
                f"-DPython_EXECUTABLE={sys.executable}",
                f"-Dpybind11_DIR={pybind11_dir}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    say(f"building the Release engine (ninja -C {build_dir})")
    # At most 2 jobs: the bench shares small machines, and a build at ninja's default
    # (cores + 2) would disturb whatever else runs there.
    jobs = str(min(2, os.cpu_count() or 1))
    subprocess.run(["ninja", "-C", build_dir, "-j", jobs], check=True, stdout=subprocess.DEVNULL)
    pkg = build_dir / "pkg" / "corral"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    for f in (source / "src" / "python" / "corral").iterdir():
        # Modules, data files (openapi.json) and subpackages (cli/, dashboard/): all of the
        # package but the compiled module of another build.
        if not f.name.endswith(".so") and f.name != "__pycache__":
            (pkg / f.name).symlink_to(f)
    (pkg / so.name).symlink_to(so)
    return build_dir / "pkg"


def corral_env(engine: str, build_dir: Path, source: Path = REPO) -> tuple[dict, str]:
    env = dict(os.environ)
    if engine == "release":
        env["PYTHONPATH"] = str(release_engine(build_dir, source))
    elif engine == "checkout":
        env["PYTHONPATH"] = str(REPO / "src" / "python")
    else:  # "import": whatever this interpreter imports as it is run, else the checkout
        probe = subprocess.run([sys.executable, "-c", "import corral"], capture_output=True, env=env)
        if probe.returncode != 0:
            env["PYTHONPATH"] = str(REPO / "src" / "python")
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import corral, os; from corral import _engine; print(os.path.realpath(_engine._core.__file__))",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    return env, where


# ---- running things ---------------------------------------------------------------------------


class Runner:
    def __init__(self, ws: Workspace, env: dict) -> None:
        self.ws = ws
        self.env = env
        self.worker = str(HERE / "corral_worker.py")

    def corral(self, case: str, timeout: float = 300, env: dict | None = None, **args) -> dict:
        p = subprocess.run(
            [sys.executable, self.worker, case, json.dumps(args)],
            capture_output=True,
            text=True,
            env=self.env | (env or {}),
            timeout=timeout,
        )
        if p.returncode != 0:
            raise RuntimeError(f"corral {case} failed:\n{p.stderr[-3000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def corral_async(self, case: str, **args) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, self.worker, case, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    @staticmethod
    def collect(p: subprocess.Popen, timeout: float = 300) -> dict:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"corral worker failed:\n{err[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def floor(self, *args, timeout: float = 300) -> dict:
        p = subprocess.run(
            [str(self.ws.floor), *map(str, args)], capture_output=True, text=True, timeout=timeout
        )
        if p.returncode != 0:
            raise RuntimeError(f"floor {args[0]} failed: {p.stderr}")
        return json.loads(p.stdout)


def peer_root(ws: Workspace, tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=ws.root))


def with_peer(ws: Workspace, cls, programs: dict, **kw):
    d = cls(peer_root(ws, cls.name), programs, **kw)
    d.exclude = str(ws.bin) + "/"
    ws.daemons.append(d)
    d.up()
    return d


def _orphan_zombies() -> int:
    n = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                n += fields[0] == "Z" and fields[1] == "1"
            except (OSError, IndexError):
                pass
    return n


def release_peer(ws: Workspace, d) -> None:
    """Tears the peer down and lets the machine settle: runsv processes, for one, end as
    zombies of PID 1 that init reaps a little later."""
    d.down()
    ws.daemons.remove(d)
    deadline = time.monotonic() + 10
    while _orphan_zombies() > 5 and time.monotonic() < deadline:
        time.sleep(0.05)


# ---- the cases ----------------------------------------------------------------------------------


def bench_startstop(r: Runner, ws: Workspace, cfg: dict, peers: list[str]) -> dict:
    sleep = [str(ws.sleep), "3600"]
    out = {}
    for n in cfg["ns"]:
        res = {s: {"start": [], "stop": []} for s in ["corral", "floor", *peers]}
        reps = cfg["reps"]
        for rep in range(reps):
            # Unmeasured warm-up: on a VM, memory freed by the previous subject's processes
            # may have gone back to the host, and the first to allocate again pays for it.
            r.floor("startstop", n, 0, *sleep)
            f = r.floor("startstop", n, cfg["stop_settle"], *sleep)
            res["floor"]["start"].append(f["start"])
            res["floor"]["stop"].append(f["stop"])
            c = r.corral("startstop", n=n, argv=sleep, settle=cfg["stop_settle"])
            res["corral"]["start"].append(c["start"])
            res["corral"]["stop"].append(c["stop"])
            if rep < cfg["peer_reps"]:
                for name in peers:
                    d = with_peer(ws, _peers.PEERS[name], {f"s{i}": sleep for i in range(n)})
                    try:
                        res[name]["start"].append(d.start_all())
                        time.sleep(cfg["stop_settle"])
                        res[name]["stop"].append(d.stop_all())
                    finally:
                        release_peer(ws, d)
            say(
                f"  start/stop N={n} rep {rep + 1}/{reps}: corral {c['start']:.3f}/{c['stop']:.3f} s, "
                f"floor {f['start']:.3f}/{f['stop']:.3f} s"
            )
        out[n] = {s: {k: median(v) for k, v in m.items()} | {"runs": m} for s, m in res.items()}
    n = cfg["supervisord_default_n"]
    if n and "supervisord" in peers:
        runs = []
        for _ in range(cfg["peer_reps"]):
            d = with_peer(ws, _peers.Supervisord, {f"s{i}": sleep for i in range(n)}, startsecs=1)
            try:
                runs.append(d.start_all())
            finally:
                release_peer(ws, d)
        out["supervisord_default_startsecs"] = {"n": n, "start": median(runs), "runs": runs}
    return out


def bench_restart(r: Runner, ws: Workspace, cfg: dict, peers: list[str]) -> dict:
    res = {s: [] for s in ["corral", "floor", *peers]}
    for rep in range(cfg["peer_reps"]):
        counter = ws.path(f"count-floor-{rep}")
        f = r.floor("restart", cfg["restart_window"], ws.helper, "count-file", counter, "exit", "1")
        res["floor"].append(f["cycle"])
        c = r.corral(
            "restart",
            helper=str(ws.helper),
            counter=ws.path(f"count-corral-{rep}"),
            window=cfg["restart_window"],
        )
        res["corral"].append(c["cycle"])
        for name in peers:
            counter = ws.path(f"count-{name}-{rep}")
            prog = {"crash": [str(ws.helper), "count-file", counter, "exit", "1"]}
            kw = {"autorestart": True} if name == "supervisord" else {}
            d = with_peer(ws, _peers.PEERS[name], prog, **kw)
            try:
                d.start_one("crash")
                time.sleep(1.5)
                c0, t0 = _count(counter), time.perf_counter()
                time.sleep(cfg["peer_restart_window"])
                c1, t1 = _count(counter), time.perf_counter()
                res[name].append((t1 - t0) / max(1, c1 - c0))
            finally:
                release_peer(ws, d)
        say(
            f"  restart rep {rep + 1}: corral {c['cycle'] * 1e3:.3f} ms ({c['cycles']} cycles), "
            f"floor {f['cycle'] * 1e3:.3f} ms"
        )
    return {s: {"cycle": median(v), "runs": v} for s, v in res.items()}


def _count(path: str) -> int:
    try:
        return Path(path).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def bench_exitlat(r: Runner, ws: Workspace, cfg: dict) -> dict:
    runs = {"corral_engine": [], "corral_python": [], "floor": []}
    extra = {}
    for rep in range(cfg["exitlat_reps"]):
        f = r.floor("exitlat", cfg["exitlat_k"], ws.fast / f"stamp-floor-{rep}", ws.helper)
        c = r.corral(
            "exitlat",
            helper=str(ws.helper),
            stampfile=str(ws.fast / f"stamp-corral-{rep}"),
            k=cfg["exitlat_k"],
            gap=cfg["exitlat_gap"],
        )
        for key, xs in (
            ("floor", f["latency_ns"]),
            ("corral_engine", c["engine_ns"]),
            ("corral_python", c["python_ns"]),
        ):
            runs[key].append({"p50": pct(xs, 0.5), "p99": pct(xs, 0.99), "max": max(xs), "n": len(xs)})
        extra = {k: c[k] for k in ("offset_uncertainty_ns", "offset_drift_ns", "float_resolution_ns")}
        say(
            f"  exit->event rep {rep + 1}: corral engine p50 {runs['corral_engine'][-1]['p50'] / 1e3:.0f} us "
            f"p99 {runs['corral_engine'][-1]['p99'] / 1e3:.0f} us; "
            f"floor p50 {runs['floor'][-1]['p50'] / 1e3:.0f} us"
        )
    out = {
        k: {"p50": median([x["p50"] for x in v]), "p99": median([x["p99"] for x in v]), "runs": v}
        for k, v in runs.items()
    }
    out["clock"] = extra
    return out


def bench_chain(r: Runner, ws: Workspace, cfg: dict) -> dict:
    res = {"floor": [], "corral_default": [], "corral_5ms": []}
    links = {}
    for _ in range(cfg["reps"]):
        f = r.floor("chain", cfg["chain"], ws.helper)
        res["floor"].append(f["total"])
        c = r.corral("chain", helper=str(ws.helper), n=cfg["chain"])
        res["corral_default"].append(c["total"])
        links["corral_default"] = c["links"]
        c = r.corral("chain", helper=str(ws.helper), n=cfg["chain"], interval=0.005)
        res["corral_5ms"].append(c["total"])
        links["corral_5ms"] = c["links"]
    out = {k: {"total": median(v), "runs": v} for k, v in res.items()}
    for k in ("corral_default", "corral_5ms"):
        out[k]["overhead"] = out[k]["total"] - out["floor"]["total"]
        out[k]["last_links"] = links[k]
    out["n"] = cfg["chain"]
    return out


def bench_idle(r: Runner, ws: Workspace, cfg: dict, peers: list[str]) -> dict:
    n, secs = cfg["idle_n"], cfg["idle_seconds"]
    sleep = [str(ws.sleep), "3600"]
    runs = {"bare": [], "off": [], "1s": []} | {p: [] for p in peers}
    peer_status = {p: {"api": [], "cli": []} for p in peers}
    for rep in range(cfg["idle_reps"]):
        daemons = {}
        try:
            for name in peers:
                d = with_peer(ws, _peers.PEERS[name], {f"s{i}": sleep for i in range(n)})
                d.start_all()
                daemons[name] = d
            # All at once: every one of them is idle, each is measured on its own process.
            procs = {
                "bare": r.corral_async("bare", seconds=secs, settle=cfg["settle"]),
                "off": r.corral_async(
                    "idle", n=n, argv=sleep, seconds=secs, sample_every=0, settle=cfg["settle"]
                ),
                "1s": r.corral_async(
                    "idle", n=n, argv=sleep, seconds=secs, sample_every=1.0, settle=cfg["settle"]
                ),
            }
            time.sleep(
                cfg["settle"] + 0.5
            )  # they start their services and settle (the corral cases wait 1 s)
            before = {name: d.footprint() for name, d in daemons.items()}
            for k, p in procs.items():
                runs[k].append(r.collect(p, timeout=secs + 120))
            after = {name: d.footprint() for name, d in daemons.items()}
            for name in daemons:
                runs[name].append(
                    {
                        "cpu": after[name]["cpu"] - before[name]["cpu"],
                        "rss_kb": after[name]["rss_kb"],
                        "pss_kb": after[name]["pss_kb"],
                        "processes": after[name]["processes"],
                    }
                )
                d = daemons[name]
                peer_status[name]["api"] += [d.status_api() for _ in range(20)]
                peer_status[name]["cli"] += [d.status_cli() for _ in range(3)]
        finally:
            for d in daemons.values():
                release_peer(ws, d)
        say(
            f"  idle rep {rep + 1}: corral off cpu {runs['off'][-1]['cpu']:.4f} s, "
            f"engine wake-ups {runs['off'][-1]['wakeups_engine']}; at 1 s cpu {runs['1s'][-1]['cpu']:.4f} s"
        )
    out = {}
    for k in ("off", "1s"):
        share = [(x["rss_kb"] - b["rss_kb"]) for x, b in zip(runs[k], runs["bare"], strict=False)]
        out[k] = {
            "cpu": median([x["cpu"] for x in runs[k]]),
            "wakeups_engine": median([x["wakeups_engine"] for x in runs[k]]),
            "rss_kb": median([x["rss_kb"] for x in runs[k]]),
            "share_kb": median(share),
            "watcher_pss_kb": median([x["watcher_pss_kb"] for x in runs[k]]),
            "samples": median([x["samples"] for x in runs[k]]),
        }
    out["bare"] = {
        "cpu": median([x["cpu"] for x in runs["bare"]]),
        "rss_kb": median([x["rss_kb"] for x in runs["bare"]]),
    }
    for p in peers:
        out[p] = {
            "cpu": median([x["cpu"] for x in runs[p]]),
            "rss_kb": median([x["rss_kb"] for x in runs[p]]),
            "pss_kb": median([x["pss_kb"] for x in runs[p]]),
            "processes": runs[p][-1]["processes"],
            "status_api": median(peer_status[p]["api"]),
            "status_cli": median(peer_status[p]["cli"]),
        }
    out["n"], out["seconds"], out["runs"] = n, secs, runs
    return out


def bench_mem(r: Runner, ws: Workspace, cfg: dict) -> dict:
    sleep = [str(ws.sleep), "3600"]
    res = {n: [] for n in cfg["mem_ns"]}
    bare = []
    for _ in range(cfg["idle_reps"]):
        bare.append(r.corral("bare", seconds=0.1)["rss_kb"])
        for n in cfg["mem_ns"]:
            res[n].append(r.corral("mem", n=n, argv=sleep, settle=cfg["settle"]))
    out = {"bare_rss_kb": median(bare)}
    for n, xs in res.items():
        out[n] = {
            k: median([x[k] for x in xs]) for k in ("rss_kb", "pss_kb", "watcher_pss_kb", "watcher_uss_kb")
        }
    ns = cfg["mem_ns"]
    lo, hi = ns[1], ns[-1]
    out["per_service_kb"] = (out[hi]["rss_kb"] - out[lo]["rss_kb"]) / (hi - lo) if hi > lo else None
    out["import_and_engine_kb"] = out[0]["rss_kb"] - out["bare_rss_kb"]
    return out


def bench_status(r: Runner, ws: Workspace, cfg: dict) -> dict:
    runs = []
    for _ in range(cfg["idle_reps"]):
        c = r.corral("status", n=cfg["status_n"], argv=[str(ws.sleep), "3600"], calls=cfg["status_calls"])
        runs.append(
            {
                "p50": pct(c["status_ns"], 0.5),
                "p99": pct(c["status_ns"], 0.99),
                "state_p50": pct(c["state_ns"], 0.5),
            }
        )
    return {k: median([x[k] for x in runs]) for k in ("p50", "p99", "state_p50")} | {
        "n": cfg["status_n"],
        "runs": runs,
    }


def _cat_pipe(helper: Path, size: int) -> dict:
    """`helper flood SIZE | cat > /dev/null`: the same writer, read by cat through a pipe
    (timed from before the spawns to both exits, as the floor's reader is)."""
    t0 = time.perf_counter()
    w = subprocess.Popen([str(helper), "flood", str(size)], stdout=subprocess.PIPE)
    c = subprocess.Popen(["cat"], stdin=w.stdout, stdout=subprocess.DEVNULL)
    assert w.stdout is not None
    w.stdout.close()
    w.wait()
    c.wait()
    secs = time.perf_counter() - t0
    return {"seconds": secs, "lines_per_s": size / 100 / secs, "lines": size // 100}


def bench_logs(r: Runner, ws: Workspace, cfg: dict, peers: list[str]) -> dict:
    res = {"floor": [], "cat": [], "corral": [], "corral_subscribed": [], "corral_batch": []} | {
        p: [] for p in peers}
    alone = []
    size = cfg["log_bytes"]
    prog = {"flood": [str(ws.helper), "flood", str(size)]}
    for _ in range(cfg["log_reps"]):
        for name in peers:
            root = peer_root(ws, name)
            kw = {"logfile": str(root / "flood.log")} if name == "supervisord" else {"logged": True}
            d = _peers.PEERS[name](root, prog, **kw)
            d.exclude = str(ws.bin) + "/"
            ws.daemons.append(d)
            d.up()
            try:
                secs = d.flood("flood", size)
                res[name].append({"seconds": secs, "lines_per_s": size / 100 / secs, "lines": size // 100})
            finally:
                release_peer(ws, d)
        f = r.floor("logs", cfg["log_bytes"], ws.helper)
        res["floor"].append(f)
        alone.append(f["writer_alone"])
        res["cat"].append(_cat_pipe(ws.helper, size))
        res["corral"].append(r.corral("logs", helper=str(ws.helper), bytes=cfg["log_bytes"]))
        sub = r.corral("logs", helper=str(ws.helper), bytes=cfg["log_bytes"], subscribe=True,
                       tick_backoff=cfg["tick_backoff"])
        res["corral_subscribed"].append(sub)
        # The same consumer reading columns (Stack.event_batch) instead of a dict per event.
        bat = r.corral("logs", helper=str(ws.helper), bytes=cfg["log_bytes"], subscribe=True,
                       tick_backoff=cfg["tick_backoff"], reader="batch")
        res["corral_batch"].append(bat)
        say(
            f"  logs: corral {res['corral'][-1]['lines_per_s'] / 1e6:.2f} M/s, with events() "
            f"{sub['lines_per_s'] / 1e6:.2f} M/s ({sub['events_dropped']} dropped), with event_batch() "
            f"{bat['lines_per_s'] / 1e6:.2f} M/s ({bat['events_dropped']} dropped), "
            f"cat {res['cat'][-1]['lines_per_s'] / 1e6:.2f} M/s; "
            f"tick: {sub['tick_restarts']}/{bat['tick_restarts']} restarts, "
            f"{len(sub['tick_states'])}/{len(bat['tick_states'])} state events"
        )
    out = {
        k: {
            "lines_per_s": median([x["lines_per_s"] for x in v]),
            "seconds": median([x["seconds"] for x in v]),
            "lines": v[-1]["lines"],
        }
        for k, v in res.items()
    }
    for key in ("corral_subscribed", "corral_batch"):
        subs = res[key]
        out[key] |= {
            "events_seen": median([x["events_seen"] for x in subs]),
            "events_dropped": median([x["events_dropped"] for x in subs]),
            # every crash cycle of the ticking service is (ready,) backoff, starting: its
            # state events, counted, against the ones its restarts imply
            "state_check": [_tick_check(x["tick_states"], x["tick_restarts"]) for x in subs],
        }
    out["corral_ratio_to_cat"] = median(
        [c["lines_per_s"] / k["lines_per_s"] for c, k in zip(res["corral"], res["cat"], strict=True)]
    )
    out["writer_alone"] = median(alone)
    out["bytes"] = cfg["log_bytes"]
    return out


def bench_ports(r: Runner, ws: Workspace, cfg: dict) -> dict:
    """Both corral and the floor claim into the same claim directory, pre-filled with a file
    for every ephemeral port (so neither pays for creating files the other found there)."""
    runtime = ws.root / "runtime"
    lockdir = runtime / "ports"
    lockdir.mkdir(parents=True)
    lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if not cfg.get("quick"):  # the smoke mode skips this (about a second of file creation)
        for port in range(lo, hi + 1):
            os.close(os.open(lockdir / str(port), os.O_CREAT | os.O_WRONLY, 0o600))
    env = {"CORRAL_RUNTIME_DIR": str(runtime)}
    res = {"corral": [], "floor_bind": [], "floor_bind_flock": []}
    distinct = True
    for _rep in range(cfg["reps"]):
        c = r.corral(
            "ports", env=env, claims=cfg["claims"], per=cfg["per"], argv=[str(ws.sleep), "3600"], reps=3
        )
        res["corral"].append(c["seconds"])
        distinct = distinct and c["distinct"]
        res["floor_bind"].append(r.floor("ports", cfg["claims"])["seconds"])
        res["floor_bind_flock"].append(r.floor("ports", cfg["claims"], lockdir)["seconds"])
    return {k: {"seconds": median(v), "runs": v} for k, v in res.items()} | {
        "claims": cfg["claims"],
        "corral_distinct": distinct,
    }


# ---- the report ---------------------------------------------------------------------------------


def source_state() -> str:
    """The commit of the checkout, and whether its engine or Python code had local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--", "src"], capture_output=True, text=True
        ).stdout.strip()
        return head + (" + local changes in src/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    osname = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "os": osname,
        "memory_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
    }


def versions() -> dict:
    out = {}
    for name, cmd in (("supervisord", ["supervisord", "--version"]),):
        with contextlib.suppress(OSError):
            out[name] = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    for name, pkg in (("s6", "s6"), ("runit", "runit")):
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
            if v.returncode == 0:
                out[name] = v.stdout.strip()
        except OSError:
            pass
    return out


def fmt(v, unit: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if unit == "s":
        return f"{v:.3f} s" if v >= 0.1 else f"{v * 1e3:.1f} ms"
    if unit == "ms":
        return f"{v * 1e3:.2f} ms" if v < 0.01 else f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "us":
        return f"{v / 1e3:.0f} µs" if v >= 1e4 else f"{v / 1e3:.1f} µs"
    if unit == "cpu":
        return f"{v * 1e3:.1f} ms"
    if unit == "kb":
        return f"{v / 1024:.1f} MB" if abs(v) >= 1024 else f"{v:.0f} KB"
    if unit == "lps":
        return f"{v / 1e6:.2f} M/s"
    if unit == "int":
        return f"{v:.0f}"
    return f"{v}"


def ratio(a, b) -> str:
    if a is None or b is None or isinstance(a, str) or isinstance(b, str) or b == 0:
        return "–"
    x = a / b
    if x == 0:
        return "0"
    if x < 0.1:
        return f"1/{1 / x:.0f}"
    return f"{x:.2f}×" if x < 10 else f"{x:.0f}×"


def build_rows(R: dict, peers: list[str], skipped: dict) -> tuple[list, list]:
    """Rows of (metric, unit, {subject: value}, note); lower is better in every row
    (throughputs are shown as time per line for the ratios)."""
    rows = []
    na = {p: f"skipped: {skipped[p]}" for p in skipped}
    ss = R.get("startstop", {})
    for n in [k for k in ss if isinstance(k, int)]:
        for what in ("start", "stop"):
            vals = {s: ss[n][s][what] for s in ss[n]}
            rows.append((f"{what} {n} services", "s", vals, ""))
    if "supervisord_default_startsecs" in ss:
        d = ss["supervisord_default_startsecs"]
        rows.append(
            (
                f"start {d['n']}, supervisord with its default startsecs=1",
                "s",
                {"supervisord": d["start"]},
                "",
            )
        )
    if "restart" in R:
        rows.append(
            (
                "crash-restart cycle (smallest backoff)",
                "ms",
                {s: v["cycle"] for s, v in R["restart"].items()},
                "",
            )
        )
    if "exitlat" in R:
        e = R["exitlat"]
        for q in ("p50", "p99"):
            rows.append(
                (
                    f"exit→event {q} (engine's event time)",
                    "us",
                    {"corral": e["corral_engine"][q], "floor": e["floor"][q]},
                    "",
                )
            )
            rows.append(
                (
                    f"exit→event {q} (seen by Python `events()`)",
                    "us",
                    {"corral": e["corral_python"][q], "floor": e["floor"][q]},
                    "",
                )
            )
    if "chain" in R:
        c = R["chain"]
        rows.append(
            (
                f"readiness chain of {c['n']}: total, TcpCheck default interval",
                "s",
                {"corral": c["corral_default"]["total"], "floor": c["floor"]["total"]},
                "",
            )
        )
        rows.append(
            (
                f"readiness chain of {c['n']}: corral overhead over the servers' own start",
                "s",
                {"corral": c["corral_default"]["overhead"]},
                "",
            )
        )
        rows.append(
            (
                f"readiness chain of {c['n']}: total, TcpCheck interval=0.005",
                "s",
                {"corral": c["corral_5ms"]["total"], "floor": c["floor"]["total"]},
                "",
            )
        )
    if "idle" in R:
        i = R["idle"]
        rows.append(
            (
                f"idle CPU, {i['n']} services, {i['seconds']:.0f} s, sampling off",
                "cpu",
                {"corral": i["off"]["cpu"]} | {p: i[p]["cpu"] for p in peers if p in i},
                f"bare Python: {fmt(i['bare']['cpu'], 'cpu')}",
            )
        )
        rows.append(
            (
                f"idle CPU, {i['n']} services, {i['seconds']:.0f} s, metrics() every 1 s",
                "cpu",
                {"corral": i["1s"]["cpu"]},
                "",
            )
        )
        rows.append(
            (
                f"engine thread wake-ups in {i['seconds']:.0f} s, sampling off",
                "int",
                {"corral": i["off"]["wakeups_engine"]},
                "",
            )
        )
        rows.append(
            (
                f"memory, {i['n']} services: corral's share of the owner's RSS (vs bare Python)",
                "kb",
                {"corral": i["off"]["share_kb"]} | {p: i[p]["pss_kb"] for p in peers if p in i},
                "peers: PSS of all their processes",
            )
        )
        rows.append(("memory: death watcher process (PSS)", "kb", {"corral": i["off"]["watcher_pss_kb"]}, ""))
    if "mem" in R and R["mem"].get("per_service_kb") is not None:
        m = R["mem"]
        rows.append(
            (
                "memory: import corral + engine, no service (RSS over bare Python)",
                "kb",
                {"corral": m["import_and_engine_kb"]},
                "",
            )
        )
        rows.append(("memory: per extra service (RSS slope)", "kb", {"corral": m["per_service_kb"]}, ""))
    if "status" in R:
        s = R["status"]
        api = {p: R["idle"][p]["status_api"] for p in peers if "idle" in R and p in R["idle"]}
        cli = {p: R["idle"][p]["status_cli"] for p in peers if "idle" in R and p in R["idle"]}
        rows.append(
            (
                f"status of {s['n']} services, in process, p50",
                "ms",
                {"corral": s["p50"] / 1e9} | api,
                "supervisord: XML-RPC getAllProcessInfo; s6/runit: read the status files",
            )
        )
        rows.append((f"status of {s['n']} services, in process, p99", "ms", {"corral": s["p99"] / 1e9}, ""))
        rows.append(
            (
                f"status of {s['n']} services, CLI",
                "ms",
                {"corral": "n/a (no daemon yet)"} | cli,
                "supervisorctl status; sv status; s6-svstat ×N",
            )
        )
    if "logs" in R:
        lg = R["logs"]
        rows.append(
            (
                "log capture, lines/s (100-byte lines, as fast as the writer can)",
                "lps",
                {"corral": lg["corral"]["lines_per_s"], "floor": lg["floor"]["lines_per_s"]}
                | {x: lg[x]["lines_per_s"] for x in peers if x in lg},
                "higher is better; peers: into their own log files",
            )
        )
        rows.append(
            (
                "log capture with an events() consumer, lines/s",
                "lps",
                {"corral": lg["corral_subscribed"]["lines_per_s"]},
                "higher is better",
            )
        )
        if "corral_batch" in lg:
            rows.append(
                (
                    "log capture with an event_batch() consumer, lines/s",
                    "lps",
                    {"corral": lg["corral_batch"]["lines_per_s"]},
                    "higher is better; the same stream as columns",
                )
            )
    if "logs" in R and "cat" in R["logs"]:
        rows.append(
            (
                "log capture: `flood | cat > /dev/null`, lines/s",
                "lps",
                {"floor": R["logs"]["cat"]["lines_per_s"]},
                "the same writer read by cat through a pipe",
            )
        )
    if "stop1" in R:
        x = R["stop1"]
        for what in ("stop", "start"):
            rows.append(
                (
                    f"{what} one service of 4, quiet machine",
                    "s",
                    {"corral": x["quiet"][what]},
                    "",
                )
            )
            rows.append(
                (
                    f"{what} one service of 4, with {x['noise']} unrelated processes",
                    "s",
                    {"corral": x["crowd"][what]},
                    "",
                )
            )
    if "crashloop" in R:
        x = R["crashloop"]
        for j in [k for k in x if isinstance(x[k], dict)]:
            for q in ("p50", "p99"):
                rows.append(
                    (
                        f"status of {x['n']} crash-looping services (backoff {x['backoff']:g} s, "
                        f"jitter {x[j]['jitter']:g}), {q}",
                        "ms",
                        {"corral": x[j][q] / 1e9},
                        f"{x[j]['restarts_per_s']:.0f} restarts/s" if q == "p50" else "",
                    )
                )
    if "upidle" in R:
        x = R["upidle"]
        rows.append(
            (
                f"`corral up`, {x['n']} idle services, CPU in {x['seconds']:.0f} s",
                "cpu",
                {"corral": x["cpu"]},
                f"death watcher: {fmt(x['watcher_cpu'], 'cpu')}",
            )
        )
        rows.append(
            (
                f"`corral up`, {x['n']} idle services, wake-ups in {x['seconds']:.0f} s",
                "int",
                {"corral": x["wakeups"]},
                f"all threads; death watcher: {x['watcher_wakeups']:.0f}",
            )
        )
    if "ports" in R:
        p = R["ports"]
        rows.append(
            (
                f"port claims: {p['claims']}",
                "s",
                {"corral": p["corral"]["seconds"], "floor": p["floor_bind_flock"]["seconds"]},
                "floor: bind(0) + flock'd claim file; bind alone: " + fmt(p["floor_bind"]["seconds"], "s"),
            )
        )
    rows += _ps.rows(R)
    return rows, [na]


def targets(R: dict) -> list[tuple[str, str, bool | None]]:
    out = []
    ss = R.get("startstop", {})
    # Ratios to the floor are the median of the ratios of runs made back to back (corral
    # right after the floor, in every rep), which cancels most of the machine's other load.
    # Every N, not only the biggest: the per-service cost must not grow with N (issue 6).
    for n in [k for k in ss if isinstance(k, int)]:
        c, f = ss[n]["corral"]["runs"], ss[n]["floor"]["runs"]
        for what, limit in (("start", 1.3), ("stop", 1.5)):
            x = median([a / b for a, b in zip(c[what], f[what], strict=False)])
            out.append((f"{what} {n} within {limit:g}× the floor", f"{x:.2f}× (paired median)", x <= limit))
    if "restart" in R:
        c, f = R["restart"]["corral"]["runs"], R["restart"]["floor"]["runs"]
        x = median([a / b for a, b in zip(c, f, strict=False)])
        out.append(("restart cycle within 2× the floor", f"{x:.2f}× (paired median)", x <= 2))
    if "exitlat" in R:
        p99 = R["exitlat"]["corral_engine"]["p99"]
        out.append(("exit-to-event p99 under 1 ms (engine's event time)", fmt(p99, "us"), p99 < 1e6))
        p99 = R["exitlat"]["corral_python"]["p99"]
        out.append(("… and as seen by Python's events() (upper bound)", fmt(p99, "us"), p99 < 1e6))
    if "idle" in R:
        i = R["idle"]["off"]
        out.append(
            (
                "zero idle CPU with sampling off",
                f"{i['cpu'] * 1e3:.1f} ms CPU, {i['wakeups_engine']:.0f} engine wake-ups",
                i["cpu"] < 0.001 and i["wakeups_engine"] == 0,
            )
        )
        n = R["idle"]["n"]
        limit = 10 * 1024 + 20 * n
        total = i["share_kb"]
        out.append(
            (
                f"memory under 10 MB + 20 KB × {n} = {limit / 1024:.1f} MB (owner's RSS over bare Python)",
                fmt(total, "kb"),
                total < limit,
            )
        )
        total2 = total + i["watcher_pss_kb"]
        out.append(("… counting the death watcher's PSS too", fmt(total2, "kb"), total2 < limit))
    if "status" in R:
        s = R["status"]
        out.append(
            (
                f"in-process status of {s['n']} services under 1 ms",
                f"p50 {s['p50'] / 1e6:.3f} ms, p99 {s['p99'] / 1e6:.3f} ms",
                s["p99"] < 1e6,
            )
        )
    out += issue6_targets(R)
    return out


def _tick_check(states: list[str], restarts: int | None) -> dict:
    """The crash-looping service's state events against its restart count: each restart is
    one `backoff` (the exit) and one `starting` (the respawn), each exec one `ready`; the
    stop at the end adds `stopping`/`stopped`. Any missing event shows up in the counts."""
    counts = {k: states.count(k) for k in ("starting", "ready", "backoff")}
    restarts = restarts or 0
    ok = counts["starting"] == restarts + 1 and counts["backoff"] >= restarts and bool(states)
    return {"restarts": restarts, "events": len(states), "counts": counts, "ok": ok}


def issue6_targets(R: dict) -> list[tuple[str, str, bool | None]]:
    """The performance targets of issue 6 (the service machine), beyond start/stop at every
    N (in targets() above)."""
    out = []
    if "stop1" in R:
        x = R["stop1"]
        out.append(
            (
                f"stop one service with {x['noise']} unrelated processes within 1.2× of without",
                f"{x['crowd']['stop'] * 1e3:.2f} vs {x['quiet']['stop'] * 1e3:.2f} ms, "
                f"{x['ratio']:.2f}× (paired median)",
                x["ratio"] <= 1.2,
            )
        )
    if "crashloop" in R:
        x = R["crashloop"]
        for j in [k for k in x if isinstance(x[k], dict)]:
            y = x[j]
            out.append(
                (
                    f"status() p99 under 1 ms while {x['n']} services crash-loop (jitter {y['jitter']:g})",
                    f"p50 {y['p50'] / 1e6:.3f} ms, p99 {y['p99'] / 1e6:.3f} ms "
                    f"({y['restarts_per_s']:.0f} restarts/s)",
                    y["p99"] < 1e6,
                )
            )
    if "logs" in R and "cat" in R["logs"]:
        lg = R["logs"]
        x = lg["corral_ratio_to_cat"]
        out.append(("log capture at least half of `cat > /dev/null`'s rate", f"{x:.2f}× cat (paired median)",
                     x >= 0.5))
        sub = lg["corral_subscribed"]["lines_per_s"]
        out.append(
            ("log capture with one events() consumer at least 3 M lines/s", fmt(sub, "lps"), sub >= 3e6)
        )
        if "corral_batch" in lg:
            bat = lg["corral_batch"]["lines_per_s"]
            out.append(
                ("… with one event_batch() consumer instead", fmt(bat, "lps"), bat >= 3e6)
            )
        checks = lg["corral_subscribed"]["state_check"] + lg.get("corral_batch", {}).get("state_check", [])
        seen = sum(c["events"] for c in checks)
        out.append(
            (
                "no state event dropped under the flood (crash-looping service beside it)",
                f"{seen} state events for {sum(c['restarts'] for c in checks)} restarts; "
                f"{sum(not c['ok'] for c in checks)} of {len(checks)} runs short",
                all(c["ok"] for c in checks),
            )
        )
    if "upidle" in R:
        x = R["upidle"]
        out.append(
            (
                f"`corral up` with {x['n']} idle services uses no CPU (under 1 ms in {x['seconds']:.0f} s)",
                f"{x['cpu'] * 1e3:.1f} ms CPU, {x['wakeups']:.0f} wake-ups",
                x["cpu"] < 0.001,
            )
        )
    return out


def render(R: dict, meta: dict, peers: list[str], skipped: dict) -> str:
    rows, _ = build_rows(R, peers, skipped)
    cols = ["corral", "floor", *peers]
    lines = []
    lines.append("| metric | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---:|" * len(cols))
    for metric, unit, vals, note in rows:
        cells = [fmt(vals.get(c), unit) for c in cols]
        lines.append(f"| {metric}{' (' + note + ')' if note else ''} | " + " | ".join(cells) + " |")
    lines.append("")
    # ratios: corral's cost over each other subject's, same run (< 1: corral is better)
    rcols = [c for c in cols if c != "corral"]
    lines.append(
        "Ratios, corral ÷ each subject, same run (below 1: corral is cheaper/faster; "
        "throughput compared as time per line):"
    )
    lines.append("")
    lines.append("| metric | " + " | ".join(f"÷ {c}" for c in rcols) + " |")
    lines.append("|---|" + "---:|" * len(rcols))
    for metric, unit, vals, _note in rows:
        c = vals.get("corral")
        if not isinstance(c, (int, float)) or not any(isinstance(vals.get(x), (int, float)) for x in rcols):
            continue
        cells = []
        for x in rcols:
            v = vals.get(x)
            if unit == "lps":
                cells.append(ratio(v, c) if isinstance(v, (int, float)) else "–")
            else:
                cells.append(ratio(c, v) if isinstance(v, (int, float)) and v > 0 else "–")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Targets:")
    lines.append("")
    lines.append("| target | measured | met |")
    lines.append("|---|---:|:---:|")
    for t, v, ok in targets(R):
        lines.append(f"| {t} | {v} | {'yes' if ok else 'NO'} |")
    if skipped:
        lines.append("")
        for p, why in skipped.items():
            lines.append(f"- {p}: skipped — {why}")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke mode: a few seconds, small N, peers skipped")
    ap.add_argument("--json", metavar="PATH", help="write every figure and raw run to PATH")
    ap.add_argument("--markdown", metavar="PATH", help="write the tables to PATH")
    ap.add_argument(
        "--engine",
        choices=("auto", "release", "checkout", "import"),
        default="auto",
        help="which corral engine: a Release build of this checkout made by the bench "
        "(default of the full run), the checkout's src/python as it is, or whatever "
        "`import corral` finds (default of --quick)",
    )
    ap.add_argument(
        "--build-dir",
        default=os.path.expanduser("~/.cache/corral-bench/build-release"),
        help="where the Release engine is built (default: %(default)s)",
    )
    ap.add_argument(
        "--peers",
        default=None,
        help="comma-separated peers to run (default: all that are installed; none with --quick)",
    )
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated cases: startstop,restart,exitlat,chain,idle,mem,status,logs,ports,"
        "stop1,crashloop,upidle,ps",
    )
    ap.add_argument(
        "--source",
        default=None,
        metavar="DIR",
        help="build the Release engine from the corral source tree DIR instead of this checkout "
        "(with its own --build-dir), e.g. an earlier commit from `git archive`, for a before/after run",
    )
    ap.add_argument(
        "--ns",
        default=None,
        metavar="N,N,...",
        help="service counts of the start/stop case (default: 100,500; e.g. 100,1000,4000)",
    )
    ap.add_argument("--reps", type=int, default=None, help="repetitions of the start/stop case")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for the machine's CPU pressure (avg10) to fall below 5%%",
    )
    args = ap.parse_args()

    cfg = settings(args.quick)
    if args.ns:
        cfg["ns"] = [int(x) for x in args.ns.split(",")]
    if args.reps:
        cfg["reps"] = args.reps
        cfg["peer_reps"] = min(cfg["peer_reps"], args.reps)
    engine = args.engine if args.engine != "auto" else ("import" if args.quick else "release")
    if args.wait_quiet:
        wait_quiet(args.wait_quiet)
    t_start = time.monotonic()
    load0, pressure0, steal0 = loadavg(), cpu_pressure(), cpu_steal()
    ws = Workspace(keep=args.keep)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(130))
    # Absolute: the engine package is made of symlinks into the build directory.
    build_dir = Path(args.build_dir).resolve()
    env, core = corral_env(engine, build_dir, Path(args.source).resolve() if args.source else REPO)
    build_type = _build_type_of(Path(core))
    say(f"corral engine: {core} ({build_type})")
    if build_type not in ("Release", "installed wheel (Release)") and not args.quick:
        say("WARNING: this engine is not a Release build: its figures are not representative")

    wanted = (
        PEERS
        if args.peers is None and not args.quick
        else tuple(p for p in (args.peers or "").split(",") if p)
    )
    skipped, peers = {}, []
    for p in PEERS:
        if p not in wanted:
            skipped[p] = "not requested (--quick runs no peer)" if args.quick else "not requested"
            continue
        if p == "pm2":
            skipped[p] = (
                "pm2 not installed; node is here but the npm registry is not reachable from this machine"
                if shutil.which("node") and not shutil.which("pm2")
                else "pm2 not installed"
            )
            continue
        why = _peers.PEERS[p].available()
        if why:
            skipped[p] = why
        else:
            peers.append(p)
    say(f"peers: {', '.join(peers) or 'none'}; skipped: {', '.join(skipped) or 'none'}")

    only = set(args.only.split(",")) if args.only else None
    r = Runner(ws, env)
    R: dict = {}
    cases = [
        ("startstop", lambda: bench_startstop(r, ws, cfg, peers)),
        ("restart", lambda: bench_restart(r, ws, cfg, peers)),
        ("exitlat", lambda: bench_exitlat(r, ws, cfg)),
        ("chain", lambda: bench_chain(r, ws, cfg)),
        ("idle", lambda: bench_idle(r, ws, cfg, peers)),
        ("mem", lambda: bench_mem(r, ws, cfg)),
        ("status", lambda: bench_status(r, ws, cfg)),
        ("logs", lambda: bench_logs(r, ws, cfg, peers)),
        ("ports", lambda: bench_ports(r, ws, cfg)),
        ("stop1", lambda: _load.bench_stop_noise(r, ws, cfg)),
        ("crashloop", lambda: _load.bench_crashloop(r, ws, cfg)),
        ("upidle", lambda: _load.bench_up_idle(r, ws, cfg)),
        ("ps", lambda: _ps.bench_ps(ws, r.env, str(ws.sleep), _peers, peers, with_peer, release_peer)),
    ]
    for name, fn in cases:
        if only and name not in only:
            continue
        say(f"== {name}")
        t = time.monotonic()
        R[name] = fn()
        say(f"   ({time.monotonic() - t:.1f} s)")
    left = ws.leftovers()
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "engine": core,
        "engine_build": build_type,
        "source": source_state() if not args.source else f"source tree {Path(args.source).resolve()}",
        "quick": args.quick,
        "settings": cfg,
        "peers": peers,
        "skipped": skipped,
        "versions": versions(),
        "load_before": load0,
        "load_after": loadavg(),
        "cpu_pressure_before": pressure0,
        "cpu_pressure_after": cpu_pressure(),
        "cpu_pressure_during_run_pct": _pressure_pct(pressure0, time.monotonic() - t_start),
        "cpu_steal_s": round(cpu_steal() - steal0, 2),
        "seconds": round(time.monotonic() - t_start, 1),
        "leftover_processes": len(left),
        "poll_interval_s": _peers.POLL,
    }
    table = render(R, meta, peers, skipped)
    print(table)
    m = meta["machine"]
    say(
        f"\ncorral {meta['source']} ({build_type}); {meta['date']}; {m['cpu']}, {m['cores']} cores, "
        f"kernel {m['kernel']}, {m['os']}; "
        f"load {load0} -> {meta['load_after']}; CPU pressure during the run "
        f"{meta['cpu_pressure_during_run_pct']}% (some, the bench's own included); "
        f"steal {meta['cpu_steal_s']} s; "
        f"{meta['seconds']} s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"meta": meta, "results": R, "targets": targets(R)}, indent=1, default=str)
        )
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if left:
        say(f"ERROR: {len(left)} processes were left running (killed now)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
