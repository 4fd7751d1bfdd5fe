"""One corral measurement in a fresh interpreter: `python corral_worker.py CASE JSON-ARGS`.

bench/run.py runs every corral case in its own process (so that memory and CPU figures
belong to that case alone) and reads one line of JSON from stdout. `corral` is imported
lazily: the `bare` case measures an interpreter that has the same imports as this file
minus corral, which is the baseline of the idle-cost figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import threading
import time


def _rusage_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return r.ru_utime + r.ru_stime


def _status_kb(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _pss_kb(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _uss_kb(pid: int | str) -> int:
    """Memory only this process holds (private clean + dirty)."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def _thread_switches() -> dict[str, int]:
    """Voluntary + involuntary context switches per thread (its wake-ups), by thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                n = 0
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        n += int(line.split()[1])
            out[tid] = n
        except OSError:
            pass
    return out


def _children_named(comm: str) -> list[int]:
    """Direct children of this process whose command name is `comm` (the death watcher)."""
    pids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    named = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == comm:
                    named.append(pid)
        except OSError:
            pass
    return named


def _lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _stack(corral, name: str, n: int, argv: list[str], **options):
    s = corral.Stack(name)
    for i in range(n):
        s.add(f"s{i}", list(argv), **options)
    return s


def _warm(corral) -> None:
    """Creates the engine (thread + death watcher) outside of any timed region."""
    from corral import _engine

    _engine.engine()


# ---- cases ------------------------------------------------------------------------------------


def case_startstop(corral, a):
    _warm(corral)
    t = time.perf_counter()
    s = _stack(corral, "bench", a["n"], a["argv"])
    add = time.perf_counter() - t
    t0 = time.perf_counter()
    s.start()
    t1 = time.perf_counter()
    states = {r["state"] for r in s.status()}
    time.sleep(a.get("settle", 0.0))
    t2 = time.perf_counter()
    s.stop()
    t3 = time.perf_counter()
    stopped = {r["state"] for r in s.status()}
    s.close()
    assert states == {"ready"}, states
    assert stopped == {"stopped"}, stopped
    return {"n": a["n"], "add": add, "start": t1 - t0, "stop": t3 - t2}


def case_restart(corral, a):
    _warm(corral)
    counter = a["counter"]
    s = corral.Stack("bench")
    svc = s.add(
        "crash",
        [a["helper"], "count-file", counter, "exit", "1"],
        restart=corral.Restart("always", backoff=0.0, max_backoff=0.0, jitter=0.0),
    )
    s.start()
    time.sleep(0.2)
    c0, r0, t0 = _lines(counter), svc.restarts, time.perf_counter()
    time.sleep(a["window"])
    c1, r1, t1 = _lines(counter), svc.restarts, time.perf_counter()
    s.close()
    return {"cycles": c1 - c0, "restarts": r1 - r0, "seconds": t1 - t0, "cycle": (t1 - t0) / max(1, c1 - c0)}


def _clock_offset_ns() -> tuple[int, int]:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of many bracketed readings;
    returns (offset, uncertainty) in ns."""
    best = None
    for _ in range(2000):
        m1 = time.monotonic_ns()
        r = time.time_ns()
        m2 = time.monotonic_ns()
        if best is None or m2 - m1 < best[1]:
            best = (r - (m1 + m2) // 2, m2 - m1)
    return best[0], best[1] // 2 + 1


def case_exitlat(corral, a):
    """The child writes CLOCK_MONOTONIC just before _exit; the engine's state event carries
    the wall-clock time (CLOCK_REALTIME) at which it applied the exit. Converting with the
    REALTIME-MONOTONIC offset gives the engine's own exit-to-event latency (exact up to the
    offset's uncertainty, reported). Separately, the time at which `events()` returned in
    Python, which adds the consumer's wake-up: an upper bound of what a user sees."""
    _warm(corral)
    stamps = a["stampfile"]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stamps)
    offset, uncertainty = _clock_offset_ns()
    s = corral.Stack("bench")
    s.add(
        "x",
        [a["helper"], "exit-stamp", stamps, "0"],
        restart=corral.Restart("always", backoff=a["gap"], max_backoff=a["gap"], jitter=0.0),
    )
    s.events(0)  # subscribe before anything happens
    engine_seen: list[int] = []
    python_seen: list[int] = []
    s.start()
    deadline = time.monotonic() + 60
    while len(engine_seen) < a["k"] and time.monotonic() < deadline:
        for e in s.events(1.0):
            got = time.monotonic_ns()
            if (
                e["kind"] == "state"
                and e["state"] in ("backoff", "exited")
                and e.get("exit_code") is not None
            ):
                engine_seen.append(round(e["time"] * 1e9) - offset)
                python_seen.append(got)
    s.close()
    offset2, _ = _clock_offset_ns()
    with open(stamps) as f:
        child = [int(x) for x in f.read().split()]
    k = min(len(child), len(engine_seen), a["k"])
    return {
        "engine_ns": [engine_seen[i] - child[i] for i in range(k)],
        "python_ns": [python_seen[i] - child[i] for i in range(k)],
        "offset_uncertainty_ns": uncertainty,
        "offset_drift_ns": offset2 - offset,
        # the event time is a double of seconds since the epoch: ~0.24 us resolution today
        "float_resolution_ns": 2**-22 * 1e9,
    }


