"""Service specs: validation of the Python API options and of config files.

Everything the user writes passes through here before the engine sees it, so that every
mistake the spec alone can reveal (a wrong type, an unknown key, a misspelt condition, a
dependency on a service that does not exist) is reported as a `ConfigError` naming the
file, the service and the key. What only the whole stack can reveal (dependency cycles,
templates naming unknown ports) is left to the engine, which names the cycle.

The output is normalised, so that the consumer never re-checks or re-interprets: a
`ServiceSpec` holds plain lists, dicts of str, floats, a signal number, a `Restart`, and
checks whose port is always set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import (
    _PORT_NAME,
    Check,
    ExecCheck,
    HttpCheck,
    LogCheck,
    NotifyCheck,
    TcpCheck,
    _command,
)
from .errors import MAX_SECONDS, ConfigError, _integer, _keyed, _number, _number_text, _show, _suggest, _utf8
from .resources import ResourceClaim, ResourceType, make_claims, resource_type_from_table
from .restart import Restart

__all__ = [
    "CONDITIONS",
    "SERVICE_KEYS",
    "ServiceSpec",
    "StackConfig",
    "check_from_mapping",
    "load_file",
    "make_service",
    "parse_config",
    "restart_from_value",
    "stack_name",
    "wait_timeout",
]

#: Dependency conditions as written -> as stored ("healthy" is compose's word for "ready").
CONDITIONS: Mapping[str, str] = {
    "started": "started",
    "ready": "ready",
    "healthy": "ready",
    "completed": "completed",
}

#: The keys of a service table in a config file (the options of `Stack.add`).
SERVICE_KEYS = (
    "command",
    "ports",
    "env",
    "cwd",
    "depends_on",
    "ready",
    "health",
    "restart",
    "stop_signal",
    "stop_timeout",
    "replicas",
    "log_lines",
    "env_file",
    "resources",
    "listen",
)
# A service table of a file may also instantiate a template (see `Stack.add_from`).
_TEMPLATE_KEYS = ("template", "vars")

_TOP_KEYS = ("name", "services", "resources", "templates", "env_file", "metrics", "history", "logs")
_LOGS_KEYS = ("dir", "max_size", "keep")
_METRICS_KEYS = ("interval", "pss")
# Names end up in templates ({{db.port.main}}), file and socket names, log prefixes and
# Prometheus labels: ASCII only, no '/', no quotes or control characters, not '.' or '..',
# and short enough that `name-10000` still fits in a socket path (108 bytes).
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")
_NAME_RULE = "use up to 64 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
#: The most copies `replicas` may ask for: each is a process, a pipe pair and a status row.
MAX_REPLICAS = 10_000
# How deep a config may nest (tables in tables, lists in lists). Real configs use 4 or 5
# levels; the limit keeps recursive code far from Python's recursion limit.
_MAX_DEPTH = 32
# The most YAML nodes a document may expand to once its aliases are followed: a few
# hundred aliases nested in one another ("billion laughs") would otherwise expand to
# billions of nodes and hang the loader.
_MAX_YAML_NODES = 100_000
_CHECK_KINDS = ("tcp", "http", "log", "exec", "notify")
_CHECK_OPTIONS = ("interval", "timeout", "start_timeout", "retries")
_HTTP_OPTIONS = ("port", "status")
# The field of each check class that the kind key of the file form fills.
_CHECK_MAIN_FIELD = {"tcp": "port", "http": "path", "log": "regex", "exec": "command"}
_RESTART_KEYS = tuple(f.name for f in dataclasses.fields(Restart))


@dataclass
class ServiceSpec:
    """One service, validated and normalised (see `make_service`)."""

    name: str
    command: list[str] | str
    ports: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    depends_on: dict[str, str] = field(default_factory=dict)
    ready: Check | None = None
    health: Check | None = None
    restart: Restart = field(default_factory=Restart)
    stop_signal: int = int(signal.SIGTERM)
    stop_timeout: float = 10.0
    replicas: int = 1
    log_lines: int = 10000
    pinned_ports: dict[str, int] = field(default_factory=dict)
    listen: list[str] = field(default_factory=list)
    resources: dict[str, ResourceClaim] = field(default_factory=dict)


@dataclass
class StackConfig:
    """What a config file describes: an optional stack name and its services, in order."""

    name: str | None
    services: list[ServiceSpec]
    file: str | None = None
    resource_types: list[ResourceType] = field(default_factory=list)
    #: ``[metrics] interval`` (seconds; 0 = off) and ``pss``; None when the file is silent.
    metrics_interval: float | None = None
    metrics_pss: bool = False
    #: ``history = "dev.db"``, made absolute against the file's directory by load_file.
    history: str | None = None
    #: ``[logs]``: dir (absolute), max_size (bytes), keep; None when the file is silent.
    logs: LogFiles | None = None


# -- the Python API --------------------------------------------------------------------


def make_service(
    name: str,
    command: list[str] | str,
    *,
    ports: list[str] | Mapping[str, int] | None = None,
    env: Mapping[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    depends_on: list[str] | Mapping[str, str] | None = None,
    ready: Check | Mapping[str, Any] | None = None,
    health: Check | Mapping[str, Any] | None = None,
    restart: str | Restart | Mapping[str, Any] | None = "no",
    stop_signal: int | str | signal.Signals = signal.SIGTERM,
    stop_timeout: float = 10.0,
    replicas: int = 1,
    log_lines: int = 10000,
    env_file: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None,
    resources: Mapping[str, Any] | None = None,
    listen: list[str] | None = None,
    _file: str | None = None,
) -> ServiceSpec:
    """Validates the options of one service and returns its normalised spec.

    Raises ConfigError naming the service and the key (and `_file` when given). Checks and
    restart policies may also be given in their file form (a mapping).
    """
    try:
        valid_name = _service_name(name)
        port_names = _keyed("ports", _ports, ports)
        pinned = _keyed("ports", _pinned_ports, ports)
        return ServiceSpec(
            name=valid_name,
            command=_keyed("command", _command, command),
            ports=port_names,
            # Variables of the env files first (in order), then `env`: explicit wins.
            env={**_keyed("env_file", _env_files, env_file), **_keyed("env", _env, env)},
            cwd=_keyed("cwd", _cwd, cwd),
            depends_on=_keyed("depends_on", _depends_on, depends_on, valid_name),
            ready=_keyed("ready", _service_check, ready, port_names),
            health=_keyed("health", _service_check, health, port_names),
            restart=_keyed("restart", _restart, restart),
            stop_signal=_keyed("stop_signal", _signal, stop_signal),
            stop_timeout=_keyed("stop_timeout", _number, stop_timeout, strict=False),
            replicas=_keyed("replicas", _integer, replicas, minimum=1, maximum=MAX_REPLICAS),
            log_lines=_keyed("log_lines", _integer, log_lines, minimum=1),
            pinned_ports=pinned,
            listen=_keyed("listen", _listen, listen, port_names),
            resources=_keyed("resources", make_claims, resources),
        )
    except ConfigError as err:
        err._add_context(file=_file, service=name if isinstance(name, str) else _show(name))
        raise


def check_from_mapping(
    data: Mapping[str, Any],
    *,
    file: str | None = None,
    service: str | None = None,
    key: str | None = None,
) -> Check:
    """A check from its file form, e.g. ``{"http": "/health", "port": "http"}``.

    Exactly one kind key (tcp, http, log, exec, notify) plus the optional shared options;
    `file`, `service` and `key` (e.g. "ready") only say where the mapping came from.
    """
    try:
        return _check_from_mapping(data)
    except ConfigError as err:
        err._add_context(file=file, service=service, key=key)
        raise


def restart_from_value(
    value: str | Restart | Mapping[str, Any] | None,
    *,
    file: str | None = None,
    service: str | None = None,
    key: str | None = None,
) -> Restart:
    """A `Restart` from a policy name, a table ``{policy = ..., backoff = ...}`` or itself.

    None and False mean "no" (YAML reads an unquoted ``restart: no`` as False).
    """
    try:
        return _restart(value)
    except ConfigError as err:
        err._add_context(file=file, service=service, key=key)
        raise


# -- config files ----------------------------------------------------------------------


def load_file(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> StackConfig:
    """Reads a TOML (.toml) or YAML (.yaml, .yml) config file and validates it.

    ``${VAR}`` references are expanded from `environ` (default: os.environ). A relative
    `cwd` is taken relative to the file's directory, as docker compose does, so the file
    works from wherever it is loaded.
    """
    file = _file_name(path)
    suffix = Path(file).suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(
            f"unsupported file type '{suffix or Path(file).name}': expected .toml, .yaml or .yml",
            file=file,
        )
    text = _read_text(file)
    data = _parse_toml(text, file) if suffix == ".toml" else _parse_yaml(text, file)
    # As in docker compose, a .env beside the file feeds ${VAR}; the environment wins.
    from .envfile import dotenv_beside

    try:
        dotenv = dotenv_beside(file)
    except ConfigError as err:
        err._add_context(file=file)
        raise
    config = parse_config(data, file=file, environ={**dotenv, **(os.environ if environ is None else environ)})
    base = os.path.dirname(os.path.abspath(file))
    try:
        # The file's directory becomes the services' working directory: the engine can
        # only pass it on if it is text.
        _utf8(base, "the directory of a config file")
    except ConfigError as err:
        err._add_context(file=file)
        raise
    for spec in config.services:
        if spec.cwd is not None:
            spec.cwd = _relative_to(spec.cwd, base)
    if config.history is not None:
        config.history = _relative_to(config.history, base)
    return config


def parse_config(
    data: Any, *, file: str | None = None, environ: Mapping[str, str] | None = None
) -> StackConfig:
    """Validates the parsed content of a config file (a dict of the file's shape).

    `file` only names the source in error messages. Top-level keys starting with ``x-``
    are ignored (as in compose files, for YAML anchors shared by several services).
    """
    try:
        return _parse_config(data, os.environ if environ is None else environ, file)
    except ConfigError as err:
        err._add_context(file=file)
        raise


def _parse_config(data: Any, environ: Mapping[str, str], file: str | None) -> StackConfig:
    if data is None:
        raise ConfigError("the file is empty; expected a 'services' table")
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table with a 'services' table, got {_show(data)}")
    for key in data:
        _known_key(key, _TOP_KEYS, allow_extension=True)
    data = {k: _expand(v, environ, (k,)) for k, v in data.items() if not k.startswith("x-")}
    name = _keyed("name", _stack_name, data.get("name"))
    # A file's relative env_file paths mean "next to the file", as in docker compose.
    base = os.path.dirname(os.path.abspath(file)) if file else os.getcwd()
    stack_env = _keyed("env_file", _env_files, data.get("env_file"), base)
    services = data.get("services")
    if services is None:
        raise ConfigError("missing: a config needs a 'services' table", key="services")
    if not isinstance(services, Mapping):
        raise ConfigError(f"expected a table of services, got {_show(services)}", key="services")
    if not services:
        raise ConfigError("expected at least one service, got an empty table", key="services")
    types_table = data.get("resources", {})
    if not isinstance(types_table, Mapping):
        raise ConfigError(f"expected a table of resource types, got {_show(types_table)}", key="resources")
    types = [resource_type_from_table(n, t) for n, t in types_table.items()]
    templates = data.get("templates", {})
    if not isinstance(templates, Mapping):
        raise ConfigError(f"expected a table of templates, got {_show(templates)}", key="templates")
    specs: list[ServiceSpec] = []
    for svc, table in services.items():
        if isinstance(table, Mapping) and "template" in table:
            specs.append(_service_from_template(svc, table, templates, base))
        else:
            specs.append(_service_from_table(svc, table, base))
    for spec in specs:  # the stack's env files under each service's own variables
        spec.env = {**stack_env, **spec.env}
    _check_dependencies(specs)
    interval, pss = _metrics_table(data.get("metrics"))
    history = _keyed("history", history_path, data.get("history"))
    logs = log_files(data.get("logs"), base)
    return StackConfig(name=name, services=specs, file=file, resource_types=types,
                       metrics_interval=interval, metrics_pss=pss, history=history, logs=logs)


@dataclass
class LogFiles:
    """``[logs]``: each service's lines also go to ``<dir>/<service>.log``, stamped, and
    the file is rotated past `max_size` bytes (0: never), keeping `keep` old ones."""

    dir: str
    max_size: int = 10 << 20
    keep: int = 3


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB])?\Z")


def log_files(value: object, base: str | None = None) -> LogFiles | None:
    """``[logs]`` (a table, or just the directory as a string), or None. A relative `dir`
    is relative to `base` (the config file's directory)."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        value = {"dir": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table (dir, max_size, keep) or a directory, got {_show(value)}",
                          key="logs")
    _section_keys(value, _LOGS_KEYS, "logs")
    raw = value.get("dir")
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise ConfigError(f"expected a directory, got {_show(raw)}", key="logs.dir")
    directory = os.path.expanduser(raw)
    if base is not None and not os.path.isabs(directory):
        directory = os.path.join(base, directory)
    size = value.get("max_size", 10 << 20)
    if isinstance(size, str):
        m = _SIZE.match(size.strip())
        if m is None:
            raise ConfigError(f"expected a size such as 10485760, \"10MB\" or \"512KiB\", got {_show(size)}",
                              key="logs.max_size")
        size = int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()])
    max_size = _keyed("logs.max_size", _integer, size, minimum=0, maximum=1 << 62)
    keep = _keyed("logs.keep", _integer, value.get("keep", 3), minimum=0, maximum=1000)
    return LogFiles(dir=os.path.abspath(directory), max_size=max_size, keep=keep)


