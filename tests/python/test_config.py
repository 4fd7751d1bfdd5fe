"""The spec layer: checks, restart policies, service options and config files.

No engine is involved: every test here validates input and inspects the normalised specs,
so they run in milliseconds and pin down the exact error messages users see.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
from pathlib import Path

import pytest

from corral.checks import Check, ExecCheck, HttpCheck, LogCheck, NotifyCheck, TcpCheck
from corral.errors import ConfigError, CorralError, StackClosed, StartError, Timeout
from corral.restart import Restart
from corral.spec import (
    ServiceSpec,
    StackConfig,
    check_from_mapping,
    load_file,
    make_service,
    parse_config,
    restart_from_value,
)

PRODUCT_TOML = """\
[services.db]
command = ["redis-server", "--port", "{{port.main}}"]
ports = ["main"]
ready = { tcp = "main" }
restart = "on-failure"

[services.api]
command = "python -m http.server {{port.http}}"
ports = ["http"]
depends_on = { db = "ready" }
ready = { http = "/", port = "http" }
env = { REDIS_URL = "redis://127.0.0.1:{{db.port.main}}", MODE = "${MODE:-dev}" }
"""

PRODUCT_YAML = """\
services:
  db:
    command: ["redis-server", "--port", "{{port.main}}"]
    ports: [main]
    ready: {tcp: main}
    restart: on-failure
  api:
    command: "python -m http.server {{port.http}}"
    ports: [http]
    depends_on: {db: ready}
    ready: {http: /, port: http}
    env:
      REDIS_URL: "redis://127.0.0.1:{{db.port.main}}"
      MODE: "${MODE:-dev}"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


def service(table: dict, name: str = "api", **top) -> dict:
    """A config dict with one service (and `db` to depend on)."""
    return {**top, "services": {"db": {"command": ["db"]}, name: table}}


# -- the errors ------------------------------------------------------------------------


def test_error_tree():
    assert issubclass(ConfigError, CorralError) and issubclass(ConfigError, ValueError)
    assert issubclass(Timeout, CorralError) and issubclass(Timeout, TimeoutError)
    assert issubclass(StartError, CorralError) and issubclass(StackClosed, CorralError)


def test_config_error_message_names_file_service_key():
    err = ConfigError("expected a list of names, got 5", file="corral.toml", service="api",
                      key="ports")
    assert str(err) == "corral.toml: service 'api': key 'ports': expected a list of names, got 5"
    assert (err.file, err.service, err.key, err.reason) == (
        "corral.toml", "api", "ports", "expected a list of names, got 5")
    assert str(ConfigError("plain")) == "plain"
    # A message that already names its place is not prefixed twice.
    assert str(ConfigError("service 'a' is already defined", service="a")) == (
        "service 'a' is already defined")


def test_errors_survive_pickling():
    err = ConfigError("bad", file="f.toml", service="s", key="k", line=3, column=4)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is ConfigError and str(copy) == str(err)
    assert (copy.file, copy.service, copy.key, copy.line, copy.column) == ("f.toml", "s", "k", 3, 4)
    start = pickle.loads(pickle.dumps(StartError("db", "exited with 1", ["a"])))
    assert (start.service, start.reason, start.log_tail) == ("db", "exited with 1", ["a"])


def test_start_error_message_ends_with_log_tail():
    err = StartError("db", "readiness deadline passed", ["line 1\n", "line 2"])
    assert str(err) == (
        "service 'db' failed to start: readiness deadline passed\n"
        "--- last log lines of db ---\nline 1\nline 2"
    )
    assert err.log_tail == ["line 1", "line 2"]
    assert str(StartError("db", "spawn failed")) == "service 'db' failed to start: spawn failed"


# -- checks ----------------------------------------------------------------------------


