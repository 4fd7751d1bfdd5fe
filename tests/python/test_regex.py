"""User regexes (LogCheck, wait_for_log) run on the engine thread and must never crash or
freeze the owner: a pattern too costly for a line fails with a clear error instead.

The dangerous cases run in a child interpreter, so a crash (SIGSEGV) or a freeze of the
owner shows up as a failed test instead of taking the test session down with it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import threading

import pytest

import corral
from conftest import alive, python_script, wait_until

LINE = 16 * 1024  # the longest line the engine keeps whole


def _run_owner(code: str, *args: str) -> dict[str, object]:
    """Runs `code` in a child interpreter that prints one JSON object; fails the test if
    that owner died (a signal) or froze (no answer within a generous deadline)."""
    out = subprocess.run([*python_script(textwrap.dedent(code)), *args], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, f"owner ended with {out.returncode}: {out.stderr[-2000:]}"
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


_START_ONE = """
    import json, sys, corral
    helper, pattern, line = sys.argv[1:4]
    stack = corral.Stack(name="regex")
    stack.add("svc", [helper, "print", line, "pause"],
              ready=corral.LogCheck(pattern, start_timeout=120))
    try:
        stack.start(timeout=180)
        result = {"state": stack["svc"].state, "reason": ""}
    except corral.StartError as e:
        result = {"state": stack["svc"].state, "reason": e.reason}
    # The owner still answers after the search.
    result["rows"] = len(stack.status())
    stack.close(timeout=60)
    print(json.dumps(result))
