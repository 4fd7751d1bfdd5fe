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