def case_chain(corral, a):
    _warm(corral)
    s = corral.Stack("bench")
    check = {} if a.get("interval") is None else {"interval": a["interval"]}
    prev = None
    for i in range(a["n"]):
        s.add(
            f"c{i}",
            [a["helper"], "listen", "{{port.main}}", "pause"],
            ports=["main"],
            ready=corral.TcpCheck("main", **check),
            depends_on=[prev] if prev else [],
        )
        prev = f"c{i}"
    t0 = time.perf_counter()
    s.start()
    t1 = time.perf_counter()
    rows = {r["name"]: r for r in s.status()}
    s.close()
    # per link: from the spawn of a server to its readiness, by the engine's own clocks
    links = [rows[f"c{i}"]["ready_at"] - rows[f"c{i}"]["started_at"] for i in range(a["n"])]
    return {"total": t1 - t0, "links": links}


def case_mem(corral, a):
    """RSS of this process with `n` services running (n = 0: corral imported, engine running)."""
    _warm(corral)
    s = _stack(corral, "bench", a["n"], a["argv"]) if a["n"] else None
    if s is not None:
        s.start()
    time.sleep(a.get("settle", 0.5))
    rss = _status_kb("self", "VmRSS")
    pss = _pss_kb("self")
    watchers = _children_named("corral-watch")
    out = {
        "n": a["n"],
        "rss_kb": rss,
        "pss_kb": pss,
        "watcher_pss_kb": sum(_pss_kb(p) for p in watchers),
        "watcher_uss_kb": sum(_uss_kb(p) for p in watchers),
    }
    if s is not None:
        s.close()
    return out


def case_bare(corral, a):
    time.sleep(a.get("settle", 0.5))
    c0 = _rusage_cpu()
    time.sleep(a["seconds"])
    return {"cpu": _rusage_cpu() - c0, "rss_kb": _status_kb("self", "VmRSS"), "pss_kb": _pss_kb("self")}


def case_idle(corral, a):
    _warm(corral)
    s = _stack(corral, "bench", a["n"], a["argv"])
    s.start()
    stop = threading.Event()
    samples = [0]

    def sampler() -> None:
        while not stop.wait(a["sample_every"]):
            s.metrics()
            samples[0] += 1

    t = None
    if a.get("sample_every"):
        t = threading.Thread(target=sampler, daemon=True)
        t.start()
    time.sleep(a.get("settle", 1.0))
    sw0, c0 = _thread_switches(), _rusage_cpu()
    time.sleep(a["seconds"])
    c1 = _rusage_cpu()
    sw1 = _thread_switches()
    rss, pss = _status_kb("self", "VmRSS"), _pss_kb("self")
    watchers = _children_named("corral-watch")
    stop.set()
    if t is not None:
        t.join()
    main_tid = str(threading.main_thread().native_id)
    sampler_tid = str(t.native_id) if t is not None else None
    # the engine thread is the one native thread that Python did not start
    other = {tid: sw1[tid] - sw0.get(tid, 0) for tid in sw1 if tid not in (main_tid, sampler_tid)}
    s.close()
    return {
        "cpu": c1 - c0,
        "rss_kb": rss,
        "pss_kb": pss,
        "samples": samples[0],
        "wakeups_engine": sum(other.values()),
        "wakeups_main": sw1[main_tid] - sw0[main_tid],
        "watcher_pss_kb": sum(_pss_kb(p) for p in watchers),
        "watcher_uss_kb": sum(_uss_kb(p) for p in watchers),
    }


