"""Resources: typed pools of values (ports, GPUs, paths, anything named) that services claim.

The values themselves are claimed natively (``resources/registry.cpp``): a claim is a lock
held by the owning process on a file per value in the per-user runtime directory, so it is
exclusive across threads, processes, users' stacks and pytest-xdist workers, and vanishes
with an owner that dies. This module only validates what users write:

- `ResourceType`: a pool (``range``, ``values``, or neither for free-form values), with an
  optional ``check`` command and ``env`` name (``stack.resource_type``, ``[resources.NAME]``);
- `ResourceClaim`: what one service claims of one resource (``resources={"gpu": 2}``);
- `claims()`: every live claim on the machine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, _integer, _keyed, _number, _show

__all__ = ["BUILTIN_TYPES", "ResourceClaim", "ResourceType", "claims", "make_claims", "make_resource_type"]

#: Built-in types; ``port`` is what ``ports=[...]`` allocates (the kernel picks the number).
BUILTIN_TYPES = ("port", "tcpport", "vncport", "serialport", "path")
# No '.', so that {{res.NAME.0}} reads unambiguously; the name also becomes CORRAL_RES_<NAME>.
_RESOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")
_NAME_RULE = "use up to 64 letters, digits, '_' and '-', not starting with a digit or '-'"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TYPE_KEYS = ("range", "values", "check", "env", "timeout")
_CLAIM_KEYS = ("count", "wait", "value", "values")
_MAX_RANGE = 1_000_000
_MAX_COUNT = 100_000


@dataclass(frozen=True)
class ResourceType:
    """A pool of values: an inclusive integer `range`, a list of `values`, or neither
    (free-form: each claim gives its value). `check` (``{{value}}`` filled in) must exit 0
    within `timeout` seconds for a value to be handed out; `env` also exports the values."""

    name: str
    range: tuple[int, int] | None = None
    values: tuple[str, ...] = ()
    check: str | None = None
    env: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class ResourceClaim:
    """`count` values of a pool, or the given `values`; `wait` keeps the service pending
    while the pool is exhausted instead of failing its start."""

    count: int = 1
    values: tuple[str, ...] = field(default_factory=tuple)
    wait: bool = False


def resource_name(value: object) -> str:
    if not isinstance(value, str) or not _RESOURCE_NAME.match(value):
        raise ConfigError(f"invalid resource name {_show(value)}: {_NAME_RULE}")
    return value


def _value_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"expected a value (a string or a whole number), got {_show(value)}")
    text = str(value)
    if not text or "\0" in text or "\n" in text:
        raise ConfigError(f"invalid value {_show(value)}: empty, or contains NUL or a newline")
    return text


def make_resource_type(
    name: str,
    *,
    range: tuple[int, int] | list[int] | None = None,
    values: list[Any] | tuple[Any, ...] | None = None,
    check: str | None = None,
    env: str | None = None,
    timeout: float = 10.0,
) -> ResourceType:
    """Validates a resource type; ConfigError names ``resources.NAME.<key>``."""
    try:
        valid = resource_name(name)
    except ConfigError as err:
        err._add_context(key="resources")
        raise
    try:
        lo_hi: tuple[int, int] | None = None
        if range is not None:
            if isinstance(range, (str, bytes)) or not isinstance(range, (list, tuple)) or len(range) != 2:
                raise ConfigError(f"expected [first, last], got {_show(range)}", key="range")
            lo = _keyed("range", _integer, range[0], minimum=0)
            hi = _keyed("range", _integer, range[1], minimum=0)
            if lo > hi:
                raise ConfigError(f"the first value {lo} is above the last {hi}", key="range")
            if hi - lo >= _MAX_RANGE:
                raise ConfigError(f"more than {_MAX_RANGE:,} values", key="range")
            lo_hi = (lo, hi)
        vals: tuple[str, ...] = ()
        if values is not None:
            if lo_hi is not None:
                raise ConfigError("give either range or values, not both", key="values")
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"expected a non-empty list of values, got {_show(values)}", key="values")
            vals = tuple(_keyed("values", _value_text, v) for v in values)
            if len(set(vals)) != len(vals):
                raise ConfigError("a value is listed twice", key="values")
        if check is not None and (not isinstance(check, str) or not check.strip() or "\0" in check):
            raise ConfigError(f"expected a shell command, got {_show(check)}", key="check")
        if env is not None and (not isinstance(env, str) or not _ENV_NAME.match(env)):
            raise ConfigError(f"invalid variable name {_show(env)}", key="env")
        seconds = _keyed("timeout", _number, timeout)
        return ResourceType(valid, lo_hi, vals, check, env, seconds)
    except ConfigError as err:
        err._add_context(key=f"resources.{valid}")
        raise


def resource_type_from_table(name: Any, table: Any) -> ResourceType:
    """``[resources.NAME]`` of a config file."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table (range, values, check, env, timeout), got {_show(table)}",
                          key=f"resources.{name}" if isinstance(name, str) else "resources")
    for key in table:
        if key not in _TYPE_KEYS:
            raise ConfigError(f"unknown key {_show(key)}: expected one of {', '.join(_TYPE_KEYS)}",
                              key=f"resources.{name}")
    return make_resource_type(name, **dict(table))


