"""Plain-text views of terminal output for line-oriented tools, and region matching.

:class:`TextTail` turns a byte stream into text lines the way a dumb terminal would show
them (escape sequences dropped, ``\\r`` returns to the line start, backspace erases), keeping
a bounded tail. :func:`search_lines` is the one place a list of lines is matched against a
pattern; rules (L2) use it for screens and streams alike.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

_ANSI = re.compile(
    r"\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC
    r"|\x1b[PX^_].*?\x1b\\"  # DCS, SOS, PM, APC
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]",  # two-byte escapes (ESC =, ESC 7, ESC ( B ...)
    re.DOTALL,
)
_CONTROL = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x1f\x7f]")
_BREAKS = re.compile(r"(\r\n|\n|\r|\x08)")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _incomplete(tail: str) -> bool:
    """Whether ``tail`` (an ESC and what follows, no other ESC) may still become a sequence."""
    if len(tail) < 2:
        return True
    kind, body = tail[1], tail[2:]
    if kind == "[":
        return all("\x20" <= c <= "\x3f" for c in body)
    if kind == "]":
        return "\x07" not in body
    if kind in "PX^_":
        return True
    return all("\x20" <= c <= "\x2f" for c in tail[1:])


def _tail(line: str, cols: int) -> str:
    """``line.rstrip()[-cols:]`` without copying a long line whole (trailing blanks past
    ``cols`` aside)."""
    return line[-2 * cols:].rstrip()[-cols:] if len(line) > cols else line.rstrip()


class TextTail:
    """Rendered text of a stream, as lines, keeping at most ``max_lines``."""

    def __init__(self, max_lines: int = 2000) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lines: list[str] = [""]
        self._col = 0
        self._max = max_lines
        self._pending = ""  # an escape sequence cut by a read boundary
        self._rendered: list[str] | None = None  # lines() until the next feed or clear
        self._tailed: tuple[int, list[str]] | None = None  # tails(), likewise
        #: Lines dropped off the top (past ``max_lines``) since the last clear().
        self.dropped = 0
        # Text appended at the end of the last line, not yet joined onto it: a line that grows
        # by a read at a time (megabytes without a newline) costs linear time, not quadratic.
        self._parts: list[str] = []
        self._parts_len = 0

    def clear(self) -> None:
        self._lines = [""]
        self._col = 0
        self._rendered = None
        self._tailed = None
        self._parts = []
        self._parts_len = 0
        self.dropped = 0

    def _join(self) -> None:
        if self._parts:
            self._lines[-1] += "".join(self._parts)
            self._parts = []
            self._parts_len = 0

    def feed(self, data: bytes) -> None:
        self._rendered = None
        self._tailed = None
        text = self._pending + self._decoder.decode(data)
        self._pending = ""
        esc = text.rfind("\x1b")
        if esc >= 0 and len(text) - esc < 256 and _incomplete(text[esc:]):
            if esc == len(text) - 1:
                # A lone ESC may be the first half of the ST ending an OSC/DCS string.
                start = text.rfind("\x1b", 0, esc)
                if (start >= 0 and len(text) - start < 256
                        and text[start + 1 : start + 2] in ("]", "P", "X", "^", "_")
                        and _incomplete(text[start:esc])):
                    esc = start
            self._pending = text[esc:]
            text = text[:esc]
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        lines = self._lines
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        if "\r" not in text and "\x08" not in text and not _CONTROL.search(text):
            # The common case of a line tool: plain lines, each ending in a newline.
            parts = text.split("\n")
            self._put(parts[0])
            if len(parts) > 1:
                self._join()
            for part in parts[1:]:
                lines.append(part)
                self._col = len(part)
        else:
            self._feed_controls(text)
        if len(lines) > self._max:
            self.dropped += len(lines) - self._max
            del lines[: len(lines) - self._max]

    def _put(self, part: str) -> None:
        """Write ``part`` (no control characters) at the cursor of the last line."""
        if not part:
            return
        lines = self._lines
        col = self._col
        if col == len(lines[-1]) + self._parts_len:
            self._parts.append(part)  # at the end of the line: joined when looked at
            self._parts_len += len(part)
            self._col = col + len(part)
            return
        self._join()
        cur = lines[-1]
        if col >= len(cur):
            lines[-1] = cur + " " * (col - len(cur)) + part if col > len(cur) else cur + part
        else:
            lines[-1] = cur[:col] + part + cur[col + len(part):]
        self._col = col + len(part)

    def _feed_controls(self, text: str) -> None:
        lines = self._lines
        for part in _BREAKS.split(text):
            if not part:
                continue
            if part == "\r\n" or part == "\n":
                self._join()
                lines.append("")
                self._col = 0
            elif part == "\r":
                self._col = 0
            elif part == "\x08":
                self._col = max(0, self._col - 1)
            else:
                self._put(_CONTROL.sub("", part))

    def lines(self) -> list[str]:
        # Detection and reply extraction both look after the same read: render once.
        if self._rendered is None:
            self._join()
            self._rendered = [line.rstrip() for line in self._lines]
        return list(self._rendered)

    def tails(self, cols: int) -> list[str]:
        """Like :meth:`lines`, with each line cut to its last ``cols`` characters: what the
        rules look at after every read, without joining or copying a long line whole."""
        if self._tailed is not None and self._tailed[0] == cols:
            return list(self._tailed[1])
        out = [_tail(line, cols) for line in self._lines[:-1]]
        last = self._lines[-1]
        if self._parts:
            end: list[str] = []
            size = 0
            for part in reversed(self._parts):
                end.append(part)
                size += len(part)
                if size >= 2 * cols:
                    break
            else:
                end.append(last[-2 * cols:])
            last = "".join(reversed(end))
        out.append(_tail(last, cols))
        self._tailed = (cols, out)
        return list(out)

    def text(self) -> str:
        return "\n".join(self.lines())


def search_lines(pattern: re.Pattern[str], lines: Sequence[str]) -> re.Match[str] | None:
    """Search ``lines`` joined by newlines (patterns are compiled with re.MULTILINE)."""
    return pattern.search("\n".join(lines))


def line_of(text: str, match: re.Match[str]) -> str:
    """The whole line(s) of ``text`` that ``match`` touches, stripped."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end >= 0 else len(text)].strip()
