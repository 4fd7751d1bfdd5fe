"""Hostile input: every bad spec, file or argument gives a ConfigError that names where it
is, never a traceback from deeper down (OverflowError, RecursionError, UnicodeEncodeError,
a TypeError from the binding), never a hang, and never starts anything.

Most tests only validate; the few at the end run real processes to show that "forever"
durations reach the engine in a form it cannot overflow.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import corral
from conftest import python_script, wait_until
from corral.errors import ConfigError
from corral.spec import SERVICE_KEYS, parse_config

# The documented bounds (docs/config-reference.md).
MAX_SECONDS = 1e9
MAX_REPLICAS = 10_000


def config_error(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


def add_and_validate(**options) -> corral.Stack:
    """Adds service 'a' with `options` and runs the engine's own validation, so that a value
    the binding cannot convert shows up here too."""
    stack = corral.Stack("hostile")
    stack.add("a", ["true"], **options)
    stack._validate()
    return stack


def write(tmp_path: Path, name: str | bytes, data: str | bytes) -> Path | bytes:
    if isinstance(name, bytes):
        path: Path | bytes = os.path.join(os.fsencode(tmp_path), name)
    else:
        path = tmp_path / name
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


# -- wrong types and out-of-range numbers in Stack.add ---------------------------------


@pytest.mark.parametrize(
    ("options", "key", "text"),
    [
        ({"ports": 5}, "ports", "list of names"),
        ({"env": {"A": [1]}}, "env.A", "string, number or boolean"),
        ({"env": {1: "x"}}, "env", "invalid variable name 1"),
        ({"depends_on": 3}, "depends_on", "list of service names"),
        ({"ready": "tcp"}, "ready", "expected a check"),
        ({"health": 5}, "health", "expected a check"),
        ({"stop_timeout": "x"}, "stop_timeout", "expected a number"),
        ({"restart": 5}, "restart", "'no', 'on-failure', 'always'"),
        ({"cwd": b"/tmp"}, "cwd", "directory path"),
        ({"stop_signal": [15]}, "stop_signal", "signal name or number"),
        # Integers the engine stores in a C int (or size_t): refused before the binding.
        ({"log_lines": 2**31}, "log_lines", "<= 2,147,483,647"),
        ({"log_lines": 2**64}, "log_lines", "<= 2,147,483,647"),
        ({"replicas": 2**63}, "replicas", f"<= {MAX_REPLICAS:,}"),
        ({"replicas": 10**8}, "replicas", f"<= {MAX_REPLICAS:,}"),
        ({"stop_signal": 2**64}, "stop_signal", "not a valid signal number"),
        ({"restart": corral.Restart}, "restart", "expected 'no'"),
        ({"restart": {"policy": "always", "max_restarts": 2**31}}, "restart.max_restarts",
         "<= 2,147,483,647"),
        ({"ready": {"notify": True, "retries": 2**40}}, "ready.retries", "<= 2,147,483,647"),
        ({"ready": {"tcp": 2**64}}, "ready.tcp", "1..65535"),
        ({"ready": {"tcp": "9" * 5000}}, "ready.tcp", "port number or a port name"),
        ({"ready": {"http": "/", "port": 70000}}, "ready.port", "1..65535"),
        ({"ready": {"http": "/", "status": 2**70}}, "ready.status", "100..599"),
        # Durations: NaN and negative values are refused.
        ({"stop_timeout": math.nan}, "stop_timeout", "expected a number"),
        ({"stop_timeout": -1}, "stop_timeout", ">= 0"),
        ({"stop_timeout": -(10**400)}, "stop_timeout", ">= 0"),
        ({"ready": {"notify": True, "interval": math.nan}}, "ready.interval", "expected a number"),
        ({"restart": {"policy": "always", "backoff": -math.inf}}, "restart.backoff", ">= 0"),
        # Lone surrogates (from a non-UTF-8 file name or a \\ud800 escape) cannot be encoded
        # for the engine.
        ({"env": {"A": "\ud800"}}, "env.A", "UTF-8"),
        ({"env": {"\udcff": "x"}}, "env", "UTF-8"),
        ({"cwd": "/tmp/\udcff"}, "cwd", "UTF-8"),
        ({"ready": {"log": "x\ud800"}}, "ready.log", "UTF-8"),
        ({"ready": {"http": "/\udc80", "port": 80}}, "ready.http", "UTF-8"),
        ({"ready": {"exec": ["x", "\udc80"]}}, "ready.exec", "UTF-8"),
    ],
)
def test_bad_options_name_service_and_key(options, key, text):
    err = config_error(add_and_validate, **options)
    assert isinstance(err, ValueError)
    assert (err.service, err.key) == ("a", key), str(err)
    assert text in str(err)
    str(err).encode("utf-8")  # printable, even when the value held a surrogate


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (["x", 10**5000], "number too large"),
        (["x", "\udc80"], "UTF-8"),
        ("echo \ud800", "UTF-8"),
        ([["nested"]], "strings"),
        (5, "expected a command"),
    ],
)
def test_bad_commands(command, text):
    err = config_error(corral.Stack().add, "a", command)
    assert (err.service, err.key) == ("a", "command") and text in str(err)


def test_check_and_restart_constructors_give_config_errors():
    for make, key in [
        (lambda: corral.TcpCheck([]), "port"),
        (lambda: corral.TcpCheck(2**64), "port"),
        (lambda: corral.HttpCheck(5), "path"),
        (lambda: corral.HttpCheck("/", status="200"), "status"),
        (lambda: corral.LogCheck(5), "regex"),
        (lambda: corral.ExecCheck(5), "command"),
        (lambda: corral.NotifyCheck(interval="1"), "interval"),
        (lambda: corral.NotifyCheck(timeout=math.nan), "timeout"),
        (lambda: corral.NotifyCheck(retries=2**31), "retries"),
        (lambda: corral.Restart(5), "policy"),
        (lambda: corral.Restart("always", max_restarts=2**64), "max_restarts"),
        (lambda: corral.Restart("always", jitter=math.inf), "jitter"),
    ]:
        err = config_error(make)
        assert err.key == key, str(err)


def test_forever_durations_are_clamped_not_refused():
    stack = add_and_validate(
        stop_timeout=math.inf,
        ready=corral.NotifyCheck(start_timeout=10**400, timeout=1e300),
        restart=corral.Restart("always", backoff=1e12, max_backoff=math.inf, reset_after=2**2000),
    )
    spec = stack["a"].spec
    assert spec.stop_timeout == MAX_SECONDS
    assert (spec.ready.start_timeout, spec.ready.timeout) == (MAX_SECONDS, MAX_SECONDS)
    r = spec.restart
    assert (r.backoff, r.max_backoff, r.reset_after) == (MAX_SECONDS,) * 3
    assert add_and_validate(stop_timeout=0)["a"].spec.stop_timeout == 0.0


# -- names -------------------------------------------------------------------------------


BAD_NAMES = ["", ".", "..", "../x", "a/b", "a\nb", "a\rb", "a\0b", "a\x1bb", 'a"b', "a'b", "a b",
             "a\\b", "-x", ".x", "x" * 65, "é", "a\udcff", 5, b"x", ["x"]]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_stack_names(name):
    err = config_error(corral.Stack, name)
    assert "invalid stack name" in str(err) and "64 letters" in str(err)
    str(err).encode("utf-8")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_service_names(name):
    err = config_error(corral.Stack("ok").add, name, ["true"])
    assert "invalid service name" in str(err)
    str(err).encode("utf-8")


def test_good_names():
    assert corral.Stack("a" * 64).name == "a" * 64
    assert corral.Stack(None).name is None
    stack = corral.Stack("x.y-z_1")
    stack.add("s" * 64, ["true"], replicas=3)
    stack._validate()  # the engine accepts the replicas' longer names too
    assert stack.services.keys() == {f"{'s' * 64}-{i}" for i in (1, 2, 3)}


def test_bad_stack_name_in_a_file(tmp_path):
    path = write(tmp_path, "c.toml", 'name = "../x"\n[services.a]\ncommand = "x"\n')
    err = config_error(corral.Stack.load, path)
    assert err.key == "name" and "invalid stack name '../x'" in str(err)


# -- files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("arrays.toml", "x = " + "[" * 10000 + "]" * 10000 + "\n"),
        ("tables.toml", "x = " + "{a = " * 10000 + "1" + "}" * 10000 + "\n"),
        ("flow.yaml", "x: " + "[" * 10000 + "]" * 10000 + "\n"),
        ("block.yaml", "".join("  " * i + f"k{i}:\n" for i in range(3000))),
    ],
)
def test_deep_nesting_in_a_file(tmp_path, name, text):
    path = write(tmp_path, name, text)
    err = config_error(corral.Stack.load, path)
    assert err.file == str(path) and "nested too deeply" in str(err)


def test_deep_nesting_from_python():
    deep: object = 1
    for _ in range(10000):
        deep = [deep]
    err = config_error(parse_config, {"services": {"a": {"command": "x", "env": {"A": deep}}}})
    assert (err.service, err.key) == ("a", "env") and "nested too deeply" in str(err)
    loop: dict[str, object] = {}
    loop["x"] = loop
    err = config_error(parse_config, {"services": {"a": {"command": "x", "env": loop}}})
    assert (err.service, err.key) == ("a", "env") and "nested too deeply" in str(err)
    # repr() of such a value would raise RecursionError: messages still get built.
    err = config_error(corral.Stack().add, "a", ["x"], ports=[deep])
    assert err.key == "ports"


BILLION_LAUGHS = "".join(
    f"{x}: &{x} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, x in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)


def test_billion_laughs_is_refused_quickly(tmp_path):
    assert len(BILLION_LAUGHS) < 450
    path = write(tmp_path, "laughs.yaml", BILLION_LAUGHS)
    err = config_error(corral.Stack.load, path)
    assert err.file == str(path) and "expands to more than 100,000 values" in str(err)
    assert err.line is not None
    # Also when the anchors hide under x- keys and the bomb goes off inside a service.
    hidden = "".join("x-" + line for line in BILLION_LAUGHS.splitlines(keepends=True))
    hidden += "services:\n  a:\n    command: x\n    env: {A: *i}\n"
    err = config_error(corral.Stack.load, write(tmp_path, "hidden.yaml", hidden))
    assert "expands to more than" in str(err)


def test_ordinary_yaml_anchors_still_work(tmp_path):
    text = ("x-common: &common\n  restart: always\n  env: {MODE: dev}\n"
            "services:\n  a:\n    <<: *common\n    command: a\n  b:\n    <<: *common\n    command: b\n")
    stack = corral.Stack.load(write(tmp_path, "c.yaml", text))
    assert [s.spec.restart.policy for s in stack] == ["always", "always"]


@pytest.mark.parametrize("text", ["x-a: &a [*a]\nservices: {a: {command: x}}\n",
                                  "services: &s\n  a:\n    command: x\n    env: *s\n"])
def test_recursive_yaml_alias(tmp_path, text):
    err = config_error(corral.Stack.load, write(tmp_path, "r.yaml", text))
    assert "an alias refers to a node that contains it" in str(err)


def test_file_content_that_is_not_utf8(tmp_path):
    path = write(tmp_path, "c.toml", b"[services.a]\ncommand = '\xe9'\n")
    err = config_error(corral.Stack.load, path)
    assert err.file == str(path) and "not UTF-8" in str(err)


def test_yaml_values_python_cannot_build(tmp_path):
    path = write(tmp_path, "t.yaml", "services:\n  a:\n    command: x\n    env: {A: 2001-13-45}\n")
    err = config_error(corral.Stack.load, path)
    assert "invalid YAML" in str(err)
    path = write(tmp_path, "s.yaml", 'services:\n  a:\n    command: "\\ud800"\n')
    err = config_error(corral.Stack.load, path)
    assert (err.service, err.key) == ("a", "command") and "UTF-8" in str(err)
    str(err).encode("utf-8")


def test_bytes_and_undecodable_file_paths(tmp_path):
    ok = write(tmp_path, b"\xff.toml", "[services.a]\ncommand = 'x'\n")
    assert isinstance(ok, bytes)
    stack = corral.Stack.load(ok)
    assert stack["a"].spec.cwd == str(tmp_path) and stack.file == os.fsdecode(ok)
    assert corral.Stack.load(os.fsdecode(ok))["a"].spec.cwd == str(tmp_path)
    # A missing file named by undecodable bytes: the message names it, printably.
    err = config_error(corral.Stack.load, os.path.join(os.fsencode(tmp_path), b"\xfe.toml"))
    assert "no such file" in str(err) and "\\udcfe.toml" in str(err)
    # A directory the engine cannot be given as the services' working directory.
    bad_dir = os.path.join(os.fsencode(tmp_path), b"d\xff")
    os.mkdir(bad_dir)
    path = write(Path(os.fsdecode(bad_dir)), "c.toml", "[services.a]\ncommand = 'x'\n")
    err = config_error(corral.Stack.load, path)
    assert "directory of a config file must be UTF-8" in str(err) and err.file == str(path)
    str(err).encode("utf-8")


@pytest.mark.parametrize(("path", "text"), [(5, "expected a file path"), ("a\0b.toml", "NUL"),
                                            (None, "expected a file path")])
def test_paths_that_are_not_paths(path, text):
    assert text in str(config_error(corral.Stack.load, path))


def test_big_numbers_in_a_file(tmp_path):
    text = "[services.a]\ncommand = 'x'\nstop_timeout = 99999999999999999999999999999\n"
    assert corral.Stack.load(write(tmp_path, "a.toml", text))["a"].spec.stop_timeout == MAX_SECONDS
    for key, value in [("log_lines", "99999999999999999999"), ("replicas", "100000000"),
                       ("stop_timeout", "nan"), ("stop_timeout", "-inf")]:
        path = write(tmp_path, "b.toml", f"[services.a]\ncommand = 'x'\n{key} = {value}\n")
        err = config_error(corral.Stack.load, path)
        assert (err.file, err.service, err.key) == (str(path), "a", key)


# -- hunting: random specs ---------------------------------------------------------------

_SPECIAL_TEXT = ["", ".", "..", "a/b", "x\n", "\udc80", "a\ud800", "\0", "{{port.main}}", "{{x.port.y}}",
                 "${X}", "${X", "$${X}", "9" * 30, "main", "/", "(", "a" * 200, "TERM", "always"]
_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([2**31, 2**63, 2**64, -(2**63), 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(_SPECIAL_TEXT),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(_SPECIAL_TEXT)),
                                            inner, max_size=4)),
    max_leaves=12,
)
_check_tables = st.fixed_dictionaries(
    {},
    optional={
        "tcp": st.one_of(st.just("main"), _values), "http": st.one_of(st.just("/"), _values),
        "log": st.one_of(st.just("ready"), _values), "exec": st.one_of(st.just(["true"]), _values),
        "notify": st.one_of(st.just(True), _values), "port": _values, "status": _values,
        "interval": _values, "timeout": _values, "start_timeout": _values, "retries": _values,
    },
)
_GOOD = {
    "command": st.sampled_from([["true"], "true", ["x", 1, 2.5]]),
    "ports": st.sampled_from([["main"], ["main", "other"], []]),
    "depends_on": st.sampled_from([["b"], {"b": "ready"}, {"b": "completed"}]),
    "ready": _check_tables, "health": _check_tables,
    "restart": st.one_of(st.sampled_from(["no", "always", "on-failure"]),
                         st.fixed_dictionaries({"policy": st.just("always")},
                                               optional={k: _values for k in
                                                         ("backoff", "max_backoff", "max_restarts",
                                                          "reset_after", "jitter")})),
    "replicas": st.integers(min_value=-2, max_value=3),
}
_service_tables = st.fixed_dictionaries(
    {"command": st.one_of(_GOOD["command"], _values)},
    optional={key: st.one_of(_GOOD[key], _values) if key in _GOOD else _values
              for key in SERVICE_KEYS if key != "command"},
)
_configs = st.fixed_dictionaries(
    {"services": st.one_of(
        st.fixed_dictionaries({"a": _service_tables, "b": _service_tables}),
        st.dictionaries(st.one_of(st.sampled_from(["a", "b"]), st.text(max_size=6), _scalars),
                        _service_tables, max_size=3),
        _values)},
    optional={"name": st.one_of(st.just("dev"), _values), "x-any": _values, "other": _values},
)
# A bounded run in the test command; CORRAL_HUNT_EXAMPLES=5000 for a longer hunt.
_HUNT = settings(max_examples=int(os.environ.get("CORRAL_HUNT_EXAMPLES", "100")), deadline=None,
                 derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                        HealthCheck.function_scoped_fixture])


def _only_config_errors(fn) -> None:
    """Runs `fn`; a ConfigError (with a printable message) or success are the only outcomes.
    A successful spec must also pass the engine's own validation."""
    try:
        stack = fn()
    except ConfigError as err:
        str(err).encode("utf-8")
        return
    try:
        stack._validate()
    except ConfigError as err:
        str(err).encode("utf-8")