def test_check_classes_and_defaults():
    check = TcpCheck("main")
    assert (check.port, check.interval, check.timeout, check.start_timeout, check.retries) == (
        "main", 0.1, 1.0, 60.0, 3)
    assert TcpCheck(5432).port == 5432 and TcpCheck("5432").port == 5432
    assert HttpCheck().path == "/" and HttpCheck().port is None and HttpCheck().status is None
    assert HttpCheck("/health", port="http", status=204).status == 204
    assert LogCheck(r"ready \d+").regex == r"ready \d+"
    assert ExecCheck(["pg_isready", "-p", 5432]).command == ("pg_isready", "-p", "5432")
    assert ExecCheck("true && true").command == "true && true"
    assert NotifyCheck(start_timeout=5).start_timeout == 5.0
    assert TcpCheck("main", interval=1).interval == 1.0
    assert isinstance(TcpCheck("main").interval, float)
    assert repr(TcpCheck("main", timeout=2)) == "TcpCheck(port='main', timeout=2.0)"
    assert hash(ExecCheck(["a"])) == hash(ExecCheck(("a",)))
    with pytest.raises(TypeError):
        Check()
    with pytest.raises(AttributeError):
        TcpCheck("main").port = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("make", "key", "text"),
    [
        (lambda: TcpCheck(0), "port", "1..65535"),
        (lambda: TcpCheck(70000), "port", "1..65535"),
        (lambda: TcpCheck(""), "port", "port name"),
        (lambda: TcpCheck(True), "port", "port name"),
        (lambda: TcpCheck("main", interval=0), "interval", "> 0"),
        (lambda: TcpCheck("main", timeout=-1), "timeout", "> 0"),
        (lambda: TcpCheck("main", start_timeout=float("nan")), "start_timeout", "expected a number"),
        (lambda: TcpCheck("main", interval="1"), "interval", "expected a number"),
        (lambda: TcpCheck("main", retries=0), "retries", ">= 1"),
        (lambda: TcpCheck("main", retries=1.5), "retries", "whole number"),
        (lambda: HttpCheck("health"), "path", "starting with '/'"),
        (lambda: HttpCheck("/", status=99), "status", "100..599"),
        (lambda: LogCheck("("), "regex", "invalid regular expression"),
        (lambda: LogCheck(""), "regex", "non-empty"),
        (lambda: ExecCheck([]), "command", "non-empty"),
        (lambda: ExecCheck(["a", None]), "command", "strings"),
        (lambda: ExecCheck("  "), "command", "non-empty"),
    ],
)
def test_bad_check_values(make, key, text):
    err = config_error(make)
    assert err.key == key
    assert f"key '{key}'" in str(err) and text in str(err)


def test_check_file_forms():
    assert check_from_mapping({"tcp": "main"}) == TcpCheck("main")
    assert check_from_mapping({"http": "/p", "port": "http", "status": 200}) == HttpCheck(
        "/p", port="http", status=200)
    assert check_from_mapping({"log": "listening on"}) == LogCheck("listening on")
    assert check_from_mapping({"exec": ["cmd", "arg"]}) == ExecCheck(["cmd", "arg"])
    assert check_from_mapping({"exec": "cmd arg | grep x"}) == ExecCheck("cmd arg | grep x")
    assert check_from_mapping({"notify": True}) == NotifyCheck()
    full = check_from_mapping(
        {"tcp": 80, "interval": 0.5, "timeout": 2, "start_timeout": 30, "retries": 5})
    assert full == TcpCheck(80, interval=0.5, timeout=2.0, start_timeout=30.0, retries=5)


@pytest.mark.parametrize(
    ("data", "key", "text"),
    [
        ({"tcp": "main", "intervall": 1}, "ready.intervall", "did you mean 'interval'?"),
        ({"tpc": "main"}, "ready.tpc", "did you mean 'tcp'?"),
        ({"tcp": "main", "http": "/"}, "ready", "exactly one kind, got 'tcp' and 'http'"),
        ({"interval": 1}, "ready", "needs one of the keys tcp, http, log, exec, notify"),
        ({"tcp": "main", "status": 200}, "ready.status", "http checks only"),
        ({"notify": False}, "ready.notify", "expected true"),
        ({"tcp": "-x"}, "ready.tcp", "port name"),
        ({"http": "x"}, "ready.http", "starting with '/'"),
        ({"log": "[unclosed"}, "ready.log", "invalid regular expression"),
        ({"exec": []}, "ready.exec", "non-empty"),
        ({"tcp": "main", "timeout": "1s"}, "ready.timeout", "expected a number"),
    ],
)
def test_bad_check_tables(data, key, text):
    err = config_error(check_from_mapping, data, file="c.toml", service="api", key="ready")
    assert (err.file, err.service, err.key) == ("c.toml", "api", key)
    assert str(err).startswith(f"c.toml: service 'api': key '{key}': ")
    assert text in str(err)