def case_status(corral, a):
    _warm(corral)
    s = _stack(corral, "bench", a["n"], a["argv"])
    s.start()
    for _ in range(50):
        s.status()
    per = []
    for _ in range(a["calls"]):
        t0 = time.perf_counter_ns()
        rows = s.status()
        per.append(time.perf_counter_ns() - t0)
    assert len(rows) == a["n"]
    one = []
    svc = s["s0"]
    for _ in range(a["calls"]):
        t0 = time.perf_counter_ns()
        _ = svc.state
        one.append(time.perf_counter_ns() - t0)
    s.close()
    return {"status_ns": per, "state_ns": one}


def case_stop1(corral, a):
    """Issue 6: what one service's stop (and its start again) costs. A small stack of
    `sleep`s; `cycles` times `stop("one")` then `start("one")`, each timed. The bench runs
    this with and without thousands of unrelated processes on the machine."""
    _warm(corral)
    s = _stack(corral, "bench", a.get("n", 3), a["argv"])
    s.add("one", list(a["argv"]))
    s.start()
    for _ in range(a.get("warmup", 3)):
        s.stop("one")
        s.start("one")
    stops, starts = [], []
    for _ in range(a["cycles"]):
        # A `sleep` is ready at exec, while its dynamic loader still runs for ~0.5 ms: on 2
        # cores a stop issued at once waits for a CPU behind it (0.8 ms instead of 0.2,
        # whether or not the machine is crowded). A real service is not stopped 40 us after
        # its exec; the pause (outside the timed calls) measures the stop, not that.
        time.sleep(a.get("settle", 0.005))
        t0 = time.perf_counter()
        s.stop("one")
        t1 = time.perf_counter()
        s.start("one")
        t2 = time.perf_counter()
        stops.append(t1 - t0)
        starts.append(t2 - t1)
    assert s["one"].state == "ready", s["one"].state
    s.close()
    return {"stop": stops, "start": starts}


def case_crashloop(corral, a):
    """Issue 6: `Stack.status()` from the main thread while `n` services crash-loop
    (exit 1 at once, restart="always" with a fixed small backoff): the engine thread is as
    busy as it gets, and status() must still answer quickly. With `jitter` 0 the services,
    started together, crash and respawn in lockstep: the worst case for a waiting call."""
    _warm(corral)
    b = a["backoff"]
    s = _stack(corral, "bench", a["n"], [a["helper"], "exit", "1"],
               restart=corral.Restart("always", backoff=b, max_backoff=b, jitter=a["jitter"]))
    # Every service becomes ready at exec and crashes right after: start() may see a
    # crash before the last one is ready. The loop is what is measured, not the start.
    with contextlib.suppress(corral.CorralError):
        s.start(timeout=60)
    time.sleep(a.get("settle", 0.5))
    r0, c0, t0 = sum(r["restarts"] for r in s.status()), _rusage_cpu(), time.perf_counter()
    per = []
    for _ in range(a["calls"]):
        t = time.perf_counter_ns()
        rows = s.status()
        per.append(time.perf_counter_ns() - t)
    t1, c1 = time.perf_counter(), _rusage_cpu()
    r1 = sum(r["restarts"] for r in rows)
    s.close()
    return {"status_ns": per, "restarts_per_s": (r1 - r0) / (t1 - t0), "seconds": t1 - t0,
            "owner_cpu_share": (c1 - c0) / (t1 - t0)}


