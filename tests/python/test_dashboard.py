"""The live dashboard (docs/dashboard.md) in a real headless Chromium (Debian's `chromium`,
driven by Playwright with `executable_path`), plus what it needs from the control server
(its files, /v1/samples, TCP turned on at a login link), the engine's reasons, the CLI
command and the notebook view.

Environment: CORRAL_SCREENSHOT=docs/dashboard.png saves a screenshot of the page;
CORRAL_DASHBOARD_BENCH=1 runs the 500- and 2,000-service bench (first render and one
update, timed in the browser) and prints its figures."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import corral
from conftest import wait_until
from test_control import DOC, Unix, call, check, check_response

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]


def post(stack: corral.Stack, path: str, body: Any) -> tuple[int, Any]:
    status, answer, _ = call(stack, "POST", path, body)
    return status, answer


def get_tcp(url: str, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=60)
    conn.request("GET", path, headers={"Host": f"127.0.0.1:{u.port}", **(headers or {})})
    res = conn.getresponse()
    res.read()
    conn.close()
    return res


@pytest.fixture
def dash(request: pytest.FixtureRequest, helper: str) -> corral.Stack:
    """db (a port, ready by TCP), web (depends on db; prints to stdout and stderr, prints a
    line on SIGUSR1), gate (never ready) and late (waits for gate)."""
    # Sampled, so the screenshot has sparklines.
    stack = corral.Stack(name="dash", metrics_interval=0.2)
    request.addfinalizer(lambda: stack.close(timeout=60))
    stack.add("db", [helper, "print", "db up", "listen", "{{port.main}}", "pause"], ports=["main"],
              ready=corral.TcpCheck(port="main"))
    stack.add("web", [helper, "print", "web up", "stderr", "web warn", "trap", "USR1", "ping from the test",
                      "pause"], depends_on=["db"])
    stack.add("gate", [helper, "pause"], ready=corral.LogCheck("never printed", start_timeout=600))
    stack.add("late", [helper, "pause"], depends_on=["gate"])
    stack.start("db", "web", timeout=60)
    stack["web"].wait_for_log("web warn", timeout=60)
    status, _ = post(stack, "/v1/services/late/start", {"wait": False})
    assert status == 202
    wait_until(lambda: stack["late"].reason == "waiting for gate: ready", 60, "late to wait for gate")
    return stack


# -- the server side, without a browser --------------------------------------------------------
def test_the_page_is_served_from_the_package_with_safe_headers(dash: corral.Stack) -> None:
    status, body, ctype = call(dash, "GET", "/")
    assert status == 200 and ctype.startswith("text/html") and '<table id="services">' in body
    conn = Unix(dash._served.socket)  # type: ignore[union-attr]
    conn.request("GET", "/static/app.js")
    res = conn.getresponse()
    js = res.read()
    assert res.status == 200 and res.getheader("Content-Type", "").startswith("text/javascript")
    assert js == (Path(corral.__file__).parent / "dashboard" / "app.js").read_bytes()
    csp = res.getheader("Content-Security-Policy", "")
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert res.getheader("X-Content-Type-Options") == "nosniff"
    etag = res.getheader("ETag")
    assert etag
    conn.request("GET", "/static/app.js", headers={"If-None-Match": etag})
    res = conn.getresponse()
    assert res.status == 304 and res.read() == b""
    conn.close()
    assert call(dash, "GET", "/static/style.css")[2].startswith("text/css")
    # Nothing outside the dashboard's own files: no path can be named.
    for path in ("/static/../openapi.json", "/static/%2e%2e%2fopenapi.json", "/static/..%2Fopenapi.json",
                 "/static/", "/static/nope.js", "/static/.hidden", "/openapi.json", "/static/a/b.js"):
        status, _, _ = call(dash, "GET", path)
        assert status in (400, 404), (path, status)
    assert call(dash, "POST", "/", {})[0] == 405


def test_samples_endpoint_answers_as_documented(make_stack: Callable[..., corral.Stack], helper: str) -> None:
    stack = corral.Stack(name="dashsamples", metrics_interval=0.05)
    try:
        stack.add("busy", [helper, "pause"])
        stack.start(timeout=60)
        wait_until(lambda: len(stack.samples("busy")) >= 2, 60, "two samples")
        status, body, _ = call(stack, "GET", "/v1/samples?since=60")
        assert status == 200
        check_response("/v1/samples", "GET", 200, body)
        busy = body["services"]["busy"]
        assert len(busy["time"]) >= 2
        assert len(busy["time"]) == len(busy["rss_bytes"]) == len(busy["cpu_percent"])
        assert busy["rss_bytes"][-1] > 0 and busy["time"] == sorted(busy["time"])
        assert abs(body["now"] - busy["time"][-1]) < 60
        status, one, _ = call(stack, "GET", "/v1/samples?since=0.000001&service=busy")
        assert status == 200 and list(one["services"]) == ["busy"]
        assert len(one["services"]["busy"]["time"]) <= 1
        assert call(stack, "GET", "/v1/samples?since=-1")[0] == 400
        assert call(stack, "GET", "/v1/samples?since=x")[0] == 400
        assert call(stack, "GET", "/v1/samples?service=nope")[0] == 404
    finally:
        stack.close(timeout=60)


def test_rows_carry_dependencies_and_why_a_service_waits(dash: corral.Stack) -> None:
    status, body, _ = call(dash, "GET", "/v1/services")
    assert status == 200
    check_response("/v1/services", "GET", 200, body)
    rows = {r["name"]: r for r in body["services"]}
    assert rows["web"]["depends_on"] == [{"service": "db", "condition": "ready"}]
    assert rows["db"]["depends_on"] == []
    assert rows["late"]["state"] == "pending" and rows["late"]["reason"] == "waiting for gate: ready"
    assert re.fullmatch(r"waiting for its log check, readiness deadline in \d+ s", rows["gate"]["reason"])
    assert rows["db"]["reason"] == "" and rows["web"]["reason"] == ""  # ready: nothing to wait for
    # Stopped while waiting: it waits for nothing any more.
    dash.stop("late", "gate", timeout=60)
    assert dash["late"].state == "stopped" and dash["late"].reason == ""
    assert dash["gate"].state == "stopped" and dash["gate"].reason == ""


def test_backoff_says_which_attempt_and_when_the_next_try_comes(make_stack: Callable[..., corral.Stack],
                                                                  helper: str) -> None:
    stack = make_stack("dashbackoff")
    stack.add("flaky", [helper, "exit", "3"],
              restart=corral.Restart("on-failure", backoff=30, max_restarts=5))
    stack.add("other", [helper, "pause"])
    stack.start("other", timeout=60)  # the API runs
    assert post(stack, "/v1/services/flaky/start", {"wait": False})[0] == 202
    wait_until(lambda: stack["flaky"].state == "backoff", 60, "a backoff")
    reason = stack["flaky"].reason
    assert re.fullmatch(r"backoff 1/5, next try in \d+\.\d s \(exit code 3\)", reason), reason
    # A new run clears it; a stop during the backoff too.
    stack.stop("flaky", timeout=60)
    assert stack["flaky"].state == "stopped" and stack["flaky"].reason == ""


def test_state_events_never_carry_the_command_line(make_stack: Callable[..., corral.Stack],
                                                  helper: str) -> None:
    stack = make_stack("dashcmd")
    stack.add("a", [helper, "print", "argument-9f2c", "pause"])
    stack.start(timeout=60)
    client = corral.connect(stack._served.socket)  # type: ignore[union-attr]
    client.events(timeout=0.0)  # subscribed from here on
    stack.restart("a", timeout=60)
    seen: list[dict[str, Any]] = []

    def restarted() -> bool:
        seen.extend(client.events(timeout=0.5))
        # Ready (at exec), and the line its new run prints: the output does go out.
        return (any(e["kind"] == "state" and e["state"] == "ready" for e in seen)
                and any(e["kind"] == "log" and e["text"] == "argument-9f2c" for e in seen))

    try:
        wait_until(restarted, 60, "the restart's events")
    finally:
        client.close()
    states = [e for e in seen if e["kind"] == "state"]
    assert any(e["state"] == "starting" for e in states)
    assert not any("argument-9f2c" in json.dumps(e) or helper in json.dumps(e) for e in states), states


def test_login_url_turns_tcp_on_and_works_once(make_stack: Callable[..., corral.Stack], helper: str) -> None:
    stack = make_stack("dashlogin")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=60)
    assert stack.api is not None and stack.api["url"] is None  # no TCP yet
    status, body = post(stack, "/v1/login_url", {})
    assert status == 409
    status, body = post(stack, "/v1/login_url", {"serve": True})
    assert status == 200
    check_response("/v1/login_url", "POST", 200, body)
    url = body["url"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/login\?nonce=[0-9a-f]{32}", url)
    u = urllib.parse.urlsplit(url)
    base = f"http://127.0.0.1:{u.port}"
    assert get_tcp(base, "/").status == 401  # neither cookie nor token
    first = get_tcp(base, f"{u.path}?{u.query}")
    assert first.status == 303 and first.getheader("Location") == "/"
    session = (first.getheader("Set-Cookie") or "").split(";")[0]
    assert get_tcp(base, "/", {"Cookie": session}).status == 200
    assert get_tcp(base, "/static/app.js", {"Cookie": session}).status == 200
    assert get_tcp(base, f"{u.path}?{u.query}").status == 403  # spent
    # A second {"serve": true} keeps the same port.
    status, again = post(stack, "/v1/login_url", {"serve": True})
    assert status == 200 and urllib.parse.urlsplit(again["url"]).port == u.port


def test_cli_prints_a_login_link_without_a_browser(tmp_path: Path, helper: str) -> None:
    config = tmp_path / "corral.toml"
    config.write_text(f'[services.a]\ncommand = ["{helper}", "pause"]\n')
    stack = corral.Stack.load(config)
    try:
        stack.start(timeout=60)
        env = {**os.environ, "DISPLAY": ":99", "BROWSER": "false"}
        out = subprocess.run([sys.executable, "-m", "corral", "dashboard", "-f", str(config), "--no-browser"],
                             capture_output=True, text=True, timeout=120, env=env, check=False)
        assert out.returncode == 0, out.stderr
        url = out.stdout.strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/login\?nonce=[0-9a-f]{32}", url), out.stdout
        u = urllib.parse.urlsplit(url)
        assert get_tcp(f"http://127.0.0.1:{u.port}", f"{u.path}?{u.query}").status == 303
        missing = subprocess.run([sys.executable, "-m", "corral", "dashboard", "--name", "no-such-stack-here",
                                  "--no-browser"], capture_output=True, text=True, timeout=120, check=False)
        assert missing.returncode == 1 and "no-such-stack-here" in missing.stderr
    finally:
        stack.close(timeout=60)


def test_dashboard_url_of_an_owned_stack(make_stack: Callable[..., corral.Stack], helper: str) -> None:
    stack = make_stack("dashurl")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=60)
    url = stack.dashboard_url()
    u = urllib.parse.urlsplit(url)
    assert stack.api is not None and stack.api["url"] == f"http://127.0.0.1:{u.port}"
    assert get_tcp(f"http://127.0.0.1:{u.port}", f"{u.path}?{u.query}").status == 303
    assert stack.dashboard_url() != url  # a new link each time
    wait_until(lambda: len(stack.samples("a")) > 0, 60, "sampling turned on")
    with pytest.raises(corral.CorralError, match="no control API"):
        corral.Stack(name="dashnoapi", api=False).dashboard_url()


def test_notebook_view_renders_status_sparklines_and_timeline(make_stack: Callable[..., corral.Stack],
                                                               helper: str) -> None:
    stack = corral.Stack(name="dashnb", metrics_interval=0.05)
    try:
        stack.add("db", [helper, "pause"])
        stack.add("api", [helper, "exit", "137"], depends_on={"db": "started"}, restart="no")
        stack.start(timeout=60)
        wait_until(lambda: stack["api"].state == "exited", 60, "api to exit")
        wait_until(lambda: len(stack.samples("db")) >= 3, 60, "samples")
        page = stack.dashboard()._repr_html_()
        assert "<b>db</b>" in page and "<b>api</b>" in page
        assert "exit code 137" in page  # why api is where it is
        assert "<polyline" in page  # a sparkline from the samples
        assert page.count('class="bar"') == 2  # one timeline bar per started service
    finally:
        stack.close(timeout=60)


# -- the last runs, from history ----------------------------------------------------------------
def history_stack(db: Path, helper: str, *, slow: float = 0.0) -> corral.Stack:
    """db (ready by TCP) and api (depends on db; ready by a log line after `slow` seconds)."""
    stack = corral.Stack(name="dashruns", history=str(db))
    stack.add("db", [helper, "listen", "{{port.main}}", "pause"], ports=["main"],
              ready=corral.TcpCheck(port="main"))
    steps = ["sleep", str(slow)] if slow else []
    stack.add("api", [helper, *steps, "print", "api ready", "pause"], depends_on=["db"],
              ready=corral.LogCheck("api ready"))
    return stack


def past_runs(db: Path, helper: str, count: int) -> None:
    for _ in range(count):
        stack = history_stack(db, helper)
        try:
            stack.start(timeout=60)
        finally:
            stack.close(timeout=60)


def test_runs_without_history_say_so(dash: corral.Stack) -> None:
    status, body, _ = call(dash, "GET", "/v1/runs")
    assert status == 200
    check_response("/v1/runs", "GET", 200, body)
    assert body["history"] is False and body["runs"] == [] and body["current"] is None
    assert "keeps no history" in body["reason"]


def test_runs_list_the_last_start_ups_from_history(tmp_path: Path, helper: str) -> None:
    db = tmp_path / "h.db"
    past_runs(db, helper, 5)
    stack = history_stack(db, helper)
    try:
        stack.start(timeout=60)
        status, body, _ = call(stack, "GET", "/v1/runs")
        assert status == 200
        check_response("/v1/runs", "GET", 200, body)
        assert body["history"] is True and body["reason"] is None
        runs = body["runs"]
        # Five at most, newest first, this run first of all and with its start-up in it.
        assert len(runs) == 5 and [r["run"] for r in runs] == sorted((r["run"] for r in runs), reverse=True)
        assert runs[0]["run"] == body["current"] and runs[0]["ended"] is None
        assert all(r["ended"] is not None for r in runs[1:])
        for run in runs:
            services = {s["service"]: s for s in run["services"]}
            assert set(services) == {"db", "api"}
            db_ready = services["db"]["started"] + services["db"]["ready_seconds"]
            assert services["api"]["started"] >= db_ready - 0.01
            assert services["api"]["ready_seconds"] > 0
        # A restart within a run is not its start-up: the first process stays.
        def startup(doc: dict[str, Any]) -> list[tuple[str, float, float]]:
            return [(s["service"], s["started"], s["ready_seconds"]) for s in doc["runs"][0]["services"]]

        first = startup(body)
        stack.restart("api", timeout=60)
        stack.start(timeout=60)  # publishes again
        _, again, _ = call(stack, "GET", "/v1/runs")
        assert startup(again) == first
        api = next(s for s in again["runs"][0]["services"] if s["service"] == "api")
        assert api["ended"] is not None and api["signal"] == 15  # that first process was stopped
        # serve_api replaces the server: the new one serves the document too.
        stack.dashboard_url()
        _, served, _ = call(stack, "GET", "/v1/runs")
        assert served["current"] == body["current"] and len(served["runs"]) == 5
    finally:
        stack.close(timeout=60)


def test_runs_of_a_history_that_cannot_be_read_say_why(tmp_path: Path, helper: str) -> None:
    # The first run of a history: nothing earlier to show, and the reason says so.
    stack = history_stack(tmp_path / "first.db", helper)
    try:
        stack.start(timeout=60)
        _, body, _ = call(stack, "GET", "/v1/runs")
        check_response("/v1/runs", "GET", 200, body)
        assert [r["run"] for r in body["runs"]] == [body["current"]]
        assert body["reason"] == "no earlier run of this stack in its history"
    finally:
        stack.close(timeout=60)


def test_notebook_view_compares_the_last_runs(tmp_path: Path, helper: str) -> None:
    db = tmp_path / "h.db"
    past_runs(db, helper, 2)
    stack = history_stack(db, helper)
    try:
        stack.start(timeout=60)
        page = stack.dashboard()._repr_html_()
        assert "start-up of the last 3 runs" in page
        assert page.count('class="run-bar"') == 6  # two services, three runs
        assert page.count("all 2 ready after") == 3
    finally:
        stack.close(timeout=60)
    plain = corral.Stack(name="dashnohist")
    try:
        plain.add("a", [helper, "pause"])
        plain.start(timeout=60)
        assert "run-bar" not in plain.dashboard()._repr_html_()
    finally:
        plain.close(timeout=60)


# -- check failures in the event stream -------------------------------------------------------
def test_check_failures_are_marked_in_the_event_stream(make_stack: Callable[..., corral.Stack],
                                                       helper: str) -> None:
    stack = make_stack("dashchecks")
    stack.add("idle", [helper, "pause"])
    # Ready at once, then its liveness check (nothing listens on that port) fails 2 times.
    stack.add("sick", [helper, "pause"], ports=["main"],
              health=corral.TcpCheck(port="main", interval=0.05, timeout=1, retries=2))
    stack.add("slow", [helper, "pause"], ports=["main"],
              ready=corral.TcpCheck(port="main", interval=0.05, start_timeout=0.5))
    stack.add("costly", [helper, "print", "x" * 40, "pause"], ready=corral.LogCheck("(x+x+)+y"))
    stack.add("dependent", [helper, "pause"], depends_on=["slow"])
    stack.start("idle", timeout=60)
    client = corral.connect(stack._served.socket)  # type: ignore[union-attr]
    client.events(timeout=0.0)
    for name in ("sick", "slow", "costly", "dependent"):
        assert post(stack, f"/v1/services/{name}/start", {"wait": False})[0] == 202
    seen: list[dict[str, Any]] = []

    def settled() -> bool:
        seen.extend(e for e in client.events(timeout=0.5) if e["kind"] == "state")
        got = {(e["service"], e["state"]) for e in seen}
        want = {("sick", "unhealthy"), ("slow", "failed"), ("costly", "failed"), ("dependent", "failed")}
        return want <= got

    try:
        wait_until(settled, 60, "the check failures")
    finally:
        client.close()
    for e in seen:
        check({"$ref": "#/components/schemas/StateEvent"}, {k: v for k, v in e.items() if k != "kind"})
    marked = {(e["service"], e["state"]): e for e in seen if e["check_failed"]}
    assert set(marked) == {("sick", "unhealthy"), ("slow", "failed"), ("costly", "failed")}, seen
    assert marked[("sick", "unhealthy")]["reason"].startswith("liveness check failed 2 times: ")
    assert marked[("slow", "failed")]["reason"].startswith("not ready within 0.5s (tcp check: ")
    assert "too costly to match" in marked[("costly", "failed")]["reason"]
    # Failed because of another service: not its own check.
    dependent = [e for e in seen if e["service"] == "dependent" and e["state"] == "failed"]
    assert dependent and not dependent[0]["check_failed"]


# -- the notebook's auto-refresh ----------------------------------------------------------------
def test_notebook_refresh_re_renders_in_place_until_stopped(make_stack: Callable[..., corral.Stack],
                                                             helper: str) -> None:
    ipython = pytest.importorskip("IPython", reason="IPython is not installed")
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    # IPython's own display machinery without a kernel: a shell whose publisher records what
    # display() and a display handle's update() send (what a notebook front end receives).
    assert ipython.version_info >= (7,)
    shell = InteractiveShell.instance()
    publisher = CapturingDisplayPublisher()
    saved, shell.display_pub = shell.display_pub, publisher
    stack = make_stack("dashrefresh")
    stack.add("a", [helper, "pause"])
    stack.start(timeout=60)
    try:
        view = stack.dashboard(refresh=0.05)
        assert publisher.outputs and not publisher.outputs[0]["update"]
        display_id = publisher.outputs[0]["transient"]["display_id"]

        def rendered(text: str) -> bool:
            return any(o["update"] and o["transient"]["display_id"] == display_id
                       and text in o["data"]["text/html"] for o in list(publisher.outputs))

        wait_until(lambda: rendered("</span> ready</td>"), 60, "a refresh showing a ready")
        stack.stop("a", timeout=60)
        # A later rendering of the same output shows the change.
        wait_until(lambda: rendered("</span> stopped</td>"), 60, "a refresh showing the stop")
        thread = view._thread
        assert thread is not None and thread.is_alive()
        view.stop()
        assert not thread.is_alive()  # stop() waits for the thread: nothing renders after it
    finally:
        shell.display_pub = saved
        InteractiveShell.clear_instance()


def test_notebook_refresh_ends_when_the_stack_closes(helper: str) -> None:
    pytest.importorskip("IPython", reason="IPython is not installed")
    from IPython.core.displaypub import CapturingDisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    saved, shell.display_pub = shell.display_pub, CapturingDisplayPublisher()
    stack = corral.Stack(name="dashrefreshclose")
    try:
        stack.add("a", [helper, "pause"])
        stack.start(timeout=60)
        view = stack.dashboard(refresh=0.05)
        thread = view._thread
        assert thread is not None
        stack.close(timeout=60)
        thread.join(60)
        assert not thread.is_alive()
    finally:
        stack.close(timeout=60)
        shell.display_pub = saved
        InteractiveShell.clear_instance()


# -- in a real browser ---------------------------------------------------------------------------
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


def login(browser: Any, stack: corral.Stack) -> tuple[Any, str]:
    """A new browser context logged in through a one-time link; the page and the link."""
    from corral._dashboard import login_url

    # By socket path, not by name: another test run on this machine may have a stack of the
    # same name in the shared runtime directory.
    url = login_url(corral.connect(stack._served.socket))  # type: ignore[union-attr]
    context = browser.new_context()
    page = context.new_page()
    res = page.goto(url)
    assert res is not None and res.ok and urllib.parse.urlsplit(page.url).path == "/"
    page.wait_for_selector('body[data-ready="1"]', timeout=60_000)
    # The event stream is open (its answer came, so the server registered the page's feed):
    # from here on no event is missed.
    page.wait_for_selector('#conn[data-state="live"]', timeout=60_000)
    return page, url


def cell(page: Any, service: str, column: str) -> str:
    return str(page.inner_text(f'tr[data-service="{service}"] td.col-{column}'))


def test_browser_shows_the_stack_and_acts_on_it(browser: Any, dash: corral.Stack) -> None:
    page, url = login(browser, dash)
    # The link worked once: a second browser gets nothing from it.
    other = browser.new_context()
    assert other.new_page().goto(url).status == 403
    other.close()

    # One row per service, with its state (shape and word), pid and ports as links.
    assert page.locator("#services tbody tr").count() == 4
    page.wait_for_function('document.querySelector(\'tr[data-service="db"]\').dataset.state === "ready"')
    assert cell(page, "db", "state").split() == ["\u25CF", "ready"]
    assert cell(page, "db", "pid") == str(dash["db"].pid)
    port = dash["db"].ports["main"]
    link = page.locator('tr[data-service="db"] td.col-ports a')
    assert link.inner_text() == f"main:{port}" and link.get_attribute("href") == f"http://127.0.0.1:{port}/"
    # Why a service waits.
    assert cell(page, "late", "state").split() == ["\u25CC", "pending"]
    assert "waiting for gate: ready" in cell(page, "late", "why")
    # A bar per service that started, none for one that did not.
    for name in ("db", "web", "gate"):
        assert page.locator(f'#timeline rect.bar[data-service="{name}"]').count() == 1
    assert page.locator('#timeline rect.bar[data-service="late"]').count() == 0
    assert page.locator('#timeline path.edge.held[data-from="db"][data-to="web"]').count() == 1
    # Without history only this run: no past run to pick, and the page says why.
    assert "keeps no history" in page.inner_text("#timeline-note")
    assert page.locator("#timeline-run").is_disabled()
    # Logs: combined with prefixes, stderr told apart.
    page.wait_for_selector('#logs .line.stderr[data-service="web"] >> text=web warn')
    assert page.locator('#logs .line.stdout[data-service="db"] >> text=db up').count() == 1
    # The port resource is listed.
    assert page.locator("#resources td", has_text=f"{port}").count() == 1

    # Restart from the page: the row changes without a reload.
    page.evaluate("window.notReloaded = true")
    old_pid = dash["web"].pid
    page.click('tr[data-service="web"] button[data-action="restart"]')
    page.wait_for_function(
        f"""() => {{ const r = document.querySelector('tr[data-service="web"]');
                   const pid = r.querySelector("td.col-pid").textContent;
                   return r.dataset.state === "ready" && pid !== "{old_pid}" && pid !== ""; }}""",
        timeout=60_000)
    assert dash["web"].pid != old_pid and cell(page, "web", "pid") == str(dash["web"].pid)
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#events li[data-service='web'][data-state='stopping']").count() >= 1

    # A signal from the page; the line it makes appears in the log view (the helper exits
    # after printing it).
    page.click('tr[data-service="web"] button[data-action="signal"]')
    page.click('#signal-menu button[data-signal="USR1"]')
    page.wait_for_selector('#logs .line[data-service="web"] >> text=ping from the test', timeout=60_000)
    # The filter and the search.
    page.select_option("#log-service", "db")
    assert page.locator('#logs .line[data-service="web"]').count() == 0
    assert page.locator('#logs .line[data-service="db"]').count() >= 1
    page.select_option("#log-service", "")
    page.fill("#log-search", "ping from")
    assert page.locator("#logs .line").count() == 1
    page.fill("#log-search", "")

    if os.environ.get("CORRAL_SCREENSHOT"):
        # A few seconds of samples for the sparklines, read by a fresh load of the page.
        dash.restart("web", timeout=60)
        wait_until(lambda: len(dash.samples("db")) >= 25, 60, "samples")
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.evaluate("window.corral.loadSamples()")
        page.wait_for_selector('tr[data-service="db"] td.col-cpu svg')
        page.screenshot(path=str(ROOT / os.environ["CORRAL_SCREENSHOT"]), full_page=True)
    page.context.close()


def test_kill_now_ends_a_stop_that_waits(browser: Any, make_stack: Callable[..., corral.Stack],
                                         helper: str) -> None:
    stack = make_stack("dashkill")
    stack.add("stubborn", [helper, "ignore", "TERM", "pause"], stop_timeout=600)
    stack.start(timeout=60)
    page, _ = login(browser, stack)
    row = 'tr[data-service="stubborn"]'
    assert page.locator(f'{row} button[data-action="kill"]').is_hidden()
    page.click(f'{row} button[data-action="stop"]')
    # It ignores SIGTERM: the stop waits (for 600 s), and the page offers to end it now.
    page.wait_for_selector(f'{row}[data-state="stopping"] button[data-action="kill"]:visible', timeout=60_000)
    page.click(f'{row} button[data-action="kill"]')
    page.wait_for_selector(f'{row}[data-state="stopped"]', timeout=60_000)
    assert page.locator(f'{row} button[data-action="kill"]').is_hidden()
    assert stack["stubborn"].state == "stopped"
    page.context.close()


def test_browser_without_a_session_is_refused(browser: Any, dash: corral.Stack) -> None:
    url = dash.dashboard_url()
    base = url.split("/v1/")[0]
    context = browser.new_context()
    page = context.new_page()
    for path in ("/", "/static/app.js", "/v1/services"):
        assert page.goto(base + path).status == 401, path
    context.close()


def test_a_cross_origin_post_is_refused(browser: Any, dash: corral.Stack) -> None:
    page, _ = login(browser, dash)
    base = page.url.rstrip("/")
    old_pid, restarts = dash["web"].pid, dash["web"].restarts
    # A page of another site in the same browser (which holds the session cookie) tries
    # to restart a service: with a JSON body (needs a preflight, never approved) and as a
    # "simple request" (text/plain, sent without asking; refused by Origin and type).
    evil = page.context.new_page()
    evil.route("http://evil.example/**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                                     body="<html><body>evil</body></html>"))
    evil.goto("http://evil.example/")
    outcome = evil.evaluate(
        """async (base) => {
             const out = [];
             try {
               const r = await fetch(base + "/v1/services/web/restart", {method: "POST",
                 credentials: "include",
                 headers: {"Content-Type": "application/json"}, body: "{}"});
               out.push("json:" + r.status);
             } catch (e) { out.push("json:blocked"); }
             try {
               await fetch(base + "/v1/services/web/restart", {method: "POST", mode: "no-cors",
                 credentials: "include", headers: {"Content-Type": "text/plain"}, body: "{}"});
               out.push("plain:sent");
             } catch (e) { out.push("plain:blocked"); }
             return out;
           }""", base)
    assert outcome[0] == "json:blocked", outcome
    # Whatever the browser did with the simple request, the service was not touched.
    _, answer, _ = call(dash, "GET", "/v1/services/web")
    assert answer["pid"] == old_pid and answer["restarts"] == restarts and answer["state"] == "ready"
    page.context.close()


def test_browser_compares_the_last_runs_start_ups(browser: Any, tmp_path: Path, helper: str) -> None:
    db = tmp_path / "h.db"
    past_runs(db, helper, 2)
    stack = history_stack(db, helper, slow=0.3)  # this time api takes 0.3 s longer
    try:
        stack.start(timeout=60)
        page, _ = login(browser, stack)
        # This run (live), the runs side by side, and each of the two earlier runs.
        page.wait_for_selector('#timeline-run option[value="compare"]', state="attached", timeout=60_000)
        values = page.eval_on_selector_all("#timeline-run option", "os => os.map(o => o.value)")
        assert values[:2] == ["live", "compare"] and len(values) == 4, values
        assert page.locator('#timeline[data-view="live"] rect.bar').count() == 2
        page.select_option("#timeline-run", "compare")
        page.wait_for_selector('#timeline[data-view="compare"]', timeout=60_000)
        # A bar per service and run, the current run's on top.
        for name in ("db", "api"):
            for run in range(3):
                bar = f'#timeline rect.bar[data-service="{name}"][data-run="{run}"]'
                assert page.locator(bar).count() == 1
        legend = page.locator("#timeline-legend li").all_inner_texts()
        assert len(legend) == 3 and legend[0].startswith("this run")
        assert all("all 2 ready after" in t for t in legend), legend
        # The slower start-up shows: this run's api bar is longer than the earlier runs'.
        width = page.eval_on_selector_all('#timeline rect.bar[data-service="api"]',
                                          "bars => bars.map(b => [b.dataset.run, b.width.baseVal.value])")
        widths = dict(width)
        assert widths["0"] > 2 * max(widths["1"], widths["2"]), widths
        if os.environ.get("CORRAL_SCREENSHOT"):
            shot = Path(os.environ["CORRAL_SCREENSHOT"])
            runs_shot = ROOT / shot.with_name(shot.stem + "-runs.png")  # docs/dashboard-runs.png
            page.locator("#timeline-section").screenshot(path=str(runs_shot))
        page.select_option("#timeline-run", values[3])
        page.wait_for_selector(f'#timeline[data-view="{values[3]}"]', timeout=60_000)
        assert page.locator("#timeline rect.bar.ready").count() == 2
        assert page.locator('#timeline path.edge.held[data-from="db"][data-to="api"]').count() == 1
        assert page.locator("#timeline-legend li").count() == 0
        page.context.close()
    finally:
        stack.close(timeout=60)


def test_browser_lists_check_failures_and_restarts_apart(browser: Any,
                                                         make_stack: Callable[..., corral.Stack],
                                                         helper: str) -> None:
    stack = make_stack("dashcheckpage")
    stack.add("idle", [helper, "pause"])
    stack.add("sick", [helper, "pause"], ports=["main"],
              health=corral.TcpCheck(port="main", interval=0.05, timeout=1, retries=2))
    stack.add("flaky", [helper, "exit", "3"],
              restart=corral.Restart("on-failure", backoff=0.05, max_restarts=2))
    stack.start("idle", timeout=60)
    page, _ = login(browser, stack)
    for name in ("sick", "flaky"):
        assert post(stack, f"/v1/services/{name}/start", {"wait": False})[0] == 202
    check_item = '#events li[data-kind="check"][data-service="sick"][data-state="unhealthy"]'
    page.wait_for_selector(check_item, timeout=60_000)
    assert "liveness check failed 2 times" in page.inner_text(check_item)
    page.wait_for_selector('#events li[data-kind="restart"][data-service="flaky"][data-state="backoff"]',
                           timeout=60_000)
    assert "exit code 3" in page.inner_text('#events li[data-kind="restart"][data-state="backoff"] >> nth=0')
    # The filter: only the check failures, then only the restarts.
    page.select_option("#event-kind", "check")
    assert page.locator(check_item).is_visible()
    assert page.locator('#events li[data-kind="state"] >> visible=true').count() == 0
    assert page.locator('#events li[data-kind="restart"] >> visible=true').count() == 0
    assert page.inner_text('#event-kind option[value="check"]').startswith("check failures (")
    page.select_option("#event-kind", "restart")
    assert page.locator(check_item).is_hidden()
    assert page.locator('#events li[data-kind="restart"] >> visible=true').count() >= 1
    page.select_option("#event-kind", "all")
    assert page.locator(check_item).is_visible()
    page.context.close()


def test_browser_draws_only_the_rows_in_view_past_1000_services(browser: Any,
                                                                 make_stack: Callable[..., corral.Stack],
                                                                 helper: str) -> None:
    # 1,500 services, of which only two ever run: the table lists them all the same.
    stack = make_stack("dashvirtual")
    for i in range(1500):
        stack.add(f"svc{i:04d}", [helper, "pause"])
    stack.add("talker", [helper, "lines", "3000", "line", "pause"])
    stack.start("svc0750", timeout=60)
    page, _ = login(browser, stack)
    rows = 'document.querySelectorAll("#services tbody tr[data-service]").length'
    assert 10 < page.evaluate(rows) < 200
    assert page.evaluate("window.corral.table.order.length") == 1501
    # Scrolled to the end: the last rows are drawn, the first are not.
    page.evaluate('document.querySelector("#services-scroll").scrollTop = 1e9')
    page.wait_for_selector('tr[data-service="talker"]', timeout=60_000)
    assert page.locator('tr[data-service="svc0000"]').count() == 0
    assert page.evaluate(rows) < 200
    # A change to a row out of view is there when it comes into view.
    assert post(stack, "/v1/services/svc0000/start", {"wait": True})[0] == 200
    # (Functions, not expressions: the page's CSP forbids evaluating strings while polling.)
    pid = stack["svc0000"].pid
    page.wait_for_function(f'() => {{ const r = window.corral.services.get("svc0000");'
                           f' return r.state === "ready" && r.pid === {pid}; }}', timeout=60_000)
    page.evaluate('document.querySelector("#services-scroll").scrollTop = 0')
    page.wait_for_selector('tr[data-service="svc0000"][data-state="ready"]', timeout=60_000)
    assert cell(page, "svc0000", "pid") == str(pid)
    # The log view: 3,000 lines, of which only those in view are elements.
    assert post(stack, "/v1/services/talker/start", {"wait": False})[0] == 202
    page.wait_for_function("() => window.corral.logView.shown.length >= 3000", timeout=60_000)
    page.wait_for_selector("#logs .line >> text=line 2999", timeout=60_000)  # followed to the end
    assert page.locator("#logs .line").count() < 200
    page.evaluate('document.querySelector("#logs").scrollTop = 0')
    page.wait_for_selector("#logs .line >> text=/^line 0$/", timeout=60_000)
    assert page.locator("#logs .line").count() < 200
    assert page.locator("#log-follow").is_visible()  # reading up there: no auto-scroll
    page.fill("#log-search", "line 1234")
    page.wait_for_function("() => window.corral.logView.shown.length === 1", timeout=60_000)
    page.wait_for_selector("#logs .line >> text=line 1234", timeout=60_000)
    page.context.close()


def bench(browser: Any, stack: corral.Stack, count: int) -> str:
    """First render and one state event, timed in the page (performance.now)."""
    page, _ = login(browser, stack)
    first = page.evaluate("window.corral.perf.firstRender")
    fetched = page.evaluate("window.corral.perf.fetch")
    parts = page.evaluate("window.corral.perf.parts")
    updates = page.evaluate("window.corral.perf.updates")
    victim = f"svc{count // 2:04d}"
    stack.stop(victim, timeout=60)
    page.wait_for_function(f"() => window.corral.perf.updates >= {updates + 2}", timeout=60_000)
    page.wait_for_function(f"() => window.corral.services.get('{victim}').state === 'stopped'",
                           timeout=60_000)
    update = page.evaluate("window.corral.perf.lastUpdate")
    # One state event through to the next frame (style, layout, paint of the change).
    frame = page.evaluate("""(name) => new Promise((done) => {
        const t0 = performance.now();
        window.corral.onState({service: name, time: Date.now() / 1000, state: "stopping",
                               reason: "", exit_code: null, check_failed: false});
        requestAnimationFrame(() => setTimeout(() => done(performance.now() - t0), 0));
      })""", f"svc{count // 2 + 1:04d}")
    drawn = page.evaluate('document.querySelectorAll("#services tbody tr[data-service]").length')
    page.context.close()
    return (f"{count} services ({drawn} rows drawn): first render {first:.1f} ms (of which the two GETs "
            f"{fetched:.1f} ms; table {parts['table']:.1f}, timeline {parts['timeline']:.1f}, "
            f"layout {parts['layout']:.1f}); one state event applied in {update:.2f} ms, "
            f"to the next frame {frame:.1f} ms")


@pytest.mark.parametrize("count", [500, 2000])
def test_bench_services(browser: Any, make_stack: Callable[..., corral.Stack], helper: str,
                        count: int) -> None:
    if not os.environ.get("CORRAL_DASHBOARD_BENCH"):
        pytest.skip("the 500- and 2,000-service bench runs with CORRAL_DASHBOARD_BENCH=1")
    stack = make_stack("dashbench")
    for i in range(count):
        stack.add(f"svc{i:04d}", [helper, "pause"], ports=["http"] if i % 5 == 0 else [])
    t0 = time.monotonic()
    stack.start(timeout=600)
    started = time.monotonic() - t0
    print(f"\ndashboard bench, {bench(browser, stack, count)} (the stack started in {started:.0f} s)")


def test_openapi_documents_the_new_fields() -> None:
    # The Service rows' new fields and the new paths are in the document the tests check against.
    service = DOC["components"]["schemas"]["Service"]
    assert {"depends_on", "resources"} <= set(service["required"])
    assert {"/v1/samples", "/v1/runs", "/", "/static/{file}"} <= set(DOC["paths"])
    check({"$ref": "#/components/schemas/Service"}, {
        "name": "a", "state": "ready", "pid": 1, "restarts": 0, "exit_code": None, "ports": {},
        "reason": "", "started_at": 1.0, "ready_at": 1.0, "log_lines": 0, "log_dropped": 0,
        "depends_on": [{"service": "b", "condition": "ready"}], "resources": {"gpu": ["0"]}})
    json.dumps(DOC)