def test_check_table_errors_through_make_service():
    err = config_error(make_service, "api", "x", ports=["main"], ready={"tcp": "mian"},
                       _file="c.toml")
    assert (err.file, err.service, err.key) == ("c.toml", "api", "ready")
    assert "the check's port 'mian' is not a port of the service (its ports are main)" in str(err)


# -- restart ---------------------------------------------------------------------------


def test_restart_forms():
    assert Restart() == Restart("no")
    assert Restart("always", backoff=0).backoff == 0.0
    assert restart_from_value("on-failure") == Restart("on-failure")
    assert restart_from_value(Restart("always")) == Restart("always")
    assert restart_from_value(None) == Restart() == restart_from_value(False)
    table = {"policy": "always", "backoff": 0.5, "max_backoff": 30, "max_restarts": 5,
             "reset_after": 60, "jitter": 0}
    assert restart_from_value(table) == Restart(
        "always", backoff=0.5, max_backoff=30.0, max_restarts=5, reset_after=60.0, jitter=0.0)
    with pytest.raises(TypeError):
        Restart("always", 1.0)  # type: ignore[misc]  # the knobs are keyword-only


@pytest.mark.parametrize(
    ("value", "key", "text"),
    [
        ("sometimes", "restart", "expected one of 'no', 'on-failure', 'always'"),
        ("on_failure", "restart", "did you mean 'on-failure'?"),
        (True, "restart", "expected 'no', 'on-failure', 'always'"),
        ({"backoff": 1}, "restart.policy", "needs a policy"),
        ({"policy": "always", "backof": 1}, "restart.backof", "did you mean 'backoff'?"),
        ({"policy": "always", "backoff": -1}, "restart.backoff", ">= 0"),
        ({"policy": "always", "backoff": 5, "max_backoff": 1}, "restart.max_backoff",
         ">= backoff"),
        ({"policy": "always", "max_restarts": -1}, "restart.max_restarts", ">= 0"),
        ({"policy": "always", "jitter": 1}, "restart.jitter", "[0, 1)"),
    ],
)
def test_bad_restart_values(value, key, text):
    err = config_error(make_service, "api", "x", restart=value)
    assert (err.service, err.key) == ("api", key)
    assert f"service 'api': key '{key}': " in str(err) and text in str(err)


# -- make_service (the Python API) -----------------------------------------------------


def test_make_service_normalises():
    spec = make_service(
        "api", ["python", Path("/x/app.py"), "--port", 80],
        ports=("http", "admin"),
        env={"A": "1", "N": 5, "F": 1.5, "B": True, "C": False},
        cwd=Path("/srv"),
        depends_on=["db", "cache"],
        ready={"http": "/health", "port": "admin"},
        health=HttpCheck(port="http"),
        restart="always",
        stop_signal="INT",
        stop_timeout=3,
    )
    assert spec == ServiceSpec(
        name="api",
        command=["python", "/x/app.py", "--port", "80"],
        ports=["http", "admin"],
        env={"A": "1", "N": "5", "F": "1.5", "B": "true", "C": "false"},
        cwd="/srv",
        depends_on={"db": "ready", "cache": "ready"},
        ready=HttpCheck("/health", port="admin"),
        health=HttpCheck("/", port="http"),
        restart=Restart("always"),
        stop_signal=int(signal.SIGINT),
        stop_timeout=3.0,
    )
    assert isinstance(spec.stop_timeout, float)


def test_make_service_defaults():
    spec = make_service("a.b-c_1", "sleep 1")
    assert spec == ServiceSpec(name="a.b-c_1", command="sleep 1")
    assert (spec.ports, spec.env, spec.cwd, spec.depends_on) == ([], {}, None, {})
    assert (spec.ready, spec.health, spec.restart) == (None, None, Restart("no"))
    assert (spec.stop_signal, spec.stop_timeout, spec.replicas, spec.log_lines) == (
        signal.SIGTERM, 10.0, 1, 10000)


def test_dependency_conditions():
    spec = make_service("api", "x", depends_on={"a": "started", "b": "ready", "c": "healthy",
                                                "d": "completed"})
    assert spec.depends_on == {"a": "started", "b": "ready", "c": "ready", "d": "completed"}