def _children() -> set[int]:
    """The processes this test process has started and not reaped."""
    pid = os.getpid()
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out.update(int(p) for p in f.read().split())
    return out


@pytest.fixture
def nothing_started():
    before = _children()
    yield
    assert _children() <= before, "validation started a process"


@_HUNT
@given(config=_configs)
def test_random_config_dicts(nothing_started, config):
    def load() -> corral.Stack:
        stack = corral.Stack()
        for spec in parse_config(config, environ={"X": "1"}).services:
            stack._add_spec(spec)
        return stack

    _only_config_errors(load)


@_HUNT
@given(name=st.one_of(st.just("a"), _values), command=st.one_of(_GOOD["command"], _values),
       options=_service_tables)
def test_random_stack_add(nothing_started, name, command, options):
    options.pop("command")

    def add() -> corral.Stack:
        stack = corral.Stack("fuzz")
        stack.add("b", ["true"])
        stack.add(name, command, **options)
        return stack

    _only_config_errors(add)


_PRODUCT_YAML = """\
x-base: &base {restart: on-failure}
services:
  db: {<<: *base, command: [db, "{{port.main}}"], ports: [main], ready: {tcp: main}}
  api:
    command: "serve {{port.http}}"
    ports: [http]
    depends_on: {db: ready}
    ready: {http: /, port: http, start_timeout: 30}
    env: {MODE: "${X:-dev}"}
"""
_PRODUCT_TOML = """\
name = "dev"
[services.db]
command = ["db", "{{port.main}}"]
ports = ["main"]
ready = { tcp = "main" }
[services.api]
command = "serve {{port.http}}"
depends_on = { db = "ready" }
stop_timeout = 5
"""