def _metrics_table(value: object) -> tuple[float | None, bool]:
    """``[metrics] interval = 1.0, pss = false``."""
    if value is None:
        return None, False
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table (interval, pss), got {_show(value)}", key="metrics")
    _section_keys(value, _METRICS_KEYS, "metrics")
    interval = value.get("interval")
    if interval is not None:
        interval = _keyed("metrics.interval", metrics_interval, interval)
    pss = value.get("pss", False)
    if not isinstance(pss, bool):
        raise ConfigError(f"expected true or false, got {_show(pss)}", key="metrics.pss")
    return interval, pss


def metrics_interval(value: object) -> float:
    """Seconds between samples: 0 (off) or at least 0.05."""
    seconds = _number(value, strict=False)
    if 0 < seconds < 0.05:
        raise ConfigError(f"expected 0 (off) or at least 0.05 seconds, got {_show(value)}")
    return seconds


def history_path(value: object) -> str | None:
    """A history database path (str or os.PathLike), or None."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"expected a file path, got {_show(value)}")
    return os.path.expanduser(value)


def _service_from_template(name: Any, table: Mapping[str, Any], templates: Mapping[str, Any],
                           directory: str) -> ServiceSpec:
    """``template = "NAME"`` and ``vars = {...}``, plus any option that overrides the template's."""
    from .templates import instantiate

    ref = table["template"]
    if not isinstance(ref, str) or ref not in templates:
        known = ", ".join(str(k) for k in templates) or "none defined"
        raise ConfigError(f"unknown template {_show(ref)} (templates: {known})",
                          service=str(name), key="template")
    base = templates[ref]
    if not isinstance(base, Mapping):
        raise ConfigError(f"expected a table of options, got {_show(base)}", key=f"templates.{ref}")
    try:
        for key in base:
            if key != "vars":
                _known_key(key, SERVICE_KEYS)
        for key in table:
            if key not in _TEMPLATE_KEYS:
                _known_key(key, SERVICE_KEYS)
    except ConfigError as err:
        err._add_context(service=str(name))
        raise
    options = {k: v for k, v in base.items() if k != "vars"}
    options.update({k: v for k, v in table.items() if k not in _TEMPLATE_KEYS})
    defaults = base.get("vars", {})
    if "command" not in options:
        raise ConfigError("missing: the template has no command", key=f"templates.{ref}.command")
    if options.get("env_file") is not None:
        try:
            options["env_file"] = _env_file_paths(options["env_file"], directory)
        except ConfigError as err:
            err._add_context(service=str(name), key="env_file")
            raise
    return instantiate(name, options, defaults, table.get("vars"))


