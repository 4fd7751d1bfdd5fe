"""Readiness and liveness checks, as the user writes them.

A check is a small frozen value: it says *what* to probe; the engine does the probing.
Values are validated (and numbers normalised to float) when the check is created, so a
mistake surfaces at the line that made it, not when the stack starts.

Used as ``ready=``, a check decides when a service stops being ``starting``: it is retried
every `interval` seconds (each attempt bounded by `timeout`) until it passes or
`start_timeout` has passed. Used as ``health=``, `retries` consecutive failures make the
service ``unhealthy``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from .errors import ConfigError, _integer, _keyed, _number, _number_text, _show, _utf8

__all__ = ["Check", "ExecCheck", "HttpCheck", "LogCheck", "NotifyCheck", "TcpCheck"]

# A port name must be usable in `{{port.NAME}}` and as `CORRAL_PORT_<NAME>`.
_PORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# At most 9 digits: int() of a longer string is never a port, and of a very long one
# (over 4,300 digits) raises ValueError instead of failing the range check below.
_PORT_NUMBER = re.compile(r"[0-9]{1,9}\Z")


@dataclass(frozen=True, kw_only=True, repr=False)
class Check:
    """The options every check shares; use one of the subclasses."""

    kind: ClassVar[str] = ""

    interval: float = 0.1
    timeout: float = 1.0
    start_timeout: float = 60.0
    retries: int = 3

    def __post_init__(self) -> None:
        if type(self) is Check:
            raise TypeError(
                "Check is the common base; use TcpCheck, HttpCheck, LogCheck, ExecCheck "
                "or NotifyCheck"
            )
        for name in ("interval", "timeout", "start_timeout"):
            self._set(name, _keyed(name, _number, getattr(self, name)))
        self._set("retries", _keyed("retries", _integer, self.retries, minimum=1))

    def _set(self, name: str, value: object) -> None:
        # Frozen dataclasses allow normalising only through object.__setattr__.
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        # Show the check the way it is usually written: own fields first, and the shared
        # options only when they differ from their defaults.
        own = [f for f in fields(self) if f.name not in _COMMON]
        args = [f"{f.name}={getattr(self, f.name)!r}" for f in own]
        args += [
            f"{name}={getattr(self, name)!r}"
            for name, default in _COMMON.items()
            if getattr(self, name) != default
        ]
        return f"{type(self).__name__}({', '.join(args)})"


_COMMON: dict[str, Any] = {"interval": 0.1, "timeout": 1.0, "start_timeout": 60.0, "retries": 3}


@dataclass(frozen=True, repr=False)
class TcpCheck(Check):
    """Passes when the port accepts a TCP connection.

    `port` is a port name of the service or a number; a numeric string becomes an int.
    """

    kind: ClassVar[str] = "tcp"

    port: str | int

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("port", _keyed("port", _port_ref, self.port))


@dataclass(frozen=True, repr=False)
class HttpCheck(Check):
    """Passes when ``GET path`` answers with `status` (None: any 2xx or 3xx).

    `port` None means the service's only port; the service spec fills it in.
    """

    kind: ClassVar[str] = "http"

    path: str = "/"
    port: str | int | None = None
    status: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._set("path", _keyed("path", _http_path, self.path))
        if self.port is not None:
            self._set("port", _keyed("port", _port_ref, self.port))
        if self.status is not None:
            self._set("status", _keyed("status", _http_status, self.status))


@dataclass(frozen=True, repr=False)
class LogCheck(Check):
    """Passes when a line of the service's stdout or stderr matches `regex` (searched)."""

    kind: ClassVar[str] = "log"

    regex: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _keyed("regex", _regex, self.regex)


@dataclass(frozen=True, repr=False)
class ExecCheck(Check):
    """Passes when `command` exits with 0; a str runs through ``/bin/sh -c``.

    A list is stored as a tuple so that the check stays hashable like the others.
    """

    kind: ClassVar[str] = "exec"

    command: str | tuple[str, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        command = _keyed("command", _command, self.command)
        self._set("command", command if isinstance(command, str) else tuple(command))


@dataclass(frozen=True, repr=False)
class NotifyCheck(Check):
    """Passes when the service reports readiness itself (sd_notify style ``READY=1``)."""

    kind: ClassVar[str] = "notify"


# -- value validators (private; spec.py reuses _command and _port_ref) --------------------


def _port_ref(value: object) -> str | int:
    """A port number (1..65535) or a port name; numeric strings become numbers."""
    if isinstance(value, str) and _PORT_NUMBER.match(value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= 65535:
            return value
        raise ConfigError(f"expected a port number in 1..65535 or a port name, got {value}")
    if isinstance(value, str) and _PORT_NAME.match(value):
        return value
    raise ConfigError(
        "expected a port number or a port name (letters, digits and '_', not starting with a "
        f"digit), got {_show(value)}"
    )


def _http_path(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"expected a URL path starting with '/', got {_show(value)}")
    if any(c.isspace() for c in value):
        raise ConfigError(f"a URL path cannot contain whitespace, got {_show(value)}")
    return _utf8(value, "a URL path")


def _http_status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 599:
        raise ConfigError(f"expected an HTTP status code (100..599), got {_show(value)}")
    return value


def _regex(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected a non-empty regular expression, got {_show(value)}")
    _utf8(value, "a regular expression")
    # The engine runs the pattern (Boost.Regex, ECMAScript syntax), so the engine judges
    # it: a Python-only construct such as (?P<name>...) is an error here, not at start.
    from . import _core

    try:
        _core.check_regex(value)
    except ConfigError as exc:
        raise ConfigError(f"invalid regular expression {value!r} (ECMAScript syntax): "
                          f"{exc.reason}") from None
    return value


def _text(value: str, what: str) -> str:
    # A NUL byte would silently truncate the string on its way to execve().
    if "\0" in value:
        raise ConfigError(f"{what} cannot contain a NUL character, got {_show(value)}")
    return _utf8(value, what)


def _command(value: object) -> str | list[str]:
    """A non-empty shell command string, or a non-empty argv list.

    List items may be numbers or paths (``[sys.executable, "-m", "x", "--port", 80]``);
    they are converted with str(). bools are refused: ``True`` as an argument is a mistake.
    """
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError("expected a non-empty command, got an empty string")
        return _text(value, "a command")
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError("expected a non-empty command, got an empty list")
        argv: list[str] = []
        for item in value:
            if isinstance(item, str):
                argv.append(_text(item, "a command argument"))
            elif isinstance(item, os.PathLike):
                argv.append(_text(os.fsdecode(os.fspath(item)), "a command argument"))
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                argv.append(_number_text(item))
            else:
                raise ConfigError(
                    f"expected command arguments to be strings, got {_show(item)} in {_show(value)}"
                )
        if not argv[0]:
            raise ConfigError("the program (first item of the command) cannot be empty")
        return argv
    raise ConfigError(
        f"expected a command: a list of arguments or a shell string, got {_show(value)}"
    )
