"""`corral up` is driven by the event stream: idle, it does not poll status(); at the end it
prints every queued event, however many."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import wait_until


def test_idle_up_does_not_poll_status(tmp_path: Path, helper: str):
    ready = tmp_path / "ready"
    config = tmp_path / "corral.toml"
    config.write_text(f"""
[services.idle]
command = ["{helper}", "write-file", "{ready}", "up", "pause"]
""")
    # `corral up` in a process of its own, with Stack.status counted (the real method is
    # called; only the number of calls is recorded).
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        import corral.cli, corral.stack
        calls = [0]
        real = corral.stack.Stack.status
        def counted(self):
            calls[0] += 1
            return real(self)
        corral.stack.Stack.status = counted

        def watch():
            while not os.path.exists({str(ready)!r}):
                time.sleep(0.01)
            before = calls[0]
            time.sleep(2)  # not a synchronisation: the idle window observed
            sys.stderr.write(f"status calls while idle: {{calls[0] - before}}\\n")
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=watch, daemon=True).start()
        sys.exit(corral.cli.main(["up", "-f", {str(config)!r}]))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    calls = int(re.search(r"status calls while idle: (\d+)", out.stderr).group(1))
    # At most the one look at the engine's states when the start ends (the log reader's may
    # lag behind), which can fall inside the window; polling would make it 20 or more.
    assert calls <= 1
    assert "idle | [corral] stopped" in out.stdout


def test_up_prints_every_event_queued_at_the_end(tmp_path: Path):
    # On SIGTERM the service writes far more lines than one events() call returns (4,096),
    # then exits: every one of them must be printed before `corral up` exits.
    count = 20000
    started = tmp_path / "started"
    code = textwrap.dedent(f"""
        import os, signal, sys
        def on_term(signum, frame):
            sys.stdout.write("".join(f"line {{i}}\\n" for i in range({count})))
            sys.stdout.flush()
            os._exit(0)
        signal.signal(signal.SIGTERM, on_term)
        open({str(started)!r}, "w").close()
        while True:
            signal.pause()
    """)
    config = tmp_path / "corral.toml"
    config.write_text(f"""
[services.burst]
command = [{json.dumps(sys.executable)}, "-c", {json.dumps(code)}]
""")
    with subprocess.Popen([sys.executable, "-m", "corral", "up", "-f", str(config)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_until(started.exists, timeout=60, what="the service to start")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [line for line in out.splitlines() if line.startswith("burst | line ")]
    assert len(lines) == count, f"{count - len(lines)} lines lost"
    assert lines[-1] == f"burst | line {count - 1}"
