"""Drivers for the peers: supervisord, s6 and runit, each run with its own configuration in
a private temporary directory and driven through its own control interface.

Every driver starts its daemon in a new session (so the daemon and its helpers are one
process group that we own) and tears it down gracefully (services down, then the daemon),
then SIGKILLs that process group if anything is left. The services themselves run a copy of
/bin/sleep (or of the helper) placed in the bench's private directory, so run.py can find
any leftover exactly by its executable path.

How "ready"/"stopped" is observed:
  supervisord  XML-RPC over its unix socket: startAllProcesses(wait=True) / stopAllProcesses
               (wait=True) return when supervisord itself reports every process RUNNING /
               STOPPED (checked once more with getAllProcessInfo).
  s6, runit    the control fifo of each service (supervise/control: 'u' / 'd', exactly what
               s6-svc and `sv` write; one s6-svc process per service would measure process
               spawning), then the binary/text status files polled every 10 ms until every
               service reports up with a pid / down.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
import xmlrpc.client
from pathlib import Path

POLL = 0.010  # seconds between two status polls

# ---- helpers ----------------------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process, seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def _rollup_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(POLL)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host):
        path = self._path

        class Conn(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)

        return Conn("localhost")


class Daemon:
    """Common part: a daemon started in its own session, torn down by process group."""

    name = "?"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen | None = None

    def _launch(self, argv: list[str]) -> None:
        self.log = open(self.root / "daemon.out", "wb")  # noqa: SIM115 - closed at teardown
        self.proc = subprocess.Popen(
            argv,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    exclude = "/nonexistent/"  # run.py: the bench's private bin directory (the services)

    def processes(self) -> list[int]:
        """The supervisor's own processes: the daemon and its descendants, minus the services."""
        if self.proc is None:
            return []
        out = []
        for pid in _descendants(self.proc.pid):
            try:
                if os.readlink(f"/proc/{pid}/exe").startswith(self.exclude):
                    continue
            except OSError:
                continue
            out.append(pid)
        return out

    def footprint(self) -> dict:
        pids = self.processes()
        return {
            "processes": len(pids),
            "cpu": sum(_proc_cpu(p) for p in pids),
            "rss_kb": sum(_rollup_kb(p, "Rss") for p in pids),
            "pss_kb": sum(_rollup_kb(p, "Pss") for p in pids),
        }

    def tree(self) -> list[int]:
        """The daemon and everything below it now (to be waited for at teardown)."""
        return _descendants(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def _kill_group(self, tree: list[int]) -> None:
        """Waits until every process of `tree` (taken before the teardown began) has exited,
        then SIGKILLs what is still there. Waiting matters: runsvdir, for one, exits at once
        and leaves its runsv processes (sessions of their own) to die over the next second,
        which would load the machine while the next subject is measured."""
        if self.proc is None:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in tree):
            time.sleep(POLL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in tree:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        while any(_alive(p) for p in tree) and time.monotonic() < deadline + 5:
            time.sleep(POLL)
        self.proc = None
        self.log.close()


# ---- supervisord --------------------------------------------------------------------------------


class Supervisord(Daemon):
    name = "supervisord"

    @staticmethod
    def available() -> str | None:
        return (
            None if shutil.which("supervisord") else "supervisord not installed (apt-get install supervisor)"
        )

    def __init__(
        self,
        root: Path,
        programs: dict[str, list[str]],
        startsecs: int = 0,
        autorestart: bool = False,
        logfile: str | None = None,
    ) -> None:
        super().__init__(root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        sock = root / "supervisor.sock"
        conf = [
            "[unix_http_server]",
            f"file={sock}",
            "[supervisord]",
            f"logfile={root}/supervisord.log",
            f"pidfile={root}/supervisord.pid",
            f"childlogdir={root}/logs",
            "nodaemon=true",
            "minfds=8192",
            "minprocs=4096",
            "loglevel=warn",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{sock}",
        ]
        for name, argv in programs.items():
            conf += [
                f"[program:{name}]",
                "command=" + " ".join(argv),
                "autostart=false",
                f"autorestart={'true' if autorestart else 'false'}",
                f"startsecs={startsecs}",
                "startretries=1000000",
                "stopwaitsecs=10",
            ]
            if logfile:
                conf += [f"stdout_logfile={logfile}", "stdout_logfile_maxbytes=0", "stdout_logfile_backups=0"]
        (root / "supervisord.conf").write_text("\n".join(conf) + "\n")
        self.sock = str(sock)
        self.n = len(programs)
        self.logfile = logfile

    def rpc(self):
        return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(self.sock)).supervisor

    def up(self) -> None:
        self._launch(["supervisord", "-c", str(self.root / "supervisord.conf")])

        def answers() -> bool:
            try:
                return self.rpc().getState()["statename"] == "RUNNING"
            except (OSError, xmlrpc.client.Error):
                return False

        _wait_until(answers, 30, "supervisord did not come up")

    def start_all(self) -> float:
        rpc = self.rpc()
        t0 = time.perf_counter()
        rpc.startAllProcesses(True)
        t1 = time.perf_counter()
        states = {p["statename"] for p in rpc.getAllProcessInfo()}
        assert states == {"RUNNING"}, states
        return t1 - t0

    def stop_all(self) -> float:
        rpc = self.rpc()
        t0 = time.perf_counter()
        rpc.stopAllProcesses(True)
        t1 = time.perf_counter()
        states = {p["statename"] for p in rpc.getAllProcessInfo()}
        assert states <= {"STOPPED", "EXITED"}, states
        return t1 - t0

    def start_one(self, name: str) -> None:
        self.rpc().startProcess(name, False)

    def flood(self, name: str, size: int) -> float:
        """Starts `name` and waits until supervisord has written `size` bytes of its stdout."""
        log = Path(self.logfile)
        t0 = time.perf_counter()
        self.rpc().startProcess(name, False)
        _wait_until(lambda: log.exists() and log.stat().st_size >= size, 300, "supervisord: log incomplete")
        return time.perf_counter() - t0

    def info(self, name: str) -> dict:
        return self.rpc().getProcessInfo(name)

    def status_api(self) -> float:
        rpc = self.rpc()
        t0 = time.perf_counter()
        rows = rpc.getAllProcessInfo()
        assert len(rows) == self.n
        return time.perf_counter() - t0

    def status_cli(self) -> float:
        t0 = time.perf_counter()
        subprocess.run(
            ["supervisorctl", "-c", str(self.root / "supervisord.conf"), "status"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return time.perf_counter() - t0

    def down(self) -> None:
        if self.proc is None:
            return
        tree = self.tree()
        try:
            self.rpc().stopAllProcesses(True)
            self.rpc().shutdown()
            self.proc.wait(timeout=30)
        except (OSError, xmlrpc.client.Error, subprocess.TimeoutExpired):
            pass
        self._kill_group(tree)


# ---- s6 and runit: service directories with control fifos ------------------------------------------


class _ServiceDirs(Daemon):
    """Service directories `root/scan/NAME/run`, each starting down (a `down` file)."""

    control = "supervise/control"

    def __init__(self, root: Path, programs: dict[str, list[str]], logged: bool = False) -> None:
        super().__init__(root)
        self.logdir = root / "logs"
        self.scan = root / "scan"
        self.scan.mkdir(parents=True, exist_ok=True)
        self.dirs = {}
        for name, argv in programs.items():
            d = self.scan / name
            d.mkdir()
            run = d / "run"
            run.write_text("#!/bin/sh\nexec " + " ".join(argv) + "\n")
            run.chmod(0o755)
            (d / "down").touch()
            self.dirs[name] = d
            if logged:  # the supervisor's own logger, fed by a pipe it sets up
                (d / "log").mkdir()
                out = self.logdir / name
                out.mkdir(parents=True)
                self.logger_config(out)
                (d / "log" / "run").write_text("#!/bin/sh\nexec " + " ".join(self.logger(out)) + "\n")
                (d / "log" / "run").chmod(0o755)

    def _send(self, dirs, cmd: bytes) -> None:
        for d in dirs:
            fd = os.open(d / self.control, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, cmd)
            finally:
                os.close(fd)

    def pid(self, d: Path) -> int:
        raise NotImplementedError

    def _until(self, want_up: bool, timeout: float = 120) -> None:
        pending = list(self.dirs.values())
        deadline = time.monotonic() + timeout
        while True:
            pending = [d for d in pending if (self.pid(d) > 0) != want_up]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {len(pending)} services not {'up' if want_up else 'down'}")
            time.sleep(POLL)

    def start_all(self) -> float:
        t0 = time.perf_counter()
        self._send(self.dirs.values(), b"u")
        self._until(True)
        return time.perf_counter() - t0

    def stop_all(self) -> float:
        t0 = time.perf_counter()
        self._send(self.dirs.values(), b"d")
        self._until(False)
        return time.perf_counter() - t0

    def start_one(self, name: str) -> None:
        self._send([self.dirs[name]], b"u")

    def logger_config(self, out: Path) -> None:
        pass

    def flood(self, name: str, size: int) -> float:
        """Starts `name` once (no restart) and waits until its logger has written `size` bytes."""
        current = self.logdir / name / "current"
        t0 = time.perf_counter()
        self._send([self.dirs[name]], b"o")
        _wait_until(
            lambda: current.exists() and current.stat().st_size >= size, 300, f"{self.name}: log incomplete"
        )
        return time.perf_counter() - t0

    def status_api(self) -> float:
        t0 = time.perf_counter()
        for d in self.dirs.values():
            self.pid(d)
        return time.perf_counter() - t0


class S6(_ServiceDirs):
    name = "s6"

    @staticmethod
    def logger(out: Path) -> list[str]:
        return ["s6-log", "s268435455", str(out)]  # no timestamps; rotate only past 256 MiB

    @staticmethod
    def available() -> str | None:
        return None if shutil.which("s6-svscan") else "s6 not installed (apt-get install s6)"

    def pid(self, d: Path) -> int:
        # supervise/status: tain stamp (12), ready stamp (12), pid (8, big-endian), ...
        try:
            data = (d / "supervise" / "status").read_bytes()
        except FileNotFoundError:
            return 0
        return int.from_bytes(data[24:32], "big") if len(data) >= 35 else 0

    def up(self) -> None:
        self._launch(["s6-svscan", "-c", str(4 * len(self.dirs) + 64), str(self.scan)])
        _wait_until(
            lambda: all((d / "supervise" / "status").exists() for d in self.dirs.values()),
            60,
            "s6-supervise did not start",
        )

    def status_cli(self) -> float:
        """One s6-svstat per service: s6 has no aggregate status command."""
        t0 = time.perf_counter()
        for d in self.dirs.values():
            subprocess.run(
                ["s6-svstat", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
            )
        return time.perf_counter() - t0

    def down(self) -> None:
        if self.proc is None:
            return
        tree = self.tree()
        try:
            self._send(self.dirs.values(), b"d")
            self._until(False, timeout=30)
            self._send(self.dirs.values(), b"x")  # s6-supervise exits once its service is down
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (OSError, TimeoutError, subprocess.TimeoutExpired):
            pass
        self._kill_group(tree)


class Runit(_ServiceDirs):
    name = "runit"

    @staticmethod
    def logger(out: Path) -> list[str]:
        return ["svlogd", str(out)]

    def logger_config(self, out: Path) -> None:
        (out / "config").write_text("s0\n")  # no rotation

    @staticmethod
    def available() -> str | None:
        return None if shutil.which("runsvdir") else "runit not installed (apt-get install runit)"

    def pid(self, d: Path) -> int:
        # supervise/status: tai64n stamp (12), pid (4, little-endian), paused, want, term, run
        try:
            data = (d / "supervise" / "status").read_bytes()
        except FileNotFoundError:
            return 0
        return int.from_bytes(data[12:16], "little") if len(data) >= 20 else 0

    def up(self) -> None:
        self._launch(["runsvdir", "-P", str(self.scan)])
        _wait_until(
            lambda: all((d / "supervise" / "ok").exists() for d in self.dirs.values()),
            60,
            "runsv did not start",
        )

    def status_cli(self) -> float:
        t0 = time.perf_counter()
        subprocess.run(
            ["sv", "status", *map(str, self.dirs.values())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return time.perf_counter() - t0

    def down(self) -> None:
        if self.proc is None:
            return
        tree = self.tree()
        try:
            self._send(self.dirs.values(), b"d")
            self._until(False, timeout=30)
            self._send(self.dirs.values(), b"x")  # runsv exits once its service is down
            self.proc.send_signal(signal.SIGHUP)
            self.proc.wait(timeout=10)
        except (OSError, TimeoutError, subprocess.TimeoutExpired):
            pass
        self._kill_group(tree)


PEERS = {"supervisord": Supervisord, "s6": S6, "runit": Runit}
