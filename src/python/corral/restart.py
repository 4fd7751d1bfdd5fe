"""The restart policy of a service.

``restart="on-failure"`` is enough for most services; `Restart` adds the knobs of the
backoff. The delay before a restart starts at `backoff` and doubles on each consecutive
restart up to `max_backoff`, spread by +-`jitter` so that many services crashing together
do not come back in lockstep. A run that lasts `reset_after` seconds counts as healthy
again: the delay and the restart count start over. After `max_restarts` restarts in a row
the service is ``failed``.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from .errors import ConfigError, _integer, _keyed, _number, _show, _suggest

__all__ = ["POLICIES", "Restart"]

#: The policies: never restart, restart after a non-zero exit or a signal, restart always.
POLICIES = ("no", "on-failure", "always")


@dataclass(frozen=True)
class Restart:
    """A restart policy and its backoff; values are validated when it is created."""

    policy: str = "no"
    _: KW_ONLY
    backoff: float = 0.1
    max_backoff: float = 30.0
    max_restarts: int | None = None
    reset_after: float = 10.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        _keyed("policy", _policy, self.policy)
        self._set("backoff", _keyed("backoff", _number, self.backoff, strict=False))
        self._set("max_backoff", _keyed("max_backoff", _number, self.max_backoff, strict=False))
        if self.max_backoff < self.backoff:
            raise ConfigError(
                f"must be >= backoff ({self.backoff:g}), got {self.max_backoff:g}",
                key="max_backoff",
            )
        if self.max_restarts is not None:
            count = _keyed("max_restarts", _integer, self.max_restarts, minimum=0)
            self._set("max_restarts", count)
        self._set("reset_after", _keyed("reset_after", _number, self.reset_after, strict=False))
        self._set("jitter", _keyed("jitter", _jitter, self.jitter))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)


def _policy(value: object) -> str:
    if isinstance(value, str) and value in POLICIES:
        return value
    hint = _suggest(value, POLICIES) if isinstance(value, str) else ""
    choices = ", ".join(repr(p) for p in POLICIES)
    raise ConfigError(f"expected one of {choices}, got {_show(value)}{hint}")


def _jitter(value: object) -> float:
    result = _number(value, strict=False)
    if result >= 1.0:
        raise ConfigError(f"expected a fraction in [0, 1), got {_show(value)}")
    return result
