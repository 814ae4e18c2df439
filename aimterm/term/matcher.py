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


class TextTail:
    """Rendered text of a stream, as lines, keeping at most ``max_lines``."""

    def __init__(self, max_lines: int = 2000) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lines: list[str] = [""]
        self._col = 0
        self._max = max_lines
        self._pending = ""  # an escape sequence cut by a read boundary
        self._rendered: list[str] | None = None  # lines() until the next feed or clear

    def clear(self) -> None:
        self._lines = [""]
        self._col = 0
        self._rendered = None

    def feed(self, data: bytes) -> None:
        self._rendered = None
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
            for part in parts[1:]:
                lines.append(part)
                self._col = len(part)
        else:
            self._feed_controls(text)
        if len(lines) > self._max:
            del lines[: len(lines) - self._max]

    def _put(self, part: str) -> None:
        """Write ``part`` (no control characters) at the cursor of the last line."""
        if not part:
            return
        lines = self._lines
        cur = lines[-1]
        col = self._col
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
            self._rendered = [line.rstrip() for line in self._lines]
        return list(self._rendered)

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