def _service_from_table(name: Any, table: Any, base: str) -> ServiceSpec:
    if not isinstance(name, str):
        raise ConfigError(f"expected service names to be strings, got {_show(name)}",
                          key="services")
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table of options, got {_show(table)}", service=name)
    try:
        for key in table:
            _known_key(key, SERVICE_KEYS)
        if "command" not in table:
            raise ConfigError("missing: every service needs a command", key="command")
    except ConfigError as err:
        err._add_context(service=name)
        raise
    options = dict(table)
    command = options.pop("command")
    if options.get("env_file") is not None:
        try:
            options["env_file"] = _env_file_paths(options["env_file"], base)
        except ConfigError as err:
            err._add_context(service=name, key="env_file")
            raise
    return make_service(name, command, **options)


def _check_dependencies(specs: list[ServiceSpec]) -> None:
    """Every dependency names a service of the same config (cycles: the engine's job)."""
    names = [s.name for s in specs]
    for spec in specs:
        for dep in spec.depends_on:
            if dep not in names:
                raise ConfigError(
                    f"unknown service '{dep}'{_suggest(dep, names)}",
                    service=spec.name,
                    key="depends_on",
                )


def _file_name(path: object) -> str:
    """The path of a config file as text; bytes that are not UTF-8 become surrogates
    (os.fsdecode), which messages show escaped."""
    try:
        file = os.fsdecode(os.fspath(path))  # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(f"expected a file path (str or os.PathLike), got {_show(path)}") from None
    if "\0" in file:
        raise ConfigError(f"a file path cannot contain a NUL character, got {_show(file)}")
    return file