"""


@pytest.mark.parametrize("pattern, suffix", [(r"(.|\n)*ready", "ready"), (r"(\w|-)+ started", " started")])
def test_long_line_that_matches_makes_the_service_ready(helper, pattern, suffix):
    # std::regex recursed once per character here and overflowed the owner's stack.
    line = "a" * (LINE - len(suffix)) + suffix
    result = _run_owner(_START_ONE, helper, pattern, line)
    assert result == {"state": "ready", "reason": "", "rows": 1}


@pytest.mark.parametrize("pattern", [r"(.|\n)*ready", r"(\w|-)+ started"])
def test_long_line_too_costly_to_search_fails_readiness_clearly(helper, pattern):
    result = _run_owner(_START_ONE, helper, pattern, "a" * LINE)
    assert result == {
        "state": "failed",
        "reason": f"log pattern '{pattern}' is too costly to match on a line of {LINE} bytes",
        "rows": 1,
    }


def test_catastrophic_pattern_fails_fast_while_other_stacks_keep_answering(helper):
    # (x+x+)+y on 40 x's backtracks 2^40 ways: std::regex never returned and every stack of
    # the process froze with the engine thread.
    code = """
        import json, sys, threading, time, corral
        helper = sys.argv[1]
        other = corral.Stack(name="other")
        other.add("idle", [helper, "pause"])
        other.start(timeout=120)
        slowest, stop = [0.0], threading.Event()

        def poll():
            while not stop.is_set():
                t = time.monotonic()
                other.status()
                slowest[0] = max(slowest[0], time.monotonic() - t)
                stop.wait(0.005)

        poller = threading.Thread(target=poll)
        poller.start()
        stack = corral.Stack(name="costly")
        stack.add("svc", [helper, "print", "x" * 40, "pause"],
                  ready=corral.LogCheck("(x+x+)+y", start_timeout=120))
        t = time.monotonic()
        try:
            stack.start(timeout=180)
            reason = ""
        except corral.StartError as e:
            reason = e.reason
        elapsed = time.monotonic() - t
        stop.set()
        poller.join()
        result = {"reason": reason, "state": stack["svc"].state, "elapsed": elapsed,
                  "slowest_status": slowest[0], "other": other["idle"].state}
        stack.close(timeout=60)
        other.close(timeout=60)
        print(json.dumps(result))
    """
    result = _run_owner(code, helper)
    assert result["reason"] == "log pattern '(x+x+)+y' is too costly to match on a line of 40 bytes"
    assert result["state"] == "failed"
    assert result["other"] == "ready"
    # Failed at once, not at the 120 s readiness deadline.
    assert result["elapsed"] < 60, result
    # Generous for a loaded 2-core machine; the search itself takes milliseconds.
    assert result["slowest_status"] < 5, result


def test_too_costly_readiness_kills_the_service(make_stack, helper):
    stack = make_stack()
    svc = stack.add("svc", [helper, "pid", "print", "x" * 40, "pause"],
                    ready=corral.LogCheck("(x+x+)+y", start_timeout=120))
    with pytest.raises(corral.StartError, match=r"too costly to match on a line of 40 bytes") as info:
        stack.start(timeout=120)
    assert info.value.service == "svc"
    assert svc.state == "failed"
    pid = int(next(line for line in svc.logs() if line.startswith("pid")).split()[1])
    wait_until(lambda: not alive(pid), timeout=30, what="the failed service to be killed")


def test_wait_for_log_on_a_captured_line_raises_a_corral_error(make_stack, helper):
    stack = make_stack()
    svc = stack.add("svc", [helper, "print", "x" * 40, "print", "armed", "pause"],
                    ready=corral.LogCheck("armed"))
    stack.start(timeout=120)
    with pytest.raises(corral.CorralError, match=r"service 'svc': log pattern '\(x\+x\+\)\+y' is too costly "
                                                 r"to match on a line of 40 bytes") as info:
        svc.wait_for_log("(x+x+)+y", timeout=120)
    assert not isinstance(info.value, (corral.Timeout, corral.StackClosed))
    # The engine still serves this stack.
    assert svc.wait_for_log("armed", timeout=60) == "armed"
    assert stack.status()[0]["state"] == "ready"


def test_wait_for_log_on_a_line_that_arrives_later_raises_a_corral_error(make_stack, helper):
    stack = make_stack()
    svc = stack.add("svc", [helper, "trap", "USR1", "x" * 40, "print", "armed", "pause"],
                    ready=corral.LogCheck("armed"))
    stack.start(timeout=120)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            # Not new_only: on a loaded machine this thread may ask only after the line came
            # (then it waited for a later one, until its timeout); it then finds it among the
            # kept lines, and the pattern fails on it just the same.
            svc.wait_for_log("(x+x+)+y", timeout=120)
        except BaseException as e:  # the test looks at what was raised
            errors.append(e)

    waiter = threading.Thread(target=wait)
    waiter.start()
    svc.signal(signal.SIGUSR1)  # prints the 40 x's
    waiter.join(timeout=150)
    assert not waiter.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], corral.CorralError)
    assert not isinstance(errors[0], (corral.Timeout, corral.StackClosed))
    assert "log pattern '(x+x+)+y' is too costly to match on a line of 40 bytes" in str(errors[0])


def test_ecmascript_patterns_keep_working_and_perl_extensions_are_accepted(make_stack, helper):
    stack = make_stack()
    stack.add("plain", [helper, "print", "Listening on port 8080", "pause"],
              ready=corral.LogCheck(r"^Listening on (port )?\d+$"))
    stack.add("nocase", [helper, "print", "SERVER READY", "pause"], ready=corral.LogCheck("(?i)server ready"))
    stack.add("behind", [helper, "print", "port=8080", "pause"], ready=corral.LogCheck(r"(?<=port=)\d+"))
    stack.start(timeout=120)
    assert {row["name"]: row["state"] for row in stack.status()} == {
        "plain": "ready", "nocase": "ready", "behind": "ready"}


def test_invalid_patterns_are_config_errors(make_stack, helper):
    with pytest.raises(corral.ConfigError, match="invalid regular expression"):
        corral.LogCheck("(unclosed")
    stack = make_stack()
    stack.add("svc", [helper, "print", "hi", "pause"])
    stack.start(timeout=120)
    with pytest.raises(corral.ConfigError, match=r"'\[z-a\]' is not a valid regex"):
        stack["svc"].wait_for_log("[z-a]", timeout=10)
