"""The `corral` command line (docs/cli.md).

One module per job: `_up` runs a stack in the foreground (and `check`, `graph`), `_daemon`
runs one detached (`up -d`), `_records` reads resource claims and history databases,
`_remote` talks to a running stack through its control API
(`ls`, `ps`, `logs`, `start`, `stop`, `restart`, `down`, `metrics`, and `up` attaching to
a stack that already runs). This module only parses the command line.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, CorralError, StartError

__all__ = ["main"]

# Commands users try that this version does not have: one line says so, not argparse's
# usage dump. (Container mode is the next; `corral init` was asked for by users too.)
_NOT_BUILT = {
    "init": "PID-1 / container mode is not available in this version (see docs/user-guide.md)",
}


def _cmd_up(args: argparse.Namespace) -> int:
    if args.detach and (args.abort_on_exit or args.exit_code_from is not None):
        args.parser.error("--abort-on-exit and --exit-code-from need the foreground (no -d)")
    if args.detach:
        from ._daemon import cmd_up_detached

        return cmd_up_detached(args)
    # A stack of this config file that runs already (detached, or in another shell) is
    # attached to rather than started twice.
    attached = _running_client(args.file)
    if attached is not None:
        from ._remote import attach

        return attach(attached, args.verbose)
    from ._up import cmd_up

    return cmd_up(args)


def _running_client(file: str | None):  # type: ignore[no-untyped-def]
    import os

    from ..client import connect, list_stacks
    from ._common import find_file

    path = os.path.realpath(find_file(file))
    if not any(s.get("config") == path for s in list_stacks()):
        return None
    try:
        return connect(path)
    except CorralError:
        return None  # it ended just now: start it afresh


def _lazy(module: str, name: str):  # type: ignore[no-untyped-def]
    """A command function imported when it runs, so `corral --help` stays fast."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(f"{__name__}.{module}"), name)(args))
    return run


def _target(p: argparse.ArgumentParser) -> None:
    """-f FILE / --name NAME: which running stack (default: ./corral.toml's)."""
    p.add_argument("-f", "--file",
                   help="the stack of this config file (default: corral.toml or corral.yaml here)")
    p.add_argument("--name", help="the running stack of this name")


def _parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="corral", description="Supervise a stack of local processes.")
    p.add_argument("--version", action="version", version=f"corral {__version__}")
    p.add_argument("-f", "--file", dest="global_file", metavar="FILE",
                   help="config file, for any command (as `docker compose -f FILE`)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the stack (in the foreground, or detached with -d)")
    up.add_argument("-f", "--file", help="config file (default: corral.toml or corral.yaml here)")
    up.add_argument("-d", "--detach", action="store_true",
                    help="run in the background; return once every service is ready")
    up.add_argument("-v", "--verbose", action="store_true", help="show each command as it is run")
    up.add_argument("--abort-on-exit", action="store_true",
                    help="stop the whole stack as soon as one service ends by itself, and exit with its code")
    up.add_argument("--exit-code-from", metavar="SERVICE",
                    help="exit with SERVICE's exit code (implies --abort-on-exit)")
    up.add_argument("services", nargs="*", metavar="SERVICE", help="only these (and their dependencies)")
    up.set_defaults(func=_cmd_up)
    up.set_defaults(parser=up)

    down = sub.add_parser("down", help="stop a running stack (a detached one's daemon exits)")
    _target(down)
    down.add_argument("-t", "--timeout", type=float, help="seconds to wait for the stop")
    down.set_defaults(func=_lazy("_remote", "cmd_down"))

    ls = sub.add_parser("ls", help="list this user's running stacks")
    ls.add_argument("--json", action="store_true", help="as JSON")
    ls.set_defaults(func=_lazy("_remote", "cmd_ls"))

    ps = sub.add_parser("ps", help="the services of a running stack: state, pid, ports, restarts")
    _target(ps)
    ps.add_argument("--json", action="store_true", help="as JSON")
    ps.add_argument("services", nargs="*", metavar="SERVICE", help="only these")
    ps.set_defaults(func=_lazy("_remote", "cmd_ps"))

    logs = sub.add_parser("logs", help="the log lines of a running stack's services")
    # As `docker compose logs -f`: here -f follows, and the file is --file (or `corral -f FILE logs`).
    logs.add_argument("--file", help="the stack of this config file (default: corral.toml here)")
    logs.add_argument("--name", help="the running stack of this name")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="then print new lines as they come, until Ctrl+C or the stack ends")
    logs.add_argument("-n", "--tail", type=int, metavar="N", help="the last N lines of each service")
    logs.add_argument("-t", "--timestamps", action="store_true", help="show each line's time")
    logs.add_argument("services", nargs="*", metavar="SERVICE", help="only these")
    logs.set_defaults(func=_lazy("_remote", "cmd_logs"))

    for name, what in (("start", "start services (and what they depend on); wait until ready"),
                       ("stop", "stop services (only them)"),
                       ("restart", "restart services; wait until ready")):
        act = sub.add_parser(name, help=what)
        _target(act)
        act.add_argument("-t", "--timeout", type=float, help="seconds to wait")
        act.add_argument("services", nargs="+", metavar="SERVICE")
        act.set_defaults(func=_lazy("_remote", "cmd_act"))

    metrics = sub.add_parser("metrics", help="CPU, memory, fds and processes of each service")
    _target(metrics)
    metrics.add_argument("--json", action="store_true", help="as JSON")
    metrics.set_defaults(func=_lazy("_remote", "cmd_metrics"))

    from .._dashboard import add_parser as add_dashboard

    add_dashboard(sub)  # corral dashboard: its own module (the page and the notebook view)

    check = sub.add_parser("check", help="validate a config file and print the start order")
    check.add_argument("-f", "--file")
    check.set_defaults(func=_lazy("_up", "cmd_check"))

    graph = sub.add_parser("graph", help="print the dependency graph")
    graph.add_argument("-f", "--file")
    graph.add_argument("-v", "--verbose", action="store_true", help="show commands too")
    graph.set_defaults(func=_lazy("_up", "cmd_graph"))

    resources = sub.add_parser("resources", help="list every resource claim on this machine")
    resources.add_argument("--json", action="store_true", help="as a JSON list of claims")
    resources.set_defaults(func=_lazy("_records", "cmd_resources"))

    history = sub.add_parser("history", help="show what the stack's history database kept")
    history.add_argument("service", nargs="?", metavar="SERVICE", help="only this service")
    history.add_argument("--since", help="only the last DURATION (90s, 15m, 1h, 2d)")
    history.add_argument("--json", action="store_true", help="print a JSON array")
    history.add_argument("--runs", action="store_true", help="one row per process run instead of events")
    history.add_argument("--db", help="the database (default: the config file's `history`)")
    history.add_argument("-f", "--file")
    history.set_defaults(func=_lazy("_records", "cmd_history"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if argv and argv[0] in _NOT_BUILT and argv[0] not in commands:
        sys.stderr.write(f"corral: {argv[0]}: {_NOT_BUILT[argv[0]]}\n")
        return 2
    args = parser.parse_args(argv)
    if getattr(args, "file", None) is None and args.global_file is not None:
        args.file = args.global_file
    try:
        return int(args.func(args))
    except (ConfigError, StartError, CorralError) as exc:
        sys.stderr.write(f"corral: error: {exc}\n")
        return 1
    except KeyError as exc:  # an unknown service, named by the client
        sys.stderr.write(f"corral: error: {exc.args[0] if exc.args else exc}\n")
        return 1
