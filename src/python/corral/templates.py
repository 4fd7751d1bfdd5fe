"""Service templates: a command with options and default variables, instantiated as many
services as wanted (``stack.template`` + ``stack.add_from``, ``[templates.NAME]`` +
``template = "NAME"`` in a file).

``{{vars.KEY}}`` in any string of the template (command, env values, cwd, given resource
values) is replaced when the template is instantiated; the other ``{{...}}`` templates
(``{{res.gpu}}``, ``{{port.http}}``) are left for the engine, so each instance gets its
own claims and ports.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, _show

if TYPE_CHECKING:
    from .spec import ServiceSpec

__all__ = ["Template", "instantiate"]

_VAR = re.compile(r"\{\{\s*vars\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Template:
    """A named command with `options` (those of `Stack.add`) and default `vars`."""

    name: str
    command: list[str] | str
    options: Mapping[str, Any] = field(default_factory=dict)
    vars: Mapping[str, str] = field(default_factory=dict)


def _vars(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"expected a table of variables, got {_show(value)}", key=where)
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise ConfigError(f"invalid variable name {_show(k)}", key=where)
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(f"expected a string or a number, got {_show(v)}", key=f"{where}.{k}")
        out[k] = str(v)
    return out


def _fill(value: Any, values: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):
        def one(m: re.Match[str]) -> str:
            if m.group(1) not in values:
                known = ", ".join(sorted(values)) or "none"
                raise ConfigError(f"unknown variable '{m.group(1)}' (vars: {known})", key=key)
            return values[m.group(1)]
        return _VAR.sub(one, value)
    if isinstance(value, Mapping):
        return {k: _fill(v, values, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_fill(v, values, key) for v in value)
    return value


def instantiate(name: Any, options: Mapping[str, Any], defaults: object, given: object) -> ServiceSpec:
    """The ServiceSpec of one instance: `options` (command included) with ``{{vars.K}}``
    filled from `given` over `defaults`. ConfigError names the service and the key."""
    from .spec import make_service

    try:
        values = {**_vars(defaults, "vars"), **_vars(given, "vars")}
        filled = {k: _fill(v, values, k) for k, v in options.items()}
    except ConfigError as err:
        err._add_context(service=name if isinstance(name, str) else _show(name))
        raise
    command = filled.pop("command")
    return make_service(name, command, **filled)