def case_logs(corral, a):
    """A service writing `bytes` of 100-byte lines as fast as it can; lines/s captured, by
    the engine's clocks: from the spawn to the last line. With `subscribe`, the main thread
    drains `events()` meanwhile (`reader="batch"`: `event_batch()`); with `tick_backoff` too,
    a second service crash-loops during the flood, and its state events are counted against
    its restarts (a state event must never be dropped, however many log lines flood the
    queue)."""
    _warm(corral)
    s = corral.Stack("bench")
    s.add("flood", [a["helper"], "flood", str(a["bytes"])])
    tick = a.get("tick_backoff")
    if tick is not None:
        b = float(tick)
        s.add("tick", [a["helper"], "exit", "1"],
              restart=corral.Restart("always", backoff=b, max_backoff=b, jitter=0.0))
    sub = a.get("subscribe", False)
    got = 0
    dropped = 0
    tick_states: list[str] = []
    batch = a.get("reader") == "batch"
    if sub:
        s.event_batch(0) if batch else s.events(0)
    t0 = time.perf_counter()
    s.start("flood")
    if tick is not None:
        s.start("tick")
    if sub and batch:  # the same consumer, reading columns (Stack.event_batch)
        done = False
        while not done:
            b = s.event_batch(0.5)
            got += len(b.lines)
            dropped += b.dropped
            for e in b.states:
                if e["service"] == "tick":
                    tick_states.append(e["state"])
                elif e["state"] == "exited":
                    done = True
    elif sub:  # a consumer draining the event stream, like `corral up` printing logs
        done = False
        while not done:
            for e in s.events(0.5):
                if e["kind"] == "log":
                    got += 1
                elif e["kind"] == "dropped":
                    dropped += e["count"]
                elif e["kind"] == "state" and e["service"] == "tick":
                    tick_states.append(e["state"])
                elif e["kind"] == "state" and e["state"] == "exited":
                    done = True
    s.wait("flood", "exited", timeout=120)
    t1 = time.perf_counter()
    row = s.status()[0]
    last = s["flood"].log_records(tail=1)
    tick_restarts = None
    if tick is not None:
        s.stop("tick")
        tick_restarts = s["tick"].restarts
        deadline = time.monotonic() + 60
        while sub and "stopped" not in tick_states[-1:] and time.monotonic() < deadline:
            evs = s.event_batch(0.5).states if batch else s.events(0.5)
            tick_states += [e["state"] for e in evs if e["kind"] == "state" and e["service"] == "tick"]
    s.close()
    span = last[0][0] - row["started_at"] if last else float("nan")
    return {
        "lines": row["log_lines"],
        "dropped_from_ring": row["log_dropped"],
        "seconds": span,
        "wall": t1 - t0,
        "lines_per_s": row["log_lines"] / span,
        "events_seen": got,
        "events_dropped": dropped,
        "tick_restarts": tick_restarts,
        "tick_states": tick_states,
    }


def case_ports(corral, a):
    """`claims` ports as `claims/per` services of `per` ports each. The services wait for a
    gate service that never becomes ready, so `start(timeout=0)` returns right after the
    engine has claimed every port (it claims all of a request's ports before spawning
    anything) and spawned the gate. The same stack without ports is the baseline; the
    difference is the cost of the claims. Alternating, `reps` times; medians."""
    _warm(corral)
    per = a["per"]
    n = a["claims"] // per
    times = {"with": [], "without": []}
    distinct = True
    for _ in range(a["reps"]):
        for kind in ("without", "with"):
            s = corral.Stack("bench")
            s.add("gate", list(a["argv"]), ready=corral.LogCheck("^never$"))
            for i in range(n):
                opts = {"ports": [f"p{j}" for j in range(per)]} if kind == "with" else {}
                s.add(f"s{i}", list(a["argv"]), depends_on=["gate"], **opts)
            s._core()  # hand the specs to the engine outside of the timed region
            t0 = time.perf_counter()
            with contextlib.suppress(corral.Timeout):
                s.start(timeout=0)
            times[kind].append(time.perf_counter() - t0)
            if kind == "with":
                ports = [p for r in s.status() for p in r["ports"].values()]
                distinct = distinct and len(set(ports)) == len(ports) == a["claims"]
            s.close()
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    return {
        "claims": a["claims"],
        "with": med["with"],
        "without": med["without"],
        "seconds": med["with"] - med["without"],
        "distinct": distinct,
        "runs": times,
    }


def main() -> None:
    case, args = sys.argv[1], json.loads(sys.argv[2])
    corral = None
    if case != "bare":
        import corral
    result = globals()[f"case_{case}"](corral, args)
    if corral is not None:
        result["corral_file"] = corral.__file__
        result["core_file"] = os.path.realpath(corral._engine._core.__file__)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