@_HUNT
@given(data=st.data(), suffix=st.sampled_from([".toml", ".yaml"]))
def test_random_file_edits(nothing_started, tmp_path_factory, data, suffix):
    """The example files with random splices: parser errors and odd values alike."""
    text = _PRODUCT_TOML if suffix == ".toml" else _PRODUCT_YAML
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 8))
        insert = data.draw(st.one_of(st.text(max_size=6), st.sampled_from(
            ["[", "{", "]", "}", "*", "&", "&a", "*a", ":", "=", '"', "\\ud800", "\\x00", "\n  ", "-",
             "99999999999999999999999", "nan", "inf", "1e400", "!!binary", "!!set", "<<: *base"])))
        text = text[:at] + insert + text[at + cut:]
    path = tmp_path_factory.mktemp("fuzz") / f"corral{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _only_config_errors(lambda: corral.Stack.load(path, environ={}))


@_HUNT
@given(config=_configs)
def test_random_yaml_documents(nothing_started, tmp_path_factory, config):
    try:
        text = yaml.safe_dump(config, allow_unicode=True)
    except (yaml.YAMLError, UnicodeError, RecursionError, ValueError):
        return  # not every Python value has a YAML form
    path = tmp_path_factory.mktemp("fuzz") / "corral.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _only_config_errors(lambda: corral.Stack.load(path, environ={"X": "1"}))