@pytest.mark.parametrize("sig", [signal.SIGINT, 2, "INT", "SIGINT", "sigint", " int "])
def test_stop_signal_spellings(sig):
    assert make_service("a", "x", stop_signal=sig).stop_signal == signal.SIGINT


def test_http_check_takes_the_only_port():
    assert make_service("a", "x", ports=["web"], ready=HttpCheck("/h")).ready == HttpCheck(
        "/h", port="web")
    err = config_error(make_service, "a", "x", ports=["a", "b"], ready=HttpCheck())
    assert err.key == "ready" and "needs a port" in str(err) and "several ports (a, b)" in str(err)
    err = config_error(make_service, "a", "x", health={"http": "/"})
    assert err.key == "health" and "has no ports" in str(err)


@pytest.mark.parametrize(
    ("options", "key", "text"),
    [
        ({"ports": 5}, "ports", "expected a list of names, got 5"),
        ({"ports": "main"}, "ports", "expected a list of names, got 'main'"),
        ({"ports": ["1st"]}, "ports", "invalid port name '1st'"),
        ({"ports": ["http", "http"]}, "ports", "port 'http' listed twice"),
        ({"ports": ["http", "HTTP"]}, "ports", "clashes with 'http'"),
        ({"env": ["A=1"]}, "env", "expected a table of variables"),
        ({"env": {"A": None}}, "env.A", "expected a string, number or boolean"),
        ({"env": {"A": [1]}}, "env.A", "expected a string, number or boolean"),
        ({"env": {"A=B": "1"}}, "env", "invalid variable name"),
        ({"cwd": ""}, "cwd", "expected a directory path"),
        ({"cwd": 5}, "cwd", "expected a directory path"),
        ({"stop_timeout": -1}, "stop_timeout", "expected a number >= 0, got -1"),
        ({"stop_timeout": "10"}, "stop_timeout", "expected a number"),
        ({"replicas": 0}, "replicas", ">= 1, got 0"),
        ({"replicas": 2.0}, "replicas", "whole number"),
        ({"log_lines": 0}, "log_lines", ">= 1"),
        ({"stop_signal": "SIGNOPE"}, "stop_signal", "unknown signal 'SIGNOPE'"),
        ({"stop_signal": "TREM"}, "stop_signal", "did you mean 'SIGTERM'?"),
        ({"stop_signal": 0}, "stop_signal", "not a valid signal number"),
        ({"stop_signal": 1.5}, "stop_signal", "signal name or number"),
        ({"depends_on": {"db": "finished"}}, "depends_on.db", "unknown condition 'finished'"),
        ({"depends_on": {"db": "compelted"}}, "depends_on.db", "did you mean 'completed'?"),
        ({"depends_on": "db"}, "depends_on", "expected a list of service names"),
        ({"depends_on": ["api"]}, "depends_on", "cannot depend on itself"),
        ({"depends_on": ["db", "db"]}, "depends_on", "'db' is listed twice"),
        ({"depends_on": [5]}, "depends_on", "expected service names"),
        ({"ready": TcpCheck("main")}, "ready", "port 'main' is not a port of the service"),
        ({"ready": 5}, "ready", "expected a check"),
        ({"health": {"log": "("}}, "health.log", "invalid regular expression"),
    ],
)
def test_bad_service_options(options, key, text):
    err = config_error(make_service, "api", ["x"], _file="corral.toml", **options)
    assert (err.file, err.service, err.key) == ("corral.toml", "api", key)
    assert str(err).startswith(f"corral.toml: service 'api': key '{key}': ")
    assert text in str(err)


@pytest.mark.parametrize(
    ("command", "text"),
    [
        ([], "non-empty"),
        ("", "non-empty"),
        (None, "expected a command"),
        (["ok", True], "strings"),
        (["", "x"], "cannot be empty"),
        (["a\0b"], "NUL"),
    ],
)
def test_bad_commands(command, text):
    err = config_error(make_service, "api", command)
    assert err.key == "command" and text in str(err)


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a/b", "a{b}", 5])
def test_bad_service_names(name):
    err = config_error(make_service, name, "x")
    assert "invalid service name" in str(err)


# -- config files ----------------------------------------------------------------------


