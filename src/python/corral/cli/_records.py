"""`corral resources` and `corral history`: what this machine and a history database
keep, read locally (no running stack needed)."""

from __future__ import annotations

import argparse
import json

from ..errors import ConfigError
from ._common import find_file

__all__ = ["cmd_history", "cmd_resources"]


def cmd_resources(args: argparse.Namespace) -> int:
    """Every live resource claim on this machine (ports included), whoever holds it."""
    from ..resources import claims

    rows = claims()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ("type", "value", "stack", "service", "pid")
    table = [columns] + [tuple(str(r[c]) for c in columns) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """corral history [SERVICE] [--since 1h] [--json] [--db PATH]: what the history
    database kept (the `history` key of the config file names it, or --db)."""
    from ..history import format_records, parse_since, read_history, read_runs
    from ..spec import load_file

    db = args.db
    if db is None:
        config = load_file(find_file(args.file))
        if config.history is None:
            raise ConfigError(f"{config.file}: the stack keeps no history (set history, or use --db)")
        db = config.history
    since = parse_since(args.since)
    if args.runs:
        runs = read_runs(db, args.service, since)
        print(json.dumps(runs) if args.json else "\n".join(
            f"{r['service']:<20} pid {r['pid']:<8} {r['reason'] or '':<8} ready {_secs(r['ready_seconds'])}  "
            f"ran {_secs(r['run_seconds'])}  " + (f"signal {r['signal']}" if r["signal"] else
                                                  f"code {r['code']}" if r["code"] is not None else "")
            for r in runs))
        return 0
    text = format_records(read_history(db, args.service, since), args.json)
    if text:
        print(text)
    return 0


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}s"