# -- "forever" durations, end to end --------------------------------------------------------


TERM_AFTER_A_MOMENT = python_script(
    "import signal, sys, time\n"
    "def term(*_):\n"
    "    time.sleep(0.3)\n"
    "    print('clean exit', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, term)\n"
    "print('up', flush=True)\n"
    "while True:\n"
    "    time.sleep(60)\n"
)


@pytest.mark.parametrize("stop_timeout", [1e10, math.inf, 10**400])
def test_huge_stop_timeout_still_sends_term_first(make_stack, stop_timeout):
    # Before: 1e10 s overflowed the engine's nanosecond deadline, which expired at once, so
    # the service was SIGKILLed in the middle of its SIGTERM handler.
    stack = make_stack()
    stack.add("svc", TERM_AFTER_A_MOMENT, ready=corral.LogCheck("^up$"), stop_timeout=stop_timeout)
    stack.start(timeout=60)
    stack.stop(timeout=60)
    assert "clean exit" in stack["svc"].logs()
    assert stack["svc"].state == "stopped"


def test_infinite_wait_timeouts_wait(make_stack, helper):
    # Before: start(timeout=inf) raised Timeout after one 50 ms slice.
    stack = make_stack()
    stack.add("slow", [helper, "sleep", "0.3", "print", "ready", "pause"],
              ready=corral.LogCheck("^ready$"))
    stack.start(timeout=math.inf)
    assert stack["slow"].state == "ready"
    assert stack["slow"].wait_for_log("^ready$", timeout=math.inf) == "ready"
    stack.wait("slow", "ready", timeout=1e300)
    stack.restart("slow", timeout=math.inf)
    stack.stop(timeout=math.inf)
    assert stack["slow"].state == "stopped"
    stack.close(timeout=math.inf)


