"""Reading a file a tool appends to, a little at a time: what every record reader needs.

:class:`FileTail` hands out the complete lines added since the last call, reading at most
``chunk`` bytes a call (a huge session is caught up with over a few polls), keeping a partial
last line (the tool may be in the middle of writing it) for the next call, skipping a line
longer than ``max_line`` (a tool result holding a whole file, never a reply), and starting
over when the file was replaced or truncated (smaller than what was read, or another inode).
It never raises for what it reads: a file it cannot open is ``None``.

:func:`iso_timestamp` reads the ISO-8601 times the tools stamp their entries with.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["MAX_LINE", "READ_CHUNK", "FileTail", "iso_timestamp"]

#: Bytes read per call.
READ_CHUNK = 8 << 20
#: A longer line is skipped.
MAX_LINE = 16 << 20


class FileTail:
    """The lines appended to ``path`` since the last :meth:`read`."""

    def __init__(self, path: str | os.PathLike[str], offset: int = 0, *,
                 chunk: int | None = None, max_line: int | None = None,
                 keep_blank: bool = False) -> None:
        self.path = Path(path)
        self.offset = offset
        # (The module's bounds, looked up now: a test may lower them.)
        self.chunk = chunk or READ_CHUNK
        self.max_line = max_line or MAX_LINE
        #: Hand out blank lines too (a markdown record: they part paragraphs).
        self.keep_blank = keep_blank
        #: Whether more was there than the last call read (call again to catch up).
        self.behind = False
        self._partial = b""
        self._skipping = False  # inside a line longer than max_line
        self._inode: int | None = None

    @classmethod
    def at_end(cls, path: str | os.PathLike[str], **kwargs: Any) -> FileTail:
        """A tail that hands out only what is appended from now on."""
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0
        return cls(path, size, **kwargs)

    def read(self) -> tuple[list[bytes], bool] | None:
        """``(new complete lines, whether the file restarted and was read from its start)``,
        blank lines left out unless ``keep_blank``; None when the file cannot be read
        (yet)."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                restarted = st.st_size < self.offset or self._inode not in (None, st.st_ino)
                self._inode = st.st_ino
                if restarted:
                    self.offset, self._partial, self._skipping = 0, b"", False
                f.seek(self.offset)
                data = f.read(self.chunk)
        except OSError:
            return None
        self.offset += len(data)
        self.behind = self.offset < st.st_size
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        if self._skipping and chunks:
            chunks.pop(0)  # the end of the over-long line
            self._skipping = False
        if len(self._partial) > self.max_line:
            self._partial, self._skipping = b"", True
        return [c for c in chunks if (self.keep_blank or c.strip())
                and len(c) <= self.max_line], restarted

    @property
    def at_line_end(self) -> bool:
        """Whether the last read ended at the end of a line (no partial line held)."""
        return not self._partial and not self._skipping


def iso_timestamp(value: Any) -> float | None:
    """An ISO-8601 time (``2026-12-06T21:40:58.123Z``) as a POSIX timestamp; None for
    anything else."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