def test_product_example_toml_equals_yaml(tmp_path):
    toml = load_file(write(tmp_path, "corral.toml", PRODUCT_TOML), environ={})
    yaml = load_file(write(tmp_path, "corral.yaml", PRODUCT_YAML), environ={})
    assert toml.services == yaml.services
    assert toml.name is None and toml.file == str(tmp_path / "corral.toml")
    db, api = toml.services
    assert db == make_service("db", ["redis-server", "--port", "{{port.main}}"],
                              ports=["main"], ready=TcpCheck("main"), restart="on-failure")
    assert api == make_service(
        "api", "python -m http.server {{port.http}}", ports=["http"],
        depends_on={"db": "ready"}, ready=HttpCheck("/", port="http"),
        env={"REDIS_URL": "redis://127.0.0.1:{{db.port.main}}", "MODE": "dev"})
    assert load_file(write(tmp_path, "c.yml", PRODUCT_YAML), environ={}).services == toml.services


def test_stack_name_and_file_order(tmp_path):
    path = write(tmp_path, "c.toml",
                 'name = "dev"\n[services.z]\ncommand = "z"\n[services.a]\ncommand = "a"\n')
    config = load_file(path)
    assert isinstance(config, StackConfig) and config.name == "dev"
    assert [s.name for s in config.services] == ["z", "a"]
    assert load_file(str(path)).services == config.services


def test_parse_config_from_a_dict():
    config = parse_config({"services": {"a": {"command": ["a"], "depends_on": ["b"]},
                                        "b": {"command": "b", "ready": {"notify": True}}}})
    assert config.file is None
    assert config.services[0].depends_on == {"b": "ready"}
    assert config.services[1].ready == NotifyCheck()


def test_every_option_in_a_file(tmp_path):
    path = write(tmp_path, "c.toml", """\
[services.db]
command = ["db", 1]
[services.api]
command = ["api"]
ports = ["http"]
env = { N = 1, B = true }
cwd = "/srv"
depends_on = ["db"]
ready = { http = "/ready", status = 204, interval = 0.5, start_timeout = 30 }
health = { exec = "curl -f localhost", retries = 5 }
restart = { policy = "always", backoff = 0, max_restarts = 5 }
stop_signal = "SIGINT"
stop_timeout = 2.5
replicas = 3
log_lines = 100
""")
    api = load_file(path).services[1]
    assert api == ServiceSpec(
        name="api", command=["api"], ports=["http"], env={"N": "1", "B": "true"}, cwd="/srv",
        depends_on={"db": "ready"},
        ready=HttpCheck("/ready", port="http", status=204, interval=0.5, start_timeout=30),
        health=ExecCheck("curl -f localhost", retries=5),
        restart=Restart("always", backoff=0, max_restarts=5),
        stop_signal=int(signal.SIGINT), stop_timeout=2.5, replicas=3, log_lines=100)


def test_relative_cwd_is_relative_to_the_file(tmp_path):
    path = write(tmp_path, "c.yaml", """\
services:
  a: {command: a, cwd: web}
  b: {command: b, cwd: /abs}
  c: {command: c, cwd: "{{tmpdir}}"}
""")
    a, b, c = load_file(path).services
    assert a.cwd == os.path.join(str(tmp_path), "web")
    assert (b.cwd, c.cwd) == ("/abs", "{{tmpdir}}")


def test_yaml_specifics(tmp_path):
    # An unquoted `no` is False in YAML; anchors and merge keys work; x- keys are ignored.
    path = write(tmp_path, "c.yaml", """\
x-common: &common
  restart: no
  stop_timeout: 1
services:
  a:
    <<: *common
    command: a
  b:
    <<: *common
    command: b
    stop_timeout: 2
""")
    a, b = load_file(path).services
    assert (a.restart, a.stop_timeout, b.stop_timeout) == (Restart("no"), 1.0, 2.0)


# -- ${VAR} expansion ------------------------------------------------------------------


