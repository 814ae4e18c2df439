"""Reading newline-framed messages off a connection, within bounds for every connection at once.

One line may be at most ``MAX_LINE`` bytes; on top of that, the bytes of unfinished lines held
for *all* clients together come out of one :class:`ByteBudget`, so many clients each holding
a big half-sent line cannot grow the daemon past it. A connection whose next chunk does not fit
the budget is refused (:class:`~aimterm.errors.LimitExceeded`) and closed, and the others go
on.

The reader pulls fixed-size chunks and scans each byte once, so a line costs time linear in
its length however it is split.
"""

from __future__ import annotations

import asyncio

from aimterm.errors import LimitExceeded, ProtocolError

__all__ = ["MAX_BUFFERED", "READ_CHUNK", "ByteBudget", "LineReader"]

#: Bytes of unfinished messages the server holds for all its connections together: three
#: lines of the largest size at once.
MAX_BUFFERED = 48 * 1024 * 1024
#: Bytes asked of the socket at a time. Kept small so the transport stops reading (and the
#: kernel pushes back on the client) before much more than this waits unaccounted.
READ_CHUNK = 64 * 1024


class ByteBudget:
    """Bytes that many holders may hold together (all connections' unfinished lines, all
    watchers' waiting output). Used on the loop thread only."""

    def __init__(self, most: int = MAX_BUFFERED) -> None:
        self.most = most
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.most:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class LineReader:
    """Complete lines from ``reader``, each at most ``max_line`` bytes (newline included).

    ``next_line()`` returns a line ending in ``\\n``, or ``None`` at end of input (a partial
    line left by a client that went away is dropped). It raises :class:`ProtocolError` for an
    oversized line and :class:`LimitExceeded` when the budget is spent: the rest of the input
    cannot be told from the next message then, so the caller answers once and hangs up.
    ``close()`` gives the held bytes back."""

    def __init__(self, reader: asyncio.StreamReader, budget: ByteBudget, max_line: int) -> None:
        self._reader = reader
        self._budget = budget
        self._max_line = max_line
        self._buf = bytearray()
        self._start = 0  # where the next line begins in _buf
        self._scanned = 0  # _buf[_start:_scanned] holds no newline

    @property
    def held(self) -> int:
        return len(self._buf)

    async def next_line(self) -> bytes | None:
        while True:
            nl = self._buf.find(b"\n", self._scanned)
            end = nl + 1 if nl >= 0 else len(self._buf)
            if end - self._start > self._max_line:
                raise ProtocolError(f"line longer than {self._max_line} bytes; "
                                    "closing the connection")
            if nl >= 0:
                line = bytes(self._buf[self._start:nl + 1])
                self._start = self._scanned = nl + 1
                if self._start * 2 > len(self._buf):
                    self._compact()
                return line
            self._scanned = len(self._buf)
            chunk = await self._reader.read(READ_CHUNK)
            if not chunk:
                return None
            if not self._budget.take(len(chunk)):
                raise LimitExceeded(
                    "bytes of unfinished messages held for all clients",
                    self._budget.used + len(chunk), self._budget.most,
                    "send whole lines; closing this connection")
            self._buf += chunk

    def _compact(self) -> None:
        del self._buf[:self._start]
        self._budget.give(self._start)
        self._scanned -= self._start
        self._start = 0

    def close(self) -> None:
        self._budget.give(len(self._buf))
        self._buf = bytearray()
        self._start = self._scanned = 0
