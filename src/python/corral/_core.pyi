"""
corral's native engine (private; use the `corral` package)
"""
from __future__ import annotations
import collections.abc
import typing
__all__: list[str] = ['CheckSpec', 'ControlServer', 'Engine', 'PendingStart', 'ResourceClaimSpec', 'ResourceTypeSpec', 'RestartSpec', 'ServiceSpec', 'Stack', 'StackSpec', 'check_regex', 'claims', 'levels', 'note_clone_begun', 'note_clone_done', 'note_clone_failed', 'private_dir', 'runtime_dir', 'validate']
class CheckSpec:
    kind: str
    path: str
    pattern: str
    port: str
    def __init__(self) -> None:
        ...
    @property
    def command(self) -> list[str]:
        ...
    @command.setter
    def command(self, arg0: collections.abc.Sequence[str]) -> None:
        ...
    @property
    def interval(self) -> float:
        ...
    @interval.setter
    def interval(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def retries(self) -> int:
        ...
    @retries.setter
    def retries(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def start_timeout(self) -> float:
        ...
    @start_timeout.setter
    def start_timeout(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def status(self) -> int:
        ...
    @status.setter
    def status(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def timeout(self) -> float:
        ...
    @timeout.setter
    def timeout(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
class RestartSpec:
    policy: str
    def __init__(self) -> None:
        ...
    @property
    def backoff(self) -> float:
        ...
    @backoff.setter
    def backoff(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def jitter(self) -> float:
        ...
    @jitter.setter
    def jitter(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def max_backoff(self) -> float:
        ...
    @max_backoff.setter
    def max_backoff(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def max_restarts(self) -> int:
        ...
    @max_restarts.setter
    def max_restarts(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def reset_after(self) -> float:
        ...
    @reset_after.setter
    def reset_after(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
class ResourceTypeSpec:
    check: str
    env: str
    name: str
    def __init__(self) -> None:
        ...
    @property
    def range(self) -> tuple[int, int] | None:
        ...
    @range.setter
    def range(self, arg1: tuple[typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex] | None) -> None:
        ...
    @property
    def timeout(self) -> float:
        ...
    @timeout.setter
    def timeout(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def values(self) -> list[str]:
        ...
    @values.setter
    def values(self, arg0: collections.abc.Sequence[str]) -> None:
        ...
class ResourceClaimSpec:
    name: str
    wait: bool
    def __init__(self) -> None:
        ...
    @property
    def count(self) -> int:
        ...
    @count.setter
    def count(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def values(self) -> list[str]:
        ...
    @values.setter
    def values(self, arg0: collections.abc.Sequence[str]) -> None:
        ...
class ServiceSpec:
    cwd: str
    health: CheckSpec | None
    name: str
    ready: CheckSpec | None
    restart: RestartSpec
    def __init__(self) -> None:
        ...
    @property
    def argv(self) -> list[str]:
        ...
    @argv.setter
    def argv(self, arg0: collections.abc.Sequence[str]) -> None:
        ...
    @property
    def depends_on(self) -> list[tuple[str, str]]:
        ...
    @depends_on.setter
    def depends_on(self, arg1: collections.abc.Sequence[tuple[str, str]]) -> None:
        ...
    @property
    def env(self) -> dict[str, str]:
        ...
    @env.setter
    def env(self, arg0: collections.abc.Mapping[str, str]) -> None:
        ...
    @property
    def listen(self) -> list[str]:
        ...
    @listen.setter
    def listen(self, arg0: collections.abc.Sequence[str]) -> None:
        ...
    @property
    def log_bytes(self) -> int:
        ...
    @log_bytes.setter
    def log_bytes(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def log_lines(self) -> int:
        ...
    @log_lines.setter
    def log_lines(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def pinned_ports(self) -> dict[str, int]:
        ...
    @pinned_ports.setter
    def pinned_ports(self, arg0: collections.abc.Mapping[str, typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    @property
    def ports(self) -> list[str]:
        ...
    @ports.setter
    def ports(self, arg0: collections.abc.Sequence[str]) -> None:
        ...
    @property
    def resources(self) -> list[ResourceClaimSpec]:
        ...
    @resources.setter
    def resources(self, arg0: collections.abc.Sequence[ResourceClaimSpec]) -> None:
        ...
    @property
    def stop_signal(self) -> int:
        ...
    @stop_signal.setter
    def stop_signal(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def stop_timeout(self) -> float:
        ...
    @stop_timeout.setter
    def stop_timeout(self, arg0: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
class StackSpec:
    log_dir: str
    name: str
    def __init__(self) -> None:
        ...
    @property
    def base_env(self) -> dict[str, str]:
        ...
    @base_env.setter
    def base_env(self, arg0: collections.abc.Mapping[str, str]) -> None:
        ...
    @property
    def log_keep(self) -> int:
        ...
    @log_keep.setter
    def log_keep(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def log_max_size(self) -> int:
        ...
    @log_max_size.setter
    def log_max_size(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @property
    def resource_types(self) -> list[ResourceTypeSpec]:
        ...
    @resource_types.setter
    def resource_types(self, arg0: collections.abc.Sequence[ResourceTypeSpec]) -> None:
        ...
    @property
    def services(self) -> list[ServiceSpec]:
        ...
    @services.setter
    def services(self, arg0: collections.abc.Sequence[ServiceSpec]) -> None:
        ...
class PendingStart:
    def wait(self, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> tuple[bool, str, str] | None:
        ...
class Stack:
    def begin_start(self, arg0: collections.abc.Sequence[str]) -> PendingStart:
        ...
    def close(self, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> tuple[bool, str, str] | None:
        ...
    def configure_metrics(self, interval: typing.SupportsFloat | typing.SupportsIndex, pss: bool = False) -> None:
        """
        Samples every `interval` seconds (0: off); `pss` adds PSS.
        """
    def counters(self) -> list:
        """
        Counters and histograms per service.
        """
    def dependencies(self, arg0: str) -> list[tuple[str, str]]:
        ...
    def drain_history(self) -> tuple[list, int]:
        """
        (records, lost): (kind, time, service, state, reason, pid, code, signal, seconds) tuples.
        """
    def enable_history(self, capacity: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Buffers history records from now on, at most `capacity`.
        """
    def event_columns(self, timeout: typing.SupportsFloat | typing.SupportsIndex = 0.0, max: typing.SupportsInt | typing.SupportsIndex = 1048576) -> tuple:
        ...
    def events(self, timeout: typing.SupportsFloat | typing.SupportsIndex = 0.0, max: typing.SupportsInt | typing.SupportsIndex = 4096) -> list:
        ...
    def levels(self) -> list[list[str]]:
        ...
    def logs(self, name: str, tail: typing.SupportsInt | typing.SupportsIndex = -1) -> list:
        ...
    def metrics_now(self) -> list:
        """
        The latest sample of each sampled service (read now when the interval is 0).
        """
    def note_manual_restart(self, name: str) -> None:
        """
        Counts a user-requested restart.
        """
    def prometheus(self) -> str:
        ...
    def sample(self) -> list:
        ...
    def sampler_cost(self) -> tuple[int, float, int]:
        """
        (ticks, cpu seconds, processes read) of the sampler for this stack.
        """
    def samples(self, service: str = '', since: typing.SupportsFloat | typing.SupportsIndex = 0.0) -> list:
        """
        Raw samples since `since` (wall clock), oldest first.
        """
    def service_names(self) -> list[str]:
        ...
    def service_status(self, arg0: str) -> dict:
        ...
    def signal(self, arg0: str, arg1: typing.SupportsInt | typing.SupportsIndex) -> bool:
        ...
    def start(self, names: collections.abc.Sequence[str], timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> tuple[bool, str, str] | None:
        ...
    def status(self) -> list:
        ...
    def stop(self, names: collections.abc.Sequence[str], timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> tuple[bool, str, str] | None:
        ...
    def subscribe(self, lossless: bool = False) -> None:
        ...
    def wait_log(self, name: str, regex: str, from_seq: typing.SupportsInt | typing.SupportsIndex = 0, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> tuple[bool, str, str] | None:
        ...
    def wait_state(self, name: str, state: str, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> tuple[bool, str, str] | None:
        ...
    @property
    def name(self) -> str:
        ...
class Engine:
    def __init__(self, watcher: str = '') -> None:
        ...
    def abandon_after_fork(self) -> None:
        ...
    def create_stack(self, arg0: StackSpec) -> Stack:
        ...
    def shutdown(self) -> None:
        ...
class ControlServer:
    def __init__(self, stack: Stack, unix_path: str = '', *, tcp: bool = False, tcp_host: str = '127.0.0.1', tcp_port: typing.SupportsInt | typing.SupportsIndex = 0, token: str = '', openapi: str = '', static_root: str = '') -> None:
        ...
    def login_url(self) -> str:
        """
        A one-time browser login link (TCP only): opening it sets the session cookie.
        """
    def set_document(self, name: str, json: str) -> None:
        """
        Replaces a document the server serves: "runs" (GET /v1/runs), a JSON object.
        """
    def stop(self) -> None:
        ...
    def wait_stop_request(self, timeout: typing.SupportsFloat | typing.SupportsIndex | None = None) -> bool:
        ...
    @property
    def stop_requests(self) -> int:
        ...
    @property
    def tcp_port(self) -> int:
        ...
    @property
    def unix_path(self) -> str:
        ...
def _bench_claims(type: str, first: typing.SupportsInt | typing.SupportsIndex, last: typing.SupportsInt | typing.SupportsIndex, count: typing.SupportsInt | typing.SupportsIndex) -> list[float]:
    ...
def check_regex(pattern: str) -> None:
    """
    Raise ConfigError unless `pattern` is a valid ECMAScript regex.
    """
def claims() -> list:
    """
    Every live resource claim on this machine (this user's runtime directory).
    """
def levels(spec: StackSpec) -> list[list[str]]:
    """
    The start order by level; raises ConfigError like validate().
    """
def note_clone_begun() -> None:
    ...
def note_clone_done() -> None:
    ...
def note_clone_failed() -> None:
    ...
def private_dir(path: str) -> str:
    """
    Creates `path` 0700 if missing and checks it like the runtime directory.
    """
def runtime_dir() -> str:
    """
    corral's per-user runtime directory, created private (0700, ours, not a symlink).
    """
def validate(spec: StackSpec) -> None:
    """
    Raise ConfigError if the stack spec is invalid.
    """