def _section_keys(table: Mapping[Any, Any], known: tuple[str, ...], section: str) -> None:
    """Every key of a top-level table such as [logs] is known; the error names `section.key`."""
    for key in table:
        try:
            _known_key(key, known)
        except ConfigError as err:
            err._add_context(key=f"{section}.{key}")
            raise


def _known_key(key: Any, known: tuple[str, ...], *, allow_extension: bool = False) -> None:
    if not isinstance(key, str):
        raise ConfigError(f"expected keys to be strings, got {_show(key)}")
    if key in known or (allow_extension and key.startswith("x-")):
        return
    raise ConfigError(f"unknown key{_suggest(key, known)}", key=key)


def _read_text(file: str) -> str:
    try:
        raw = Path(file).read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a config file", file=file) from None
    except (OSError, ValueError) as exc:  # ValueError: a path the OS cannot take
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot read the file: {reason}", file=file) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=file) from None


_TOO_DEEP = f"nested too deeply (at most {_MAX_DEPTH} levels of tables and lists)"
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*\Z")


def _parse_toml(text: str, file: str) -> Any:
    # Parsers are imported when a file needs them: `import corral` stays light.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(_TOO_DEEP, file=file) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_POSITION.search(message)
        if where is None:
            raise ConfigError(f"invalid TOML: {message}", file=file) from None
        raise ConfigError(
            f"invalid TOML: {message[: where.start()]}",
            file=file,
            line=int(where.group(1)),
            column=int(where.group(2)),
        ) from None


