"""A running Stack's control API: serving it, saying where it is, and stop requests.

Every running stack serves its API on a Unix socket (and on loopback TCP with a token when
asked: `Stack(api_tcp=True)`, `serve_api()`, the dashboard). The server and the files that
announce it are `_api`'s; this module is the Stack's side of it: when a server starts, that
it is replaced (not doubled) when TCP is turned on later, and that it stops with the stack
(or when the stack is collected without being closed).
"""

from __future__ import annotations

import weakref
from typing import Any

from . import _api
from .errors import CorralError

__all__ = ["ControlApi"]


class ControlApi:
    """The control server of one Stack, or None in `served` while it has none. The Stack
    calls `serve_tcp` under its creation lock, so two callers never start two servers."""

    def __init__(self) -> None:
        self.served: _api.Served | None = None

    def start(self, owner: object, handle: Any, name: str | None, file: str | None, *, tcp: bool) -> None:
        """Serves the control API of a stack that has just started; the stack runs without
        it rather than not at all (a warning says why: an unsafe runtime directory, say)."""
        try:
            served = _api.serve(handle, name, file, tcp=tcp, tcp_port=0)
        except CorralError as exc:
            import warnings

            # stacklevel: this method, Stack._serve_api_now, Stack._core, the Stack method the
            # user called, the user.
            warnings.warn(f"corral: stack '{name or 'corral'}' runs without its control API: {exc}",
                          RuntimeWarning, stacklevel=5)
            return
        self._keep(owner, served)

    def serve_tcp(self, owner: object, handle: Any, name: str | None, file: str | None,
                  port: int) -> dict[str, str | None]:
        """`Stack.serve_api()`: a server that also listens on loopback TCP (a Unix-only one
        is replaced by it, so there is still one socket and one info file)."""
        if self.served is None or self.served.url is None:
            self.close()
            self.served = None
            self._keep(owner, _api.serve(handle, name, file, tcp=True, tcp_port=port))
        s = self.served
        assert s is not None
        return {"socket": s.socket, "url": s.url, "token_file": s.token_file}

    def where(self) -> dict[str, str | None] | None:
        """`Stack.api`: ``{"socket", "url", "token_file", "info"}``, None when not serving."""
        s = self.served
        if s is None or s.closed:
            return None
        return {"socket": s.socket, "url": s.url, "token_file": s.token_file, "info": s.info}

    def wait_stop_request(self, timeout: float | None) -> bool:
        """True once a client asked the stack to stop; False at the timeout or without a
        server."""
        s = self.served
        return bool(s is not None and not s.closed and s.server.wait_stop_request(timeout))

    def close(self) -> None:
        if self.served is not None:
            self.served.close()

    def _keep(self, owner: object, served: _api.Served) -> None:
        self.served = served
        # Tied to the Stack, not to this object: a stack dropped without close() stops its
        # server at the same moment as its processes.
        weakref.finalize(owner, served.close)