def _claim(value: object) -> ResourceClaim:
    if isinstance(value, bool):
        raise ConfigError(f"expected a count, a value or a table, got {_show(value)}")
    if isinstance(value, int):
        return ResourceClaim(count=_integer(value, minimum=1, maximum=_MAX_COUNT))
    if isinstance(value, str):
        return ResourceClaim(count=1, values=(_value_text(value),))
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError("expected at least one value, got an empty list")
        vals = tuple(_value_text(v) for v in value)
        if len(set(vals)) != len(vals):
            raise ConfigError("a value is listed twice")
        return ResourceClaim(count=len(vals), values=vals)
    if isinstance(value, Mapping):
        for key in value:
            if key not in _CLAIM_KEYS:
                raise ConfigError(f"unknown key {_show(key)}: expected one of {', '.join(_CLAIM_KEYS)}")
        wait = value.get("wait", False)
        if not isinstance(wait, bool):
            raise ConfigError(f"expected true or false, got {_show(wait)}", key="wait")
        if "value" in value and "values" in value:
            raise ConfigError("give either value or values, not both")
        if "value" in value or "values" in value:
            if "count" in value:
                raise ConfigError("give either a count or values, not both", key="count")
            given = _claim([value["value"]] if "value" in value else value["values"])
            return ResourceClaim(given.count, given.values, wait)
        count = _keyed("count", _integer, value.get("count", 1), minimum=1, maximum=_MAX_COUNT)
        return ResourceClaim(count=count, wait=wait)
    raise ConfigError(f"expected a count, a value or a table, got {_show(value)}")


def make_claims(value: object) -> dict[str, ResourceClaim]:
    """``resources={"gpu": 2, "dbfile": "/srv/dev.db", "vnc": {"count": 1, "wait": True}}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table of resource names, got {_show(value)}")
    out: dict[str, ResourceClaim] = {}
    upper: dict[str, str] = {}
    for name, claim in value.items():
        valid = resource_name(name)
        # Each name is also CORRAL_RES_<NAME>: names that differ only in case or -/_ collide.
        twin = upper.get(valid.upper().replace("-", "_"))
        if twin is not None:
            raise ConfigError(f"resource '{valid}' clashes with '{twin}'")
        upper[valid.upper().replace("-", "_")] = valid
        out[valid] = _keyed(valid, _claim, claim)
    return out


def claims() -> list[dict[str, Any]]:
    """Every live claim on this machine (of this user's corral): dicts with ``type``,
    ``value``, ``stack``, ``service``, ``pid`` (the process holding it), ``start_time``
    and ``boot_id``. A claim file whose lock nobody holds is not listed."""
    from . import _core

    rows: list[dict[str, Any]] = _core.claims()
    return rows