def test_bad_wait_timeouts(make_stack, helper):
    stack = make_stack()
    stack.add("a", [helper, "pause"])
    for bad in (math.nan, "1", [1]):
        err = config_error(stack.start, timeout=bad)
        assert err.key == "timeout"
    assert stack["a"].state == "pending"  # nothing was started by the refused call
    with pytest.raises(corral.Timeout):
        stack.wait("a", "ready", timeout=-5)  # negative: do not wait


def test_owner_environment_that_is_not_utf8(make_stack, helper, monkeypatch):
    # Before: the binding could not encode the surrogate, so every start raised TypeError.
    monkeypatch.setenv("CORRAL_TEST_LATIN1", "caf\udce9")  # the bytes b"caf\xe9"
    stack = make_stack()
    stack.add("svc", [helper, "pause"])
    stack.start(timeout=60)
    pid = stack["svc"].pid

    def environ() -> list[bytes]:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")

    # `ready` comes once the exec has begun (the vfork parent resumes when the child's
    # memory is replaced); the kernel shows the new environment a moment later.
    wait_until(lambda: environ() != [b""], what="the service's environment to be readable")
    assert b"CORRAL_TEST_LATIN1=caf\xe9" in environ()  # passed on unchanged


def test_environ_values_that_are_not_strings():
    # Before: TypeError from inside re.sub.
    err = config_error(parse_config, {"services": {"a": {"command": "${X}"}}}, environ={"X": 1})
    assert (err.service, err.key) == ("a", "command") and "'X' is not a string" in str(err)
