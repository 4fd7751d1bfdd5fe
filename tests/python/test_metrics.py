"""Metrics with real processes: tree sampling, counters, Prometheus text, serve_metrics,
the health score, samples and plots."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import corral
from conftest import wait_until

MiB = 1024 * 1024
MakeStack = Callable[..., corral.Stack]


@pytest.fixture
def stacks() -> Iterator[MakeStack]:
    made: list[corral.Stack] = []

    def make(name: str = "m", **options: Any) -> corral.Stack:
        stack = corral.Stack(name, **options)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.close(timeout=60)


def last(stack: corral.Stack, service: str) -> dict[str, Any]:
    rows = stack.samples(service)
    return rows[-1] if rows else {}


def test_a_service_tree_counts_children_and_their_memory(stacks: MakeStack, helper: str) -> None:
    stack = stacks(metrics_interval=0.1)
    # The main process allocates 20 MiB, its child 100 MiB: both are the service's.
    stack.add("mem", [helper, "alloc", "20", "child-alloc", "100", "pause"])
    stack.start(timeout=30)
    stack["mem"].wait_for_log("child-alloc", timeout=30)
    wait_until(lambda: last(stack, "mem").get("rss_bytes", 0) >= 120 * MiB, what="120 MiB of rss in samples")
    row = last(stack, "mem")
    assert row["processes"] == 2
    assert row["threads"] == 2
    assert row["open_fds"] >= 3
    m = stack.metrics()["mem"]
    assert m["rss_bytes"] >= 120 * MiB and m["processes"] == 2
    assert m["uptime_seconds"] > 0 and m["ready_seconds"] is not None
    assert set(m) >= {"cpu_seconds", "cpu_percent", "rss_bytes", "processes", "threads", "open_fds",
                      "read_bytes", "write_bytes", "restarts", "uptime_seconds", "ready_seconds"}


def test_cpu_time_grows_for_a_busy_service_and_not_for_a_sleeping_one(
        stacks: MakeStack, helper: str) -> None:
    stack = stacks(metrics_interval=0.1)
    stack.add("busy", [helper, "busy", "120"])
    stack.add("idle", [helper, "pause"])
    stack.start(timeout=30)
    wait_until(lambda: last(stack, "busy").get("cpu_seconds", 0) >= 0.5, timeout=60, what="0.5 s of CPU")
    busy = [r for r in stack.samples("busy") if r["cpu_percent"] > 0]
    assert busy, "cpu_percent of a spinning service was never above 0"
    assert last(stack, "idle")["cpu_seconds"] < 0.1
    # Samples are plain records, oldest first, for pandas.DataFrame.
    rows = stack.samples()
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert {"busy", "idle"} <= {r["service"] for r in rows}
    assert stack.samples("busy", since=3600) and not stack.samples("busy", since=-3600)


def test_interval_zero_takes_no_samples_and_arms_no_timer(stacks: MakeStack, helper: str) -> None:
    off = stacks("off")
    off.add("a", [helper, "pause"])
    off.start(timeout=30)
    # Another stack sampling fast is the clock: by its 5th tick the first would have had one.
    clock = stacks("clock", metrics_interval=0.05)
    clock.add("b", [helper, "pause"])
    clock.start(timeout=30)
    wait_until(lambda: clock._handle.sampler_cost()[0] >= 5, what="5 ticks of the other stack")
    assert off._handle.sampler_cost()[0] == 0
    assert off.samples() == []
    # On demand it still answers (read now, on the caller's thread).
    assert off.metrics()["a"]["processes"] == 1
    assert off._handle.sampler_cost()[0] == 1


def test_counters_after_a_crash_loop(stacks: MakeStack, helper: str) -> None:
    stack = stacks("crash")
    stack.add("c", [helper, "print", "boom", "exit", "3"],
              restart=corral.Restart("on-failure", backoff=0.01, max_restarts=2))
    stack.start(timeout=30)  # ready at exec (no readiness check); then it crashes thrice
    stack.wait("c", "failed", timeout=30)
    counters = {c["service"]: c for c in stack._handle.counters()}["c"]
    assert counters["starts"] == 3
    assert counters["restarts"] == {"exit": 2, "health": 0, "manual": 0, "dependency": 0}
    assert counters["exit_codes"] == {3: 3}
    assert counters["log_lines"]["stdout"] == 3
    assert counters["log_bytes"]["stdout"] == 3 * len("boom")
    text = stack.prometheus()
    assert 'corral_service_exits_total{stack="crash",service="c",code="3"} 3' in text
    assert 'corral_service_restarts_total{stack="crash",service="c",reason="exit"} 2' in text
    assert 'corral_service_starts_total{stack="crash",service="c"} 3' in text
    assert stack.metrics()["c"]["health"] == 0  # failed


def test_a_manual_restart_is_counted_as_manual(stacks: MakeStack, helper: str) -> None:
    stack = stacks("manual")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=30)
    stack.restart("a", timeout=30)
    counters = stack._handle.counters()[0]
    assert counters["restarts"]["manual"] == 1 and counters["starts"] == 2


FAMILIES = {
    "corral_service_up": "gauge",
    "corral_service_state": "gauge",
    "corral_service_start_time_seconds": "gauge",
    "corral_service_starts_total": "counter",
    "corral_service_restarts_total": "counter",
    "corral_service_exits_total": "counter",
    "corral_service_signal_exits_total": "counter",
    "corral_service_ready_duration_seconds": "histogram",
    "corral_check_duration_seconds": "histogram",
    "corral_check_failures_total": "counter",
    "corral_log_lines_total": "counter",
    "corral_log_bytes_total": "counter",
    "corral_log_dropped_lines_total": "counter",
    "corral_log_evicted_lines_total": "counter",
    "corral_service_cpu_seconds_total": "counter",
    "corral_service_memory_bytes": "gauge",
    "corral_service_processes": "gauge",
    "corral_service_threads": "gauge",
    "corral_service_open_fds": "gauge",
    "corral_service_io_bytes_total": "counter",
    "corral_metrics_sample_ticks_total": "counter",
    "corral_metrics_sample_cpu_seconds_total": "counter",
}


def test_prometheus_text_parses_and_holds_every_documented_family(
        stacks: MakeStack, helper: str, tmp_path: Path) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    stack = stacks("prom", metrics_interval=0.1, metrics_pss=True)
    stack.add("web", [helper, "listen", "{{port.http}}", "pause"], ports=["http"],
              ready=corral.TcpCheck("http"), health=corral.TcpCheck("http", interval=0.05))
    stack.add("done", [helper, "exit", "0"], restart="no")
    stack.add("killed", [helper, "crash"], restart="no")
    stack.start("web", timeout=30)
    stack.start("done", "killed", timeout=30)
    wait_until(lambda: stack._handle.counters()[0]["health_check"]["duration"]["count"] >= 2,
               what="two liveness probes")
    wait_until(lambda: bool(stack.samples("web")), what="a sample")
    text = stack.prometheus()
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    for name, kind in FAMILIES.items():
        # The parser names counters without their _total suffix.
        key = name[: -len("_total")] if kind == "counter" else name
        assert key in families, f"{name} missing"
        assert families[key].type == kind, name
    labels = {s.labels["stack"] for f in families.values() for s in f.samples}
    assert labels == {"prom"}
    assert not any("pid" in s.labels for f in families.values() for s in f.samples)
    memory = {s.labels["memtype"] for s in families["corral_service_memory_bytes"].samples}
    assert memory == {"rss", "pss"}
    ready = [s for s in families["corral_service_ready_duration_seconds"].samples
             if s.name.endswith("_count") and s.labels["service"] == "web"]
    assert ready[0].value == 1
    if shutil.which("promtool"):
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        # promtool exits 0 when it finds only lint hints; 1 means a real problem with the text.
        assert out.returncode == 0, out.stdout + out.stderr


def test_serve_metrics_over_http(stacks: MakeStack, helper: str) -> None:
    stack = stacks("http")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=30)
    url = stack.serve_metrics()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = response.read().decode()
    assert 'corral_service_up{stack="http",service="a"} 1' in body
    stack.close(timeout=30)
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


def test_health_score_moves_with_failures(stacks: MakeStack, helper: str, tmp_path: Path) -> None:
    flag = tmp_path / "healthy"
    flag.touch()
    stack = stacks("health")
    stack.add("a", [helper, "pause"],
              health=corral.ExecCheck(["test", "-e", str(flag)], interval=0.05, retries=1000))
    stack.start(timeout=30)
    wait_until(lambda: stack._handle.counters()[0]["recent_checks"] >= 3, what="three liveness attempts")
    assert stack.metrics()["a"]["health"] == 100
    flag.unlink()
    wait_until(lambda: stack.metrics()["a"]["health"] <= 80, what="the score to drop")
    flag.touch()
    wait_until(lambda: stack.metrics()["a"]["health"] >= 95, timeout=60, what="the score to recover")


def test_samples_make_a_dataframe_and_a_plot(stacks: MakeStack, helper: str) -> None:
    pandas = pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    stack = stacks("plot", metrics_interval=0.05)
    stack.add("a", [helper, "pause"])
    stack.add("b", [helper, "pause"])
    stack.start(timeout=30)
    wait_until(lambda: len(stack.samples("b")) >= 3, what="three samples")
    frame = pandas.DataFrame(stack.samples())
    assert {"time", "service", "cpu_percent", "rss_bytes"} <= set(frame.columns)
    fig = stack.plot("rss_bytes")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["a", "b"]
    with pytest.raises(ValueError, match="unknown metric"):
        stack.plot("nope")
    assert "<table>" in stack._repr_html_() and "<table>" in stack["a"]._repr_html_()
    assert "<table>" in stack.metrics()._repr_html_()  # type: ignore[attr-defined]


def test_metrics_options_come_from_a_file(tmp_path: Path, helper: str) -> None:
    (tmp_path / "corral.toml").write_text(
        f'history = "state/dev.db"\n[metrics]\ninterval = 0.5\npss = true\n'
        f'[services.a]\ncommand = ["{helper}", "pause"]\n')
    (tmp_path / "state").mkdir()
    stack = corral.Stack.load(tmp_path / "corral.toml")
    assert stack._metrics_interval == 0.5 and stack._metrics_pss
    assert stack._history_path == str(tmp_path / "state" / "dev.db")
    with pytest.raises(corral.ConfigError, match=r"metrics\.interval"):
        (tmp_path / "bad.toml").write_text('[metrics]\ninterval = 0.001\n[services.a]\ncommand = "true"\n')
        corral.Stack.load(tmp_path / "bad.toml")
    with pytest.raises(corral.ConfigError, match="metrics"):
        (tmp_path / "bad.toml").write_text('[metrics]\nintervall = 1\n[services.a]\ncommand = "true"\n')
        corral.Stack.load(tmp_path / "bad.toml")