@functools.cache
def _yaml_loader() -> Any:
    import yaml

    class _YamlLoader(yaml.SafeLoader):
        """SafeLoader that rejects duplicate keys, which PyYAML would silently let win.

        TOML already refuses them; a duplicated service or option is always a mistake.
        """

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor` merges may be overridden by explicit keys
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: the base class reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
            return super().construct_mapping(node, deep=deep)

        def compose_node(self, parent: Any, index: Any) -> Any:
            # The composer recurses once per level, and the scanner's cost grows with the
            # square of the depth (10,000 '[' take 8 s): stop at the limit, before both.
            self._depth = getattr(self, "_depth", 0) + 1
            try:
                if self._depth > _MAX_DEPTH + 1:
                    mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                    raise ConfigError(_TOO_DEEP, line=mark.line + 1, column=mark.column + 1)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def get_single_data(self) -> Any:
            # Measure the document's size with its aliases followed before building it: the
            # constructor shares aliased objects, but everything downstream walks them.
            node = self.get_single_node()
            if node is None:
                return None
            _check_yaml_size(node)
            return self.construct_document(node)

    return _YamlLoader


def _check_yaml_size(root: Any) -> None:
    """Refuses a YAML node graph that expands beyond _MAX_YAML_NODES or refers to itself.

    Walks the graph once (iteratively, shared nodes measured once) and computes how many
    nodes each one stands for when every alias is replaced by a copy of its target.
    """
    import yaml

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return []

    sizes: dict[int, int] = {}
    active = {id(root)}
    todo = [(root, iter(children(root)))]
    while todo:
        node, pending = todo[-1]
        for child in pending:
            if id(child) in sizes:
                continue
            if id(child) in active:
                raise ConfigError(
                    "invalid YAML: an alias refers to a node that contains it",
                    line=child.start_mark.line + 1,
                    column=child.start_mark.column + 1,
                )
            active.add(id(child))
            todo.append((child, iter(children(child))))
            break
        else:
            todo.pop()
            active.discard(id(node))
            size = 1 + sum(sizes[id(c)] for c in children(node))
            if size > _MAX_YAML_NODES:
                raise ConfigError(
                    f"invalid YAML: the document expands to more than {_MAX_YAML_NODES:,} "
                    "values once its aliases are followed",
                    line=node.start_mark.line + 1,
                    column=node.start_mark.column + 1,
                )
            sizes[id(node)] = size


def _parse_yaml(text: str, file: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except RecursionError:
        raise ConfigError(_TOO_DEEP, file=file) from None
    except ConfigError as err:
        err._add_context(file=file)
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        raise ConfigError(
            f"invalid YAML: {problem}",
            file=file,
            line=None if mark is None else mark.line + 1,
            column=None if mark is None else mark.column + 1,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None
    except (ValueError, OverflowError) as exc:  # e.g. a timestamp such as 2024-13-45
        raise ConfigError(f"invalid YAML: {exc}", file=file) from None


def _relative_to(cwd: str, base: str) -> str:
    """`cwd` made absolute against `base`; a leading template may be absolute, kept as is."""
    cwd = os.path.expanduser(cwd)
    if cwd.startswith("{{") or os.path.isabs(cwd):
        return cwd
    return os.path.join(base, cwd)


# -- ${VAR} expansion ------------------------------------------------------------------

# `$$` first, so that `$${X}` is a literal `${X}`; then a complete `${...}`; then a `${`
# that is never closed. A `$` followed by anything else is left alone, because shell
# commands use `$NAME` for their own variables at run time.
_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?\Z", re.DOTALL)


def _expand(value: Any, environ: Mapping[str, str], path: tuple[Any, ...], depth: int = 0) -> Any:
    """`value` with ``${VAR}`` expanded in every string, recursively; keys are kept.

    Also the one walk over the whole tree, so it refuses nesting deeper than _MAX_DEPTH
    (a dict built in Python may nest without limit, or even contain itself).
    """
    if depth > _MAX_DEPTH and isinstance(value, (Mapping, list)):
        service, key = _location(path[:3])  # where it starts, not 32 keys deep
        raise ConfigError(_TOO_DEEP, service=service, key=key)
    if isinstance(value, str):
        try:
            return _expand_text(value, environ)
        except ConfigError as err:
            service, key = _location(path)
            err._add_context(service=service, key=key)
            raise
    if isinstance(value, Mapping):
        return {k: _expand(v, environ, (*path, k), depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, path, depth + 1) for v in value]
    return value


def _location(path: tuple[Any, ...]) -> tuple[str | None, str | None]:
    """(service, dotted key) of a position in the file's tree."""
    names = [p if isinstance(p, str) else _show(p) for p in path]
    if len(names) >= 2 and names[0] == "services":
        rest = ".".join(names[2:])
        return names[1], rest or None
    return None, ".".join(names) or None


def _expand_text(text: str, environ: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$$":
            return "$"
        inner = match.group(1)
        if inner is None:
            raise ConfigError(
                f"unterminated '${{' in {_show(text)} (write '$$' for a literal '$')"
            )
        ref = _VARIABLE.match(inner)
        if ref is None:
            raise ConfigError(
                f"invalid variable reference '{whole}': expected ${{NAME}} or "
                "${NAME:-default} (write '$$' for a literal '$')"
            )
        name, default = ref.group(1), ref.group(2)
        found = environ.get(name)
        if found is not None and not isinstance(found, str):
            # `environ` is the caller's mapping: a non-str value would fail inside re.sub.
            raise ConfigError(f"environment variable '{name}' is not a string: {_show(found)}")
        if found is None or (found == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"environment variable '{name}' is not set "
                    f"(write ${{{name}:-default}} to give a default)"
                )
            return default
        return found

    return _REFERENCE.sub(substitute, text)


# -- option validators -----------------------------------------------------------------


def stack_name(value: object) -> str | None:
    """`value` if it is a valid stack name (or None); else a ConfigError naming it.

    A stack's name reaches file names, socket paths and Prometheus labels, so it follows
    the rule of service names (see docs/config-reference.md).
    """
    if value is None:
        return None
    if not isinstance(value, str) or not _SERVICE_NAME.match(value):
        raise ConfigError(f"invalid stack name {_show(value)}: {_NAME_RULE}")
    return value


def wait_timeout(value: object) -> float | None:
    """The `timeout` argument of a blocking call, as the engine can take it.

    None, ``inf`` and anything beyond MAX_SECONDS mean "wait forever" and become None: the
    binding turns seconds into a steady_clock deadline, which would overflow and expire at
    once. A negative timeout means "do not wait". NaN and non-numbers are ConfigErrors.
    """
    if value is None:
        return None
    seconds = _keyed("timeout", _number, value, minimum=-math.inf, strict=False)
    return None if seconds >= MAX_SECONDS else max(seconds, 0.0)


def _service_name(value: object) -> str:
    if not isinstance(value, str) or not _SERVICE_NAME.match(value):
        raise ConfigError(f"invalid service name {_show(value)}: {_NAME_RULE}")
    return value


_stack_name = stack_name


def _ports(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = list(value)  # {name = number}: pinned ports (see _pinned_ports)
    elif isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"expected a list of names, got {_show(value)}")
    names: list[str] = []
    upper: dict[str, str] = {}
    for item in value:
        if not isinstance(item, str) or not _PORT_NAME.match(item):
            raise ConfigError(
                f"invalid port name {_show(item)}: use letters, digits and '_', "
                "not starting with a digit"
            )
        # Each port is also the variable CORRAL_PORT_<NAME>: names differing only in
        # case would collide there.
        twin = upper.get(item.upper())
        if twin is not None:
            same = "listed twice" if twin == item else f"clashes with '{twin}' (case-insensitive)"
            raise ConfigError(f"port '{item}' {same}")
        upper[item.upper()] = item
        names.append(item)
    return names


def _pinned_ports(value: object) -> dict[str, int]:
    """``ports = {http = 8080}`` pins numbers (0 or None: allocate that one as usual)."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for name, number in value.items():
        if number is None or number == 0:
            continue
        out[name] = _keyed(str(name), _integer, number, minimum=1, maximum=65535)
    return out


def _listen(value: object, ports: list[str]) -> list[str]:
    """Port names to bind and listen on before the spawn, handed over as fds 3.. ."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"expected a list of port names, got {_show(value)}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or item not in ports:
            raise ConfigError(f"{_show(item)} is not a port of the service{_suggest(str(item), ports)}")
        if item in out:
            raise ConfigError(f"port '{item}' listed twice")
        out.append(item)
    if len(out) > 8:
        # spawn passes at most 8 fds besides stdio (kMaxPassedFds).
        raise ConfigError("at most 8 ports can be handed over as listening sockets")
    return out


def _env(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table of variables, got {_show(value)}")
    result: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ConfigError(f"invalid variable name {_show(name)}")
        _utf8(name, "a variable name")
        result[name] = _keyed(name, _env_value, item)
    return result


def _env_file_paths(value: object, base: str | None = None) -> list[str]:
    """`env_file`: one path or a list of them, made absolute against `base` when given."""
    items = value if isinstance(value, list) else [value]
    paths = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)) or not os.fspath(item):
            raise ConfigError(f"expected a path or a list of paths, got {_show(value)}")
        path = os.path.expanduser(os.fspath(item))
        paths.append(os.path.join(base, path) if base is not None and not os.path.isabs(path) else path)
    return paths


def _env_files(value: object, base: str | None = None) -> dict[str, str]:
    """The variables of `env_file` (later files win), read now."""
    if value is None:
        return {}
    from .envfile import read_env_file

    merged: dict[str, str] = {}
    for path in _env_file_paths(value, base):
        merged.update(read_env_file(path))
    return merged


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as written in the file, not Python's "True"
    if isinstance(value, (int, float)):
        return _number_text(value)
    if isinstance(value, os.PathLike):
        value = os.fsdecode(os.fspath(value))
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, number or boolean, got {_show(value)}")
    if "\0" in value:
        raise ConfigError("a variable cannot contain a NUL character")
    return _utf8(value, "a variable")


def _cwd(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fsdecode(os.fspath(value))
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"expected a directory path, got {_show(value)}")
    return _utf8(value, "a directory path")


def _depends_on(value: object, own_name: str) -> dict[str, str]:
    """name -> condition; a bare list of names means "ready"."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, (list, tuple)):
        pairs = [(item, "ready") for item in value]
    else:
        raise ConfigError(
            "expected a list of service names or a table of name = condition, "
            f"got {_show(value)}"
        )
    result: dict[str, str] = {}
    for name, condition in pairs:
        if not isinstance(name, str) or not _SERVICE_NAME.match(name):
            raise ConfigError(f"expected service names, got {_show(name)}")
        if name == own_name:
            raise ConfigError("a service cannot depend on itself")
        if name in result:
            raise ConfigError(f"service '{name}' is listed twice")
        result[name] = _keyed(name, _condition, condition)
    return result


def _condition(value: object) -> str:
    if isinstance(value, str) and value in CONDITIONS:
        return CONDITIONS[value]
    hint = _suggest(value, list(CONDITIONS)) if isinstance(value, str) else ""
    raise ConfigError(
        f"unknown condition {_show(value)}{hint}: expected 'started', 'ready' "
        "(or 'healthy') or 'completed'"
    )


def _service_check(value: object, ports: list[str]) -> Check | None:
    """A check for a service with `ports`: named ports must exist, and an http check
    without a port gets the service's only port."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        check = _check_from_mapping(value)
    elif isinstance(value, Check):
        check = value
    else:
        raise ConfigError(
            "expected a check (corral.TcpCheck, HttpCheck, LogCheck, ExecCheck, NotifyCheck) "
            f"or a table such as {{ tcp = \"main\" }}, got {_show(value)}"
        )
    port = check.port if isinstance(check, (TcpCheck, HttpCheck)) else None
    if isinstance(check, HttpCheck) and port is None:
        if len(ports) != 1:
            have = "no ports" if not ports else f"several ports ({', '.join(ports)})"
            raise ConfigError(f"an http check needs a port: the service has {have}")
        return dataclasses.replace(check, port=ports[0])
    if isinstance(port, str) and port not in ports:
        have = f"its ports are {', '.join(ports)}" if ports else "it has no ports"
        raise ConfigError(f"the check's port '{port}' is not a port of the service ({have})")
    return check


def _check_from_mapping(data: object) -> Check:
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a check table, got {_show(data)}")
    known = _CHECK_KINDS + _CHECK_OPTIONS + _HTTP_OPTIONS
    for key in data:
        _known_key(key, known)
    kinds = [k for k in _CHECK_KINDS if k in data]
    if not kinds:
        raise ConfigError(f"a check needs one of the keys {', '.join(_CHECK_KINDS)}")
    if len(kinds) > 1:
        raise ConfigError(
            f"a check has exactly one kind, got {' and '.join(repr(k) for k in kinds)}"
        )
    kind = kinds[0]
    for key in _HTTP_OPTIONS:
        if key in data and kind != "http":
            raise ConfigError(f"'{key}' applies to http checks only, not {kind}", key=key)
    options = {k: data[k] for k in _CHECK_OPTIONS if k in data}
    main = data[kind]
    try:
        if kind == "tcp":
            return TcpCheck(main, **options)
        if kind == "http":
            return HttpCheck(main, port=data.get("port"), status=data.get("status"), **options)
        if kind == "log":
            return LogCheck(main, **options)
        if kind == "exec":
            return ExecCheck(main, **options)
        if main is not True:
            raise ConfigError(f"expected true, got {_show(main)}", key="notify")
        return NotifyCheck(**options)
    except ConfigError as err:
        # The file spells the main argument by the kind: `{ tcp = "main" }` has no `port`.
        if kind in _CHECK_MAIN_FIELD and err.key == _CHECK_MAIN_FIELD[kind]:
            err._replace_key(kind)
        raise


def _restart(value: object) -> Restart:
    if isinstance(value, Restart):
        return value
    if value is None or value is False:
        return Restart()
    if isinstance(value, str):
        try:
            return Restart(value)
        except ConfigError as err:
            err._replace_key(None)  # the value itself is the policy
            raise
    if isinstance(value, Mapping):
        for key in value:
            _known_key(key, _RESTART_KEYS)
        if "policy" not in value:
            raise ConfigError("missing: a restart table needs a policy", key="policy")
        return Restart(**value)
    raise ConfigError(
        "expected 'no', 'on-failure', 'always', a table with a policy, or corral.Restart(...), "
        f"got {_show(value)}"
    )


@functools.cache
def _valid_signals() -> frozenset[int]:
    # signal.valid_signals() builds a fresh set on every call: 80% of Stack.add's time.
    return frozenset(int(s) for s in signal.valid_signals())


def _signal(value: object) -> int:
    """A signal number from a number, a name ("TERM", "SIGTERM", "term") or a Signals."""
    if isinstance(value, bool):
        raise ConfigError(f"expected a signal name or number, got {_show(value)}")
    if isinstance(value, int):
        if value in _valid_signals():
            return int(value)
        raise ConfigError(f"not a valid signal number: {value}")
    if isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            hint = _suggest(name, [s.name for s in signal.Signals])
            raise ConfigError(f"unknown signal {_show(value)}{hint}") from None
    raise ConfigError(f"expected a signal name or number, got {_show(value)}")