def test_variable_expansion(tmp_path):
    path = write(tmp_path, "c.toml", """\
name = "${STACK}"
[services.a]
command = ["run", "${HOST}:${PORT:-80}", "$${HOME}", "$$", "cost $5", "{{port.p}}", "${E:-e}"]
ports = ["p"]
cwd = "${DIR:-/tmp}"
env = { X = "${HOST}", "${KEY}" = "v" }
ready = { log = "listening on ${HOST}" }
""")
    environ = {"STACK": "dev", "HOST": "localhost", "E": "", "DIR": "/srv"}
    config = load_file(path, environ=environ)
    assert config.name == "dev"
    (a,) = config.services
    assert a.command == ["run", "localhost:80", "${HOME}", "$", "cost $5", "{{port.p}}", "e"]
    assert a.cwd == "/srv"
    assert a.env == {"X": "localhost", "${KEY}": "v"}  # keys are not expanded
    assert a.ready == LogCheck("listening on localhost")


def test_expansion_uses_os_environ_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_TEST_VALUE", "from-env")
    path = write(tmp_path, "c.yaml", "services:\n  a:\n    command: echo ${CORRAL_TEST_VALUE}\n")
    assert load_file(path).services[0].command == "echo from-env"
    data = {"services": {"a": {"command": "${CORRAL_TEST_VALUE}"}}}
    assert parse_config(data).services[0].command == "from-env"
    assert parse_config(data, environ={"CORRAL_TEST_VALUE": "x"}).services[0].command == "x"


@pytest.mark.parametrize(
    ("value", "key", "text"),
    [
        ('env = { MODE = "${MODE}" }', "env.MODE", "environment variable 'MODE' is not set"),
        ('command = ["a", "${NOPE}"]', "command", "environment variable 'NOPE' is not set"),
        ('ready = { log = "${NOPE}" }', "ready.log", "'NOPE' is not set"),
        ('cwd = "${1X}"', "cwd", "invalid variable reference '${1X}'"),
        ('cwd = "${X"', "cwd", "unterminated '${'"),
    ],
)
def test_bad_variables(tmp_path, value, key, text):
    command = "" if value.startswith("command") else 'command = "x"\n'
    path = write(tmp_path, "c.toml", f"[services.api]\n{command}{value}\n")
    err = config_error(load_file, path, environ={})
    assert (err.file, err.service, err.key) == (str(path), "api", key)
    assert str(err).startswith(f"{path}: service 'api': key '{key}': ") and text in str(err)


def test_unset_variable_at_the_top_level(tmp_path):
    path = write(tmp_path, "c.toml", 'name = "${NAME}"\n[services.a]\ncommand = "x"\n')
    err = config_error(load_file, path, environ={})
    assert err.service is None and err.key == "name"
    assert str(err) == f"{path}: key 'name': environment variable 'NAME' is not set " \
                       "(write ${NAME:-default} to give a default)"


# -- file errors -----------------------------------------------------------------------


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "c.toml", '[servics.a]\ncommand = "x"\n')
    err = config_error(load_file, path)
    assert (err.file, err.service, err.key) == (str(path), None, "servics")
    assert str(err) == f"{path}: key 'servics': unknown key (did you mean 'services'?)"


def test_unknown_service_key_suggests_the_closest(tmp_path):
    path = write(tmp_path, "c.yaml", "services:\n  api:\n    command: x\n    depend_on: [db]\n")
    err = config_error(load_file, path)
    assert (err.file, err.service, err.key) == (str(path), "api", "depend_on")
    assert str(err) == (
        f"{path}: service 'api': key 'depend_on': unknown key (did you mean 'depends_on'?)")


def test_unknown_check_key_in_a_file(tmp_path):
    path = write(tmp_path, "c.toml", '[services.api]\ncommand = "x"\nports = ["p"]\n'
                                     'ready = { tcp = "p", tiemout = 1 }\n')
    err = config_error(load_file, path)
    assert (err.service, err.key) == ("api", "ready.tiemout")
    assert "did you mean 'timeout'?" in str(err) and str(path) in str(err)


def test_two_check_kinds_in_a_file(tmp_path):
    path = write(tmp_path, "c.toml",
                 '[services.api]\ncommand = "x"\nready = { log = "a", exec = "b" }\n')
    err = config_error(load_file, path)
    assert (err.service, err.key) == ("api", "ready")
    assert "exactly one kind, got 'log' and 'exec'" in str(err)


