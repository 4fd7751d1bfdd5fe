"""What every `corral` command shares: finding the config file and the running stack, and
printing lines with a service-name prefix as `corral up` does."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..client import Client

_DEFAULT_FILES = ("corral.toml", "corral.yaml", "corral.yml")
_COLORS = (36, 33, 32, 35, 34, 91, 96, 93, 92, 95, 94)


def find_file(path: str | None) -> str:
    if path:
        return path
    for name in _DEFAULT_FILES:
        if Path(name).is_file():
            return name
    raise ConfigError(
        f"no {' or '.join(_DEFAULT_FILES[:2])} in {os.getcwd()} (use -f FILE to name one)")


class Printer:
    """Prefixes each line with its service name, padded and coloured (when a terminal)."""

    def __init__(self, names: list[str], out: TextIO) -> None:
        self.out = out
        self.width = max((len(n) for n in names), default=6)
        self.color = out.isatty() and "NO_COLOR" not in os.environ
        self.palette = {n: _COLORS[i % len(_COLORS)] for i, n in enumerate(names)}

    def prefix(self, name: str) -> str:
        label = f"{name:<{self.width}} |"
        if self.color:
            return f"\x1b[{self.palette.get(name, 37)}m{label}\x1b[0m"
        return label

    def line(self, name: str, text: str) -> None:
        self.out.write(f"{self.prefix(name)} {text}\n")

    def flush(self) -> None:
        self.out.flush()




def find_running(args: argparse.Namespace) -> str | None:
    """What `corral.connect` should look for: `--name`, else `-f FILE`, else None (the
    current directory's corral.toml / corral.yaml)."""
    name: str | None = getattr(args, "name", None)
    if name:
        return name
    file: str | None = getattr(args, "file", None)
    return file or None


def connect(args: argparse.Namespace) -> Client:
    """The client of the stack the command line names (CorralError when none runs)."""
    from ..client import connect as _connect

    return _connect(find_running(args))


def duration(seconds: float | None) -> str:
    """`4s`, `3m12s`, `2h05m`, `3d04h`: as `docker ps` shows an uptime, short."""
    if seconds is None:
        return "-"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def since(wall: float | None) -> float | None:
    return None if wall is None else time.time() - wall


def table(rows: list[list[str]], out: TextIO) -> None:
    """Left-aligned columns, two spaces apart; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
