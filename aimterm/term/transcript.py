"""Transcripts as asciicast v2 files (https://docs.asciinema.org/manual/asciicast/v2/).

A transcript holds the terminal output (``o``), what was typed (``i``), size changes (``r``)
and markers (``m``, e.g. aimterm's state changes), so ``asciinema play`` can replay a session
and ``aimterm adapter explain`` can run it through the detector again.
"""

from __future__ import annotations

import codecs
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aimterm.statedir import open_private_file, private_dirs


class TranscriptWriter:
    """Appends events to an asciicast v2 file. Buffered; flushed on :meth:`flush`/close.

    With ``max_bytes`` the file is rolled over when it grows past that size (a busy agent's
    spinner alone writes megabytes a day): it moves to ``path.1`` (older ones up, ``keep``
    kept) and a new file goes on where it stopped, its header marked
    ``"aimterm": {"continued": true}`` so a follower knows it is the same run.
    """

    def __init__(self, path: str | os.PathLike[str], *, rows: int, cols: int,
                 title: str | None = None, env: dict[str, str] | None = None,
                 command: str | None = None, max_bytes: int | None = None,
                 keep: int = 3) -> None:
        self.path = Path(path)
        # A missing folder is made 0700; an existing one is the caller's (the daemon checks
        # its logs/ with the state dir).
        private_dirs(self.path.parent)
        # Output is written on the reader loop, input and markers from callers' threads.
        self._lock = threading.Lock()
        self._decoders = {"o": codecs.getincrementaldecoder("utf-8")("replace"),
                          "i": codecs.getincrementaldecoder("utf-8")("replace")}
        self._header: dict[str, Any] = {"version": 2, "width": cols, "height": rows}
        if title:
            self._header["title"] = title
        if command:
            self._header["command"] = command
        if env:
            self._header["env"] = env
        self._max = max_bytes
        self._keep = keep
        self.rolled = 0  # files rolled over so far
        self._fh: IO[str] | None = None
        self._open(continued=False)

    def _open(self, *, continued: bool) -> None:
        # What was typed is in it: 0600, and never written through a link someone planted.
        self._fh = open_private_file(self.path, os.O_WRONLY | os.O_TRUNC, "w", encoding="utf-8")
        self._start = time.monotonic()
        header = {**self._header, "timestamp": int(time.time())}
        if continued:
            header["aimterm"] = {"continued": True}
        line = json.dumps(header) + "\n"
        self._fh.write(line)
        self._size = len(line)

    def _emit(self, code: str, data: str, at: float | None = None) -> None:
        t = (at if at is not None else time.monotonic()) - self._start
        line = json.dumps([round(max(t, 0.0), 6), code, data], ensure_ascii=False) + "\n"
        with self._lock:
            if self._fh is not None:
                self._fh.write(line)
                if self._max is not None:
                    self._size += len(line)  # characters: a close enough measure of bytes
                    if self._size > self._max:
                        self._roll()

    def _roll(self) -> None:
        assert self._fh is not None
        self._fh.close()
        try:
            rotate(self.path, self._keep)
        except OSError:
            pass  # it cannot move: start the file again rather than stop writing
        self._open(continued=True)
        self.rolled += 1

    def output(self, data: bytes, at: float | None = None) -> None:
        text = self._decoders["o"].decode(data)
        if text:
            self._emit("o", text, at)

    def input(self, data: bytes, at: float | None = None) -> None:
        text = self._decoders["i"].decode(data)
        if text:
            self._emit("i", text, at)

    def resize(self, rows: int, cols: int) -> None:
        self._header["width"], self._header["height"] = cols, rows  # (for a rolled file)
        self._emit("r", f"{cols}x{rows}")

    def marker(self, label: str, at: float | None = None) -> None:
        self._emit("m", label, at)

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    @property
    def closed(self) -> bool:
        return self._fh is None


def rotate(path: str | os.PathLike[str], keep: int) -> None:
    """Move ``path`` to ``path.1`` (``.1`` to ``.2`` …, up to ``keep``; older ones go), so a
    new run can take the name. Nothing there: nothing to do."""
    base = os.fspath(path)
    if not os.path.exists(base):
        return
    if keep <= 0:
        os.unlink(base)
        return
    for n in range(keep - 1, 0, -1):
        older = f"{base}.{n}"
        if os.path.exists(older):
            os.replace(older, f"{base}.{n + 1}")
    os.replace(base, f"{base}.1")


@dataclass
class Recording:
    """A parsed asciicast v2 file."""

    header: dict[str, Any]
    events: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.header.get("height", 24))

    @property
    def cols(self) -> int:
        return int(self.header.get("width", 80))

    def output(self) -> Iterator[tuple[float, bytes]]:
        for t, code, data in self.events:
            if code == "o":
                yield t, data.encode("utf-8")


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Parse an asciicast v2 file; raises ValueError with ``path:line`` on a bad line."""
    with open(path, encoding="utf-8") as fh:
        first = fh.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:1: not an asciicast header: {exc.msg}") from None
        if not isinstance(header, dict) or header.get("version") != 2:
            raise ValueError(f"{path}:1: expected an asciicast v2 header")
        rec = Recording(header)
        for lineno, line in enumerate(fh, start=2):
            if not line.strip():
                continue
            try:
                t, code, data = json.loads(line)
                event = (float(t), str(code), str(data))
            except (json.JSONDecodeError, ValueError, TypeError):
                raise ValueError(f"{path}:{lineno}: expected [time, code, data]") from None
            rec.events.append(event)
    return rec
