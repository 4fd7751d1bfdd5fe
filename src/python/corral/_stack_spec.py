"""A Stack's specs as the engine's structs: each service (replicas expanded into services
of their own), its checks and restart policy, the stack's resource types, log files and
base environment, as the `_core` spec objects that the engine validates and runs.
Pure conversions: nothing here starts anything."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from . import _core
from .checks import Check, ExecCheck, HttpCheck, LogCheck, NotifyCheck, TcpCheck
from .errors import ConfigError
from .resources import ResourceType
from .restart import Restart
from .spec import LogFiles, ServiceSpec

__all__ = ["expand_replicas", "shell", "stack_spec"]


def shell(command: list[str] | str) -> list[str]:
    """The argv of a command: a list runs as is, a str through /bin/sh -c."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def _check_to_core(check: Check) -> Any:
    c = _core.CheckSpec()
    if isinstance(check, TcpCheck):
        c.kind, c.port = "tcp", str(check.port)
    elif isinstance(check, HttpCheck):
        c.kind, c.path = "http", check.path
        c.port = "" if check.port is None else str(check.port)
        c.status = check.status or 0
    elif isinstance(check, LogCheck):
        c.kind, c.pattern = "log", check.regex
    elif isinstance(check, ExecCheck):
        c.kind = "exec"
        c.command = shell(check.command if isinstance(check.command, str) else list(check.command))
    elif isinstance(check, NotifyCheck):
        c.kind = "notify"
    else:  # pragma: no cover - spec validation rejects anything else
        raise ConfigError(f"unsupported check {check!r}")
    c.interval = check.interval
    c.timeout = check.timeout
    c.start_timeout = check.start_timeout
    c.retries = check.retries
    return c


def _restart_to_core(restart: Restart) -> Any:
    r = _core.RestartSpec()
    r.policy = restart.policy
    r.backoff = restart.backoff
    r.max_backoff = restart.max_backoff
    r.max_restarts = -1 if restart.max_restarts is None else restart.max_restarts
    r.reset_after = restart.reset_after
    r.jitter = restart.jitter
    return r


def _service_to_core(spec: ServiceSpec, name: str) -> Any:
    s = _core.ServiceSpec()
    s.name = name
    s.argv = shell(spec.command)
    s.env = dict(spec.env)
    s.cwd = spec.cwd or ""
    s.ports = list(spec.ports)
    s.pinned_ports = dict(spec.pinned_ports)
    s.listen = list(spec.listen)
    claims = []
    for res, claim in spec.resources.items():
        c = _core.ResourceClaimSpec()
        c.name, c.count, c.values, c.wait = res, claim.count, list(claim.values), claim.wait
        claims.append(c)
    s.resources = claims
    s.depends_on = list(spec.depends_on.items())
    s.ready = None if spec.ready is None else _check_to_core(spec.ready)
    s.health = None if spec.health is None else _check_to_core(spec.health)
    s.restart = _restart_to_core(spec.restart)
    s.stop_signal = int(spec.stop_signal)
    s.stop_timeout = float(spec.stop_timeout)
    s.log_lines = int(spec.log_lines)
    return s


def expand_replicas(specs: list[ServiceSpec]) -> list[tuple[str, ServiceSpec]]:
    """`replicas = N` becomes N services `name-1` .. `name-N`; a dependency on `name`
    becomes a dependency on each of them."""
    names = {s.name: [f"{s.name}-{i}" for i in range(1, s.replicas + 1)] if s.replicas > 1 else [s.name]
             for s in specs}
    out = []
    for spec in specs:
        deps: dict[str, str] = {}
        for dep, cond in spec.depends_on.items():
            for replica in names.get(dep, [dep]):
                deps[replica] = cond
        for replica in names[spec.name]:
            clone = ServiceSpec(**{**spec.__dict__, "depends_on": deps, "name": replica})
            out.append((replica, clone))
    return out


def stack_spec(name: str, specs: Mapping[str, ServiceSpec], resource_types: Iterable[ResourceType],
               logs: LogFiles | None) -> Any:
    """The `_core.StackSpec` of a stack's services (by name, as added), resource types and
    log files. Raises ConfigError for a dependency on a service the stack does not have."""
    for spec in specs.values():
        for dep in spec.depends_on:
            if dep not in specs:
                raise ConfigError(
                    f"service '{spec.name}': depends_on: unknown service '{dep}'",
                    service=spec.name, key="depends_on")
    s = _core.StackSpec()
    s.name = name
    expanded = expand_replicas(list(specs.values()))
    s.services = [_service_to_core(spec, replica) for replica, spec in expanded]
    types = []
    for t in resource_types:
        c = _core.ResourceTypeSpec()
        c.name, c.range, c.values = t.name, t.range, list(t.values)
        c.check, c.env, c.timeout = t.check or "", t.env or "", t.timeout
        types.append(c)
    s.resource_types = types
    if logs is not None:
        s.log_dir, s.log_max_size, s.log_keep = logs.dir, logs.max_size, logs.keep
    # As bytes: one variable that is not UTF-8 in the owner's environment must neither
    # stop every start (the binding cannot encode its surrogates) nor be altered.
    s.base_env = dict(os.environb)  # type: ignore[arg-type]  # std::string takes bytes too
    return s
