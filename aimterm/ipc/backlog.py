"""What an attached client has yet to take of an instance's output, within a bound.

A watcher that reads slower than the instance writes (or not at all) must not grow the
daemon by the size of the output. Each attached stream keeps at most :data:`MAX_BACKLOG`
bytes waiting, and all of them together at most :data:`MAX_BACKLOG_TOTAL`; past either, the
waiting output is dropped and the client gets the whole screen redrawn once it catches up,
as tmux does for a slow client. What the client sees is then the instance's screen as it is,
without the output that scrolled past meanwhile.
"""

from __future__ import annotations

import asyncio

from aimterm.ipc.framing import ByteBudget

__all__ = ["MAX_BACKLOG", "MAX_BACKLOG_TOTAL", "OutputBacklog"]

#: Output waiting for one attached client before it is dropped for a redraw.
MAX_BACKLOG = 256 * 1024
#: Output waiting for all attached clients together.
MAX_BACKLOG_TOTAL = 32 * 1024 * 1024


class OutputBacklog:
    """The output one attached client has not taken yet. ``put`` is the session's output
    listener; ``take`` hands over what waits, or says the client fell behind."""

    def __init__(self, budget: ByteBudget, most: int = MAX_BACKLOG) -> None:
        self._budget = budget
        self._most = most
        self._parts: list[bytes] = []
        self._size = 0
        self._behind = False
        self._dropped = 0
        self._ready = asyncio.Event()

    def put(self, data: bytes) -> None:
        if self._behind:
            self._dropped += len(data)
            return
        if self._size + len(data) > self._most or not self._budget.take(len(data)):
            self._dropped += self._size + len(data)
            self._release()
            self._behind = True
        else:
            self._parts.append(data)
            self._size += len(data)
        self._ready.set()

    def empty(self) -> bool:
        return not self._parts and not self._behind

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for something to take; True if there is."""
        if self.empty():
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                return False
        return not self.empty()

    def take(self) -> tuple[bytes, int] | None:
        """``(output, 0)``, or ``(b"", dropped)`` when the client fell behind and ``dropped``
        bytes were thrown away (the caller sends a redraw); None when nothing waits."""
        self._ready.clear()
        if self._behind:
            dropped, self._behind, self._dropped = self._dropped, False, 0
            return b"", dropped
        if not self._parts:
            return None
        data = b"".join(self._parts)
        self._release()
        return data, 0

    def close(self) -> None:
        self._release()

    def _release(self) -> None:
        self._budget.give(self._size)
        self._parts.clear()
        self._size = 0
