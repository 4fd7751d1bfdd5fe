"""Bytes that are not UTF-8 reach Python as text with U+FFFD, everywhere service output
does: logs(), events(), wait_for_log, StartError, status reasons, the pytest report and
`corral up`. A line longer than the cap is cut on a character boundary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import corral
from conftest import python_script

LINE_CAP = 16 * 1024
# Bytes that are not UTF-8: a Latin-1 "é", then arbitrary binary (fixed, so a failure can be
# reproduced), then a long line of "é" (2 bytes each) that the line cap must cut.
BINARY = bytes(range(256))
LONG = "é" * (LINE_CAP // 2 + 1000)
PRINTER = (
    "import sys; out = sys.stdout.buffer; "
    "out.write(b'caf\\xe9\\n'); "
    f"out.write({BINARY!r} + b'\\n'); "
    f"out.write(b'x' + {LONG!r}.encode() + b'\\n'); "
    "out.write(b'done\\n'); out.flush()"
)


def _printer(stack: corral.Stack, **options: object) -> corral.Service:
    return stack.add("bytes", python_script(PRINTER + "; import time; time.sleep(600)"), **options)


def _check_lines(lines: list[str]) -> None:
    assert "caf\ufffd" in lines
    # The long line arrives in pieces of at most the cap, none holding half a character:
    # joined, they give the line back exactly.
    start = next(i for i, line in enumerate(lines) if line.startswith("x" + "é" * 10))
    pieces = []
    for line in lines[start:]:
        if line == "done":
            break
        pieces.append(line)
    assert len(pieces) >= 2
    assert all(len(p.encode()) <= LINE_CAP for p in pieces)
    assert "".join(pieces) == "x" + LONG
    assert not any("\ufffd" in p for p in pieces)
    # The binary line: its ASCII survives, each invalid byte became U+FFFD.
    binary = next(line for line in lines if "\ufffd" in line and "!\"#$%&" in line)
    assert "0123456789" in binary


def test_logs_events_and_wait_for_log_decode_with_replacement(make_stack):
    stack = make_stack()
    service = _printer(stack, ready=corral.LogCheck("^done$"))
    stack.events(0)
    stack.start(timeout=60)
    assert service.wait_for_log("^caf", timeout=30) == "caf\ufffd"
    _check_lines(service.logs())
    records = service.log_records()
    assert any(text == "caf\ufffd" for _, _, text, _ in records)
    events = []
    while not any(e.get("text") == "done" for e in events):
        batch = stack.events(30)
        assert batch, "no events within 30 s"
        events += batch
    _check_lines([e["text"] for e in events if e["kind"] == "log"])


def test_start_error_and_reason_decode_with_replacement(make_stack):
    stack = make_stack()
    stack.add("bad", python_script(PRINTER + "; sys.exit(3)"),
              ready=corral.LogCheck("never printed"))
    with pytest.raises(corral.StartError) as info:
        stack.start(timeout=60)
    message = str(info.value)
    assert "bad" in message and "done" in message
    assert isinstance(stack["bad"].reason, str)
    # The tail (the last log lines) is in the message, decoded.
    assert "\ufffd" in message or "é" in message


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_up_prints_undecodable_output(tmp_path: Path, helper: str, stream: str):
    config = tmp_path / "corral.toml"
    code = (f"import sys; out = sys.{stream}.buffer; out.write(b'caf\\xe9\\n'); "
            "out.write(b'ok\\n'); out.flush()")
    config.write_text(f"""
[services.bytes]
command = [{sys.executable!r}, "-c", {code!r}]
""")
    out = subprocess.run([sys.executable, "-m", "corral", "up", "-f", str(config)],
                         capture_output=True, timeout=120,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    text = out.stdout.decode()
    assert "bytes | caf\ufffd" in text and "bytes | ok" in text
    assert "UnicodeDecodeError" not in out.stderr.decode(errors="replace")


def test_pytest_report_section_decodes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8")
    code = "import sys, time; sys.stdout.buffer.write(b'caf\\xe9 up\\n'); sys.stdout.flush(); time.sleep(600)"
    pytester.makefile(".toml", corral=f"""
[services.bytes]
command = [{sys.executable!r}, "-c", {code!r}]
ready = {{ log = "up" }}
""")
    pytester.makeini("[pytest]\ncorral_stack = corral.toml\n")
    pytester.makepyfile("def test_fails(corral_stack):\n    assert False, 'on purpose'\n")
    result = pytester.runpytest_subprocess("-p", "corral.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*corral logs*", "caf\ufffd up"])
    assert "UnicodeDecodeError" not in result.stdout.str()
