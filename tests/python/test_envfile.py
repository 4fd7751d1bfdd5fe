"""`.env` files: the syntax (docker compose's), the `.env` beside a config file feeding
${VAR}, and `env_file` (per service and stack-wide) reaching real processes."""

from __future__ import annotations

from pathlib import Path

import pytest

import corral
from corral.envfile import read_env_file


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_syntax_of_compose_env_files(tmp_path):
    path = write(tmp_path / "x.env", """
# a comment
export EXPORTED=yes
PLAIN=some value   # a trailing comment
HASH=a#b
EMPTY=
SINGLE='literal $HOME \\n # kept'
DOUBLE="tab\\there \\"quoted\\" # kept"
MULTI="first
second"
  SPACED = around
""")
    assert read_env_file(path) == {
        "EXPORTED": "yes",
        "PLAIN": "some value",
        "HASH": "a#b",
        "EMPTY": "",
        "SINGLE": "literal $HOME \\n # kept",
        "DOUBLE": 'tab\there "quoted" # kept',
        "MULTI": "first\nsecond",
        "SPACED": "around",
    }


@pytest.mark.parametrize(("text", "message"), [
    ("GOOD=1\nno equals sign\n", "line 2: expected KEY=VALUE"),
    ("1BAD=x\n", "line 1: invalid variable name '1BAD'"),
    ('OPEN="never closed\n', "line 1: the \" quote of OPEN is never closed"),
])
def test_malformed_env_files_name_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad.env", text)
    with pytest.raises(corral.ConfigError) as err:
        read_env_file(path)
    assert message in str(err.value) and "bad.env" in str(err.value)


def test_a_missing_or_binary_env_file_is_a_config_error(tmp_path):
    with pytest.raises(corral.ConfigError, match=r"cannot read env file .*nope\.env"):
        read_env_file(str(tmp_path / "nope.env"))
    binary = tmp_path / "bin.env"
    binary.write_bytes(b"A=\xff\xfe\n")
    with pytest.raises(corral.ConfigError, match=r"bin\.env is not UTF-8"):
        read_env_file(str(binary))


def test_dotenv_beside_the_config_feeds_expansion_and_the_environment_wins(tmp_path, helper, monkeypatch):
    (tmp_path / ".env").write_text("GREETING=from-dotenv\nOTHER=dotenv-other\n")
    config = tmp_path / "corral.toml"
    config.write_text(f"""
[services.echo]
command = ["{helper}", "print", "${{GREETING}}", "print", "${{OTHER}}", "pause"]
""")
    monkeypatch.setenv("OTHER", "from-environment")
    stack = corral.Stack.load(config)
    assert stack["echo"].spec.command[2] == "from-dotenv"
    assert stack["echo"].spec.command[4] == "from-environment"


def test_env_file_reaches_the_service_under_its_own_env(tmp_path, helper, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "common.env").write_text("SHARED=stack\nLEVEL=stack\nOWN=stack\n")
    (conf / "web.env").write_text("LEVEL=service-file\nOWN=service-file\n")
    config = conf / "corral.toml"
    config.write_text(f"""
env_file = "common.env"

[services.web]
command = ["{helper}", "env", "SHARED", "env", "LEVEL", "env", "OWN", "pause"]
env_file = ["web.env"]
env = {{ OWN = "explicit" }}
ready = {{ log = "env OWN" }}
""")
    monkeypatch.chdir(tmp_path)  # relative env_file paths are next to the file, not here
    stack = corral.Stack.load(config)
    with stack:
        stack["web"].wait_for_log("env OWN=", timeout=30)
        lines = stack["web"].logs()
    assert "env SHARED=stack" in lines
    assert "env LEVEL=service-file" in lines
    assert "env OWN=explicit" in lines


def test_add_takes_env_file_too(tmp_path, helper):
    path = write(tmp_path / "vars.env", "TOKEN=abc123\n")
    stack = corral.Stack()
    stack.add("t", [helper, "env", "TOKEN", "pause"], env_file=path, ready=corral.LogCheck("env TOKEN"))
    with stack:
        assert stack["t"].logs() == ["env TOKEN=abc123"]


def test_a_missing_env_file_in_a_config_names_service_and_file(tmp_path, helper):
    config = tmp_path / "corral.toml"
    config.write_text(f"""
[services.web]
command = ["{helper}", "pause"]
env_file = "missing.env"
""")
    with pytest.raises(corral.ConfigError) as err:
        corral.Stack.load(config)
    text = str(err.value)
    assert "corral.toml" in text and "service 'web'" in text and "missing.env" in text
