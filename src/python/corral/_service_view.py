"""What a service's status row says, as attributes: shared by a local `Service` and a
`RemoteService` (a stack in another process), so both read the same way. Every attribute
reads the row afresh, so it is always current."""

from __future__ import annotations

from typing import Any

from .errors import CorralError


class ServiceView:
    name: str

    def status(self) -> dict[str, Any]:
        """The service's status row (name, state, pid, restarts, exit_code, ports, ...)."""
        raise NotImplementedError

    @property
    def state(self) -> str:
        return str(self.status()["state"])

    @property
    def pid(self) -> int | None:
        return self.status()["pid"]  # type: ignore[no-any-return]

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.status()["ports"])

    @property
    def port(self) -> int:
        """The service's only port (an error when it has none or several)."""
        ports = self.ports
        if len(ports) != 1:
            raise CorralError(f"service '{self.name}' has {len(ports)} ports; use .ports[name]")
        return next(iter(ports.values()))

    @property
    def resources(self) -> dict[str, list[str]]:
        """The values this service holds, by resource name (empty when it holds none)."""
        return {k: list(v) for k, v in self.status().get("resources", {}).items()}

    @property
    def restarts(self) -> int:
        return int(self.status()["restarts"])

    @property
    def exit_code(self) -> int | None:
        return self.status()["exit_code"]  # type: ignore[no-any-return]

    @property
    def reason(self) -> str:
        """Why the service failed, when it did."""
        return str(self.status()["reason"])
