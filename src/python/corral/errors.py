"""The exception tree of corral.

Every error corral raises on purpose is a `CorralError`, so one ``except`` clause catches
them all; each leaf also derives from the matching builtin (`ValueError`, `TimeoutError`)
so code that knows nothing about corral still handles them sensibly.

The private helpers at the end validate plain values (numbers, counts) with uniform
messages; the spec modules share them so that every bad value reads the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["ConfigError", "CorralError", "StackClosed", "StartError", "Timeout"]

_T = TypeVar("_T")


class CorralError(Exception):
    """The root of every error raised by corral."""


class ConfigError(CorralError, ValueError):
    """A bad spec: unknown keys or dependencies, cycles, bad values, unreadable files.

    `reason` is the bare problem; `file`, `service` and `key` say where it is (any may be
    None) and are prepended to the message, e.g.
    ``corral.toml: service 'api': key 'ports': expected a list of names, got 5``.
    A part the reason already spells out is not repeated, so callers may also pass a
    fully formatted message together with the attributes.
    `key` is a dotted path below the service (``ready.interval``, ``env.MODE``);
    `line` and `column` (1-based) are set for syntax errors in a file.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        service: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.service = service
        self.key = key
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        reason = self.reason
        parts: list[str] = []
        if self.file is not None and f"{self.file}:" not in reason:
            where = self.file
            if self.line is not None:
                where += f", line {self.line}"
                if self.column is not None:
                    where += f", column {self.column}"
            parts.append(where)
        if self.service is not None and f"service '{self.service}'" not in reason:
            parts.append(f"service '{self.service}'")
        if self.key is not None and f"'{self.key}'" not in reason and f"{self.key}:" not in reason:
            parts.append(f"key '{self.key}'")
        # A file name with undecodable bytes, or a lone surrogate from the user's input,
        # would make print() of the message raise UnicodeEncodeError: escape them.
        return _printable(": ".join([*parts, reason]))

    def _add_context(
        self, *, file: str | None = None, service: str | None = None, key: str | None = None
    ) -> None:
        """Fills in where the error is, as it propagates outwards.

        Inner validators only know the value they check; the caller that knows the key (or
        service, or file) adds it here and re-raises the same exception, so the traceback is
        kept. An outer key is a prefix of the inner one: ``ready`` + ``interval``.
        """
        if file is not None and self.file is None:
            self.file = file
        if service is not None and self.service is None:
            self.service = service
        if key is not None:
            self.key = key if self.key is None else f"{key}.{self.key}"
        self.args = (self._render(),)

    def _replace_key(self, key: str | None) -> None:
        """Renames the key (a file spells some options differently from the Python API)."""
        self.key = key
        self.args = (self._render(),)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes would be lost by the default pickling of exceptions, which
        # matters when errors cross process boundaries (pytest-xdist, multiprocessing).
        return (
            _rebuild_config_error,
            (type(self), self.reason, self.file, self.service, self.key, self.line, self.column),
        )


def _rebuild_config_error(
    cls: type[ConfigError],
    reason: str,
    file: str | None,
    service: str | None,
    key: str | None,
    line: int | None,
    column: int | None,
) -> ConfigError:
    return cls(reason, file=file, service=service, key=key, line=line, column=column)


class StartError(CorralError):
    """A service could not become ready (spawn error, readiness deadline, early exit...).

    The message names the service and the reason and ends with the service's last log
    lines, because the cause of a failed start is nearly always in them.
    """

    def __init__(self, service: str, reason: str, log_tail: Sequence[str] = ()) -> None:
        self.service = service
        self.reason = reason
        self.log_tail = [line.rstrip("\n") for line in log_tail]
        message = f"service '{service}' failed to start: {reason}"
        if self.log_tail:
            message += f"\n--- last log lines of {service} ---\n" + "\n".join(self.log_tail)
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.service, self.reason, self.log_tail))


class Timeout(CorralError, TimeoutError):
    """A wait (for a state, a log line, a stop) ran out of time."""


class StackClosed(CorralError):
    """The stack was used after it was closed; a closed stack cannot be started again."""


# -- private validation helpers shared by checks.py, restart.py and spec.py ---------------


def _keyed(key: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Runs a validator and names `key` in the ConfigError it may raise."""
    try:
        return fn(*args, **kwargs)
    except ConfigError as err:
        err._add_context(key=key)
        raise


def _printable(text: str) -> str:
    """`text` with lone surrogates written as ``\\udcff`` escapes, so it can be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _show(value: object, limit: int = 60) -> str:
    """A short repr for messages: enough to recognise the value, never a wall of text.

    repr() of a structure nested thousands deep raises RecursionError, and a user's own
    __repr__ may raise anything: the message must still be built, so fall back to the type.
    """
    try:
        text = repr(value)
    except Exception:  # RecursionError included
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The longest duration corral passes on, in seconds (about 31.7 years). The engine keeps
#: deadlines as signed 64-bit nanoseconds, which overflow above ~9.2e9 s; anything longer
#: than this already means "forever", so it is clamped here instead of refused.
MAX_SECONDS = 1e9

#: The largest count the engine stores (a C int); retries and max_restarts stop here.
MAX_COUNT = 2**31 - 1


def _number(value: object, *, minimum: float = 0.0, strict: bool = True) -> float:
    """A duration in seconds above `minimum` (or equal to it when not `strict`).

    NaN is refused; ``inf`` and huge values (``1e400``, ``2**1024``) mean "forever" and are
    clamped to `MAX_SECONDS`, so they reach the engine as a value it cannot overflow.
    bools are rejected although they are ints: ``interval = true`` is a mistake, not 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number, got {_show(value)}")
    try:
        result = float(value)
    except OverflowError:  # an int beyond the float range
        result = math.inf if value > 0 else -math.inf
    if math.isnan(result):
        raise ConfigError(f"expected a number, got {_show(value)}")
    if result < minimum or (strict and result == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(f"expected a number {bound}, got {_show(value)}")
    return min(result, MAX_SECONDS)


def _integer(value: object, *, minimum: int, maximum: int = MAX_COUNT) -> int:
    """A whole number in [`minimum`, `maximum`]; bools and floats (even 3.0) are rejected.

    The upper bound keeps values within what the engine stores (a C int), so a huge number
    is a ConfigError here rather than an OverflowError or TypeError from the binding.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected a whole number >= {minimum}, got {_show(value)}")
    if value < minimum:
        raise ConfigError(f"expected a whole number >= {minimum}, got {_show(value)}")
    if value > maximum:
        raise ConfigError(f"expected a whole number <= {maximum:,}, got {_show(value)}")
    return int(value)


def _number_text(value: float) -> str:
    """str() of a number given as a command argument or variable value.

    str() of an int with more than 4,300 digits raises ValueError (CPython's guard against
    quadratic conversion); such a number is never meant, so it is a ConfigError.
    """
    try:
        return str(value)
    except ValueError:
        raise ConfigError(f"number too large to use as text, got {_show(value)}") from None


def _utf8(value: str, what: str) -> str:
    """`value` unless it holds a lone surrogate (from a non-UTF-8 file name decoded with
    surrogateescape, or a ``"\\udc80"`` escape), which cannot be encoded for the engine."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"{what} must be UTF-8 text; it holds a lone surrogate (such as undecodable bytes "
            f"of a file name), got {_show(value)}"
        ) from None
    return value


def _suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a likely typo of one of `choices`, else ``""``."""
    import difflib

    if len(word) > 100:  # no typo is that long, and difflib's cost grows with the length
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
