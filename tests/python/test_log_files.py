"""[logs]: every service's lines on disk too, stamped, rotated by size, with real processes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import corral

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


def test_lines_go_to_a_stamped_file_per_service_next_to_the_config(tmp_path, helper):
    config = tmp_path / "corral.toml"
    config.write_text(f"""
[logs]
dir = "logs"

[services.talk]
command = ["{helper}", "print", "hello", "stderr", "oops", "print", "done", "pause"]
ready = {{ log = "^done$" }}
""")
    with corral.Stack.load(config) as stack:
        assert stack["talk"].state == "ready"
    lines = (tmp_path / "logs" / "talk.log").read_text().splitlines()
    # stdout and stderr are two pipes: their lines keep their order within each stream.
    stamped = [re.sub(STAMP, "T", line) for line in lines]
    assert [x for x in stamped if " out " in x] == ["T out hello", "T out done"]
    assert [x for x in stamped if " err " in x] == ["T err oops"]


def test_bytes_are_kept_as_written_and_runs_append(tmp_path, helper):
    stack = corral.Stack(logs=tmp_path / "logs")
    stack.add("bin", ["/bin/sh", "-c", r"printf 'caf\351\n'; echo second"], restart="no")
    for _ in range(2):
        stack.start(timeout=30)
        stack.wait("bin", "exited", timeout=30)
        stack.stop(timeout=30)
    stack.close()
    data = (tmp_path / "logs" / "bin.log").read_bytes()
    assert data.count(b" out caf\xe9\n") == 2 and data.count(b" out second\n") == 2


def test_files_rotate_by_size_keeping_keep(tmp_path, helper):
    stack = corral.Stack(logs={"dir": str(tmp_path), "max_size": "2KiB", "keep": 2})
    stack.add("chatty", [helper, "lines", "300", "x" * 40, "print", "the-end", "pause"],
              ready=corral.LogCheck("^the-end$"))
    with stack:
        pass
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 2048
    assert (tmp_path / "chatty.log").read_text().splitlines()[-1].endswith(" out the-end")


@pytest.mark.parametrize(("logs", "message"), [
    ('{ dir = "logs", max_size = "ten" }', "logs.max_size"),
    ('{ dir = "logs", rotate = 3 }', "logs.rotate"),
    ('{ max_size = 100 }', "logs.dir"),
    ('{ dir = "logs", keep = -1 }', "logs.keep"),
])
def test_bad_logs_tables_name_the_key(tmp_path, helper, logs, message):
    config = tmp_path / "corral.toml"
    config.write_text(f'logs = {logs}\n[services.a]\ncommand = ["{helper}", "pause"]\n')
    with pytest.raises(corral.ConfigError) as err:
        corral.Stack.load(config)
    assert message in str(err.value) and "corral.toml" in str(err.value)


def test_a_log_directory_that_cannot_be_made_starts_nothing(tmp_path, helper):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    stack = corral.Stack(logs=blocker / "logs")
    stack.add("a", [helper, "pid", "pause"])
    with pytest.raises(corral.ConfigError, match="cannot create the log directory"):
        stack.start(timeout=30)
    assert stack["a"].pid is None
    stack.close()


def test_a_planted_symlink_is_not_followed(tmp_path, helper):
    logs = tmp_path / "logs"
    logs.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (logs / "svc.log").symlink_to(victim)
    stack = corral.Stack(logs=logs)
    stack.add("svc", [helper, "print", "hi", "pause"], ready=corral.LogCheck("^hi$"))
    with stack:
        lines = stack["svc"].logs()
    assert victim.read_text() == "precious\n"
    assert any("cannot open log file" in line for line in lines), lines
    assert Path(logs / "svc.log").is_symlink()