@pytest.mark.parametrize(
    ("table", "key", "text"),
    [
        ('ports = 5', "ports", "expected a list of names, got 5"),
        ('env = "A=1"', "env", "expected a table of variables"),
        ('stop_timeout = -1', "stop_timeout", ">= 0"),
        ('replicas = 0', "replicas", ">= 1"),
        ('stop_signal = "SIGFOO"', "stop_signal", "unknown signal 'SIGFOO'"),
        ('depends_on = { db = "finished" }', "depends_on.db", "unknown condition 'finished'"),
        ('depends_on = ["dbb"]', "depends_on", "unknown service 'dbb' (did you mean 'db'?)"),
        ('depends_on = ["api"]', "depends_on", "cannot depend on itself"),
        ('restart = "sometimes"', "restart", "expected one of"),
        ('restart = { policy = "always", max_backof = 1 }', "restart.max_backof",
         "did you mean 'max_backoff'?"),
    ],
)
def test_bad_values_in_a_file(tmp_path, table, key, text):
    path = write(tmp_path, "corral.toml",
                 f'[services.db]\ncommand = "db"\n[services.api]\ncommand = "x"\n{table}\n')
    err = config_error(load_file, path)
    assert (err.file, err.service, err.key) == (str(path), "api", key)
    assert str(err).startswith(f"{path}: service 'api': key '{key}': ") and text in str(err)


@pytest.mark.parametrize(
    ("data", "key", "service", "text"),
    [
        (None, None, None, "the file is empty"),
        ([1], None, None, "expected a table with a 'services' table"),
        ({"name": "dev"}, "services", None, "needs a 'services' table"),
        ({"services": {}}, "services", None, "at least one service"),
        ({"services": ["a"]}, "services", None, "expected a table of services"),
        ({"services": {"a": "run"}}, None, "a", "expected a table of options"),
        ({"services": {"a": {"ports": []}}}, "command", "a", "needs a command"),
        ({"services": {"-a": {"command": "x"}}}, None, "-a", "invalid service name"),
        ({"name": 5, "services": {"a": {"command": "x"}}}, "name", None, "invalid stack name"),
    ],
)
def test_bad_config_shapes(data, key, service, text):
    err = config_error(parse_config, data, file="c.yaml")
    assert (err.file, err.service, err.key) == ("c.yaml", service, key)
    assert str(err).startswith("c.yaml: ") and text in str(err)


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "corral.toml", '[services.a]\ncommand = "x"\nports = [\n"a" "b"]\n')
    err = config_error(load_file, path)
    assert (err.file, err.line) == (str(path), 4)
    assert re.match(rf"{re.escape(str(path))}, line 4, column \d+: invalid TOML: ", str(err))


def test_toml_duplicate_key_is_a_syntax_error(tmp_path):
    path = write(tmp_path, "c.toml", '[services.a]\ncommand = "x"\ncommand = "y"\n')
    err = config_error(load_file, path)
    assert err.line == 3 and "invalid TOML" in str(err)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "corral.yaml", "services:\n  a:\n    command: [x, y\n  b: 1\n")
    err = config_error(load_file, path)
    assert err.file == str(path) and err.line == 4 and err.column is not None
    assert str(err).startswith(f"{path}, line 4, column ") and "invalid YAML" in str(err)


def test_yaml_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "c.yaml", "services:\n  a:\n    command: x\n  a:\n    command: y\n")
    err = config_error(load_file, path)
    assert err.line == 4 and "found duplicate key 'a'" in str(err)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    err = config_error(load_file, path)
    assert err.file == str(path) and str(err) == f"{path}: no such file"


def test_directory_instead_of_a_file(tmp_path):
    (tmp_path / "d.yaml").mkdir()
    err = config_error(load_file, tmp_path / "d.yaml")
    assert "is a directory" in str(err)


@pytest.mark.parametrize("name", ["corral.json", "corral", "corral.ini"])
def test_wrong_extension(tmp_path, name):
    path = write(tmp_path, name, "{}")
    err = config_error(load_file, path)
    assert err.file == str(path)
    assert "unsupported file type" in str(err) and ".toml, .yaml or .yml" in str(err)


def test_not_utf8(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'name = "\xff"\n')
    err = config_error(load_file, path)
    assert err.file == str(path) and "not UTF-8" in str(err)


def test_log_check_regex_is_judged_in_the_engines_dialect():
    import corral

    with pytest.raises(corral.ConfigError, match="ECMAScript"):
        corral.LogCheck("(?P<port>[0-9]+)")  # Python-only named group
    assert corral.LogCheck(r"listening on \d+").regex == r"listening on \d+"
