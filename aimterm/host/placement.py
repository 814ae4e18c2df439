"""Session hosts for a pool: how many, and which one takes a new instance.

:class:`SessionHosts` is a session factory (``Pool(sessions=…)``'s signature): each instance
it makes runs in one of its hosts, the one with the fewest instances, so a fleet is spread
evenly over the cores. Hosts start on first use and end with :meth:`close`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from aimterm.adapter.spec import AdapterSpec
from aimterm.host.link import HostLink, default_host_count
from aimterm.host.proxy import HostedSession
from aimterm.term.loop import IOLoop

__all__ = ["SessionHosts"]


class SessionHosts:
    """``count`` session host processes (default: one per core) and the sessions on them."""

    def __init__(self, count: int | None = None, *, loop: IOLoop | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.count = count if count is not None else default_host_count()
        if self.count < 1:
            raise ValueError("a fleet needs at least one session host")
        self._ioloop = loop or IOLoop.shared()
        self.links = [HostLink(i, self._ioloop, env=env) for i in range(self.count)]
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start every host now (they start on first use otherwise): a host's start-up is
        an interpreter's, and a fleet's first instances should not wait for it."""
        for link in self.links:
            link.ensure()

    def __call__(self, adapter: AdapterSpec | str, *, loop: IOLoop | None = None,
                 **kwargs: Any) -> HostedSession:
        with self._lock:
            link = min(self.links, key=lambda lk: (len(lk.sessions), lk.index))
            return HostedSession(link, adapter, loop=loop or self._ioloop, **kwargs)

    def pids(self) -> list[int]:
        return [link.pid for link in self.links if link.alive() and link.pid is not None]

    def close(self, timeout: float = 5.0) -> None:
        for link in self.links:
            link.close(timeout)
