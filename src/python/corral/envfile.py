"""`.env` files, as docker compose reads them.

Two uses: a `.env` beside a config file feeds its ``${VAR}`` expansion (the process's own
environment wins over it), and `env_file = [...]` (per service, or for the whole stack)
loads variables into the services' environment (a service's own `env` wins over it).

The syntax is compose's: one ``KEY=VALUE`` per line, an optional ``export`` before the
key, blank lines and lines starting with ``#`` ignored; a value may be single-quoted
(taken literally), double-quoted (``\\n``, ``\\t``, ``\\"`` and ``\\\\`` are escapes, and
it may span lines) or bare (trailing blanks and a `` #comment`` after a blank removed).
Values are not expanded.
"""

from __future__ import annotations

import os
import re

from .errors import ConfigError

__all__ = ["dotenv_beside", "read_env_file"]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}
# An env file is a handful of lines; a bigger one is a mistake (a binary, a log file).
_MAX_BYTES = 1 << 20


def read_env_file(path: str) -> dict[str, str]:
    """The variables of the file at `path`; ConfigError naming the file (and the line)
    when it is missing, unreadable, not UTF-8 or malformed."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.strerror or exc}", key="env_file") from None
    if len(data) > _MAX_BYTES:
        raise ConfigError(f"env file {path} is larger than 1 MiB", key="env_file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"env file {path} is not UTF-8 text (byte {exc.start})", key="env_file") from None
    try:
        return _parse(text)
    except ConfigError as err:
        raise ConfigError(f"env file {path}: {err.reason}", key="env_file") from None


def _parse(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"line {number}: expected KEY=VALUE, got {line[:40]!r}")
        if not _KEY.match(key):
            raise ConfigError(f"line {number}: invalid variable name {key[:40]!r}")
        value = value.lstrip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            body = value[1:]
            # A quoted value may continue on the following lines until its closing quote.
            while _closing(body, quote) < 0 and i < len(lines):
                body += "\n" + lines[i]
                i += 1
            end = _closing(body, quote)
            if end < 0:
                raise ConfigError(f"line {number}: the {quote} quote of {key} is never closed")
            value = body[:end] if quote == "'" else _unescape(body[:end])
        else:
            comment = re.search(r"\s#", value)
            value = (value[:comment.start()] if comment else value).rstrip()
        if "\0" in value:
            raise ConfigError(f"line {number}: the value of {key} contains a NUL byte")
        out[key] = value
    return out


def _closing(body: str, quote: str) -> int:
    """Index of the quote that closes `body`, or -1; in double quotes, `\\"` does not."""
    j = 0
    while j < len(body):
        if quote == '"' and body[j] == "\\":
            j += 2
            continue
        if body[j] == quote:
            return j
        j += 1
    return -1


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body, flags=re.DOTALL)


def dotenv_beside(config_file: str) -> dict[str, str]:
    """The `.env` next to a config file, or nothing when there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), ".env")
    return read_env_file(path) if os.path.isfile(path) else {}
