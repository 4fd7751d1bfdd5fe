"""corral: supervise stacks of local processes from Python.

    import corral

    stack = corral.Stack(name="dev")
    stack.add("web", "python -m http.server {{port.http}}", ports=["http"],
              ready=corral.HttpCheck("/", port="http"))
    with stack:
        print(stack["web"].ports["http"])

A native engine (C++, Boost.Asio) spawns, watches and stops the processes; this package is
the public API over it. See the user guide in docs/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import EventBatch
    from .checks import Check, ExecCheck, HttpCheck, LogCheck, NotifyCheck, TcpCheck
    from .client import Client, RemoteService, connect, list_stacks
    from .errors import ConfigError, CorralError, StackClosed, StartError, Timeout
    from .resources import ResourceType, claims
    from .restart import Restart
    from .stack import STATES, Service, Stack
    from .templates import Template

__version__ = "0.1.0"

__all__ = [
    "STATES",
    "Check",
    "Client",
    "ConfigError",
    "CorralError",
    "EventBatch",
    "ExecCheck",
    "HttpCheck",
    "LogCheck",
    "NotifyCheck",
    "RemoteService",
    "ResourceType",
    "Restart",
    "Service",
    "Stack",
    "StackClosed",
    "StartError",
    "TcpCheck",
    "Template",
    "Timeout",
    "__version__",
    "claims",
    "connect",
    "list_stacks",
]

# Where each public name is defined. `import corral` imports none of these modules: the
# first use of a name does (PEP 562), so a `corral ps` that only talks to a socket never
# loads the config parser, the history database or the Stack side of the engine. The names
# are still the package's own: `from corral import Stack` and `corral.Stack` work as before.
_WHERE = {
    "Check": "checks", "ExecCheck": "checks", "HttpCheck": "checks", "LogCheck": "checks",
    "NotifyCheck": "checks", "TcpCheck": "checks",
    "Client": "client", "RemoteService": "client", "connect": "client", "list_stacks": "client",
    "ConfigError": "errors", "CorralError": "errors", "StackClosed": "errors", "StartError": "errors",
    "Timeout": "errors",
    "EventBatch": "_events",
    "ResourceType": "resources", "claims": "resources",
    "Restart": "restart",
    "STATES": "stack", "Service": "stack", "Stack": "stack",
    "Template": "templates",
}

if not TYPE_CHECKING:  # for type checkers the imports above say it all, and typos stay errors

    def __getattr__(name: str) -> object:
        from importlib import import_module

        module = _WHERE.get(name)
        if module is None:
            # A submodule (`corral.stack.Stack`, `corral.history.read_history`): `import
            # corral` used to import most of them, and code may still reach them so.
            if name.startswith("__"):
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
            try:
                return import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        value = getattr(import_module(f"{__name__}.{module}"), name)
        globals()[name] = value  # from now on a plain module attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))
