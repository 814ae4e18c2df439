"""Answer terminal queries like a real terminal, and strip what the screen cannot parse.

Some agent CLIs ask the terminal for the cursor position at start-up and exit when nobody
answers; others ask for device attributes or the background colour and wait. The
:class:`Responder` scans the byte stream for escape sequences, splits it into
:class:`Segment` s for the screen and :class:`Query` s to answer in stream order (the cursor
position reply needs the screen as it was at the query), and drops sequences pyte would
misread (``ESC[<…``, ``ESC[=…``, ``ESC[>…`` private CSIs, colon sub-parameters, DCS/APC
strings). An escape sequence split across two reads is held back until it is complete.
"""

from __future__ import annotations

import re
from collections.abc import Set
from dataclasses import dataclass

_SEQ = re.compile(
    rb"\x1b\[(?P<csi_params>[\x30-\x3f]*)(?P<csi_inter>[\x20-\x2f]*)(?P<csi_final>[\x40-\x7e])"
    rb"|\x1b\](?P<osc>[^\x07\x1b]*)(?P<osc_end>\x07|\x1b\\)"
    rb"|\x1b(?P<str_kind>[PX^_])(?P<str_body>.*?)\x1b\\",
    re.DOTALL,
)
#: :data:`_SEQ` less the CSI sequences :meth:`Responder._classify` passes on untouched —
#: those whose final byte is not one a query ends with and whose parameters pyte reads
#: right: most of a busy tool's output (cursor moves, colours), no longer matched one by
#: one only to be let through. The sequences it finds among the rest are :data:`_SEQ`'s.
_SEQ_ACTIVE = re.compile(
    rb"\x1b\[(?=[<=>]|[\x30-\x3f]*:|[\x30-\x3f]*[\x20-\x2f]*[nctpqu])"
    rb"(?P<csi_params>[\x30-\x3f]*)(?P<csi_inter>[\x20-\x2f]*)(?P<csi_final>[\x40-\x7e])"
    rb"|\x1b\](?P<osc>[^\x07\x1b]*)(?P<osc_end>\x07|\x1b\\)"
    rb"|\x1b(?P<str_kind>[PX^_])(?P<str_body>.*?)\x1b\\",
    re.DOTALL,
)

#: Longest incomplete sequence we hold back waiting for its end; past that it is junk.
_MAX_HOLD = 16384

_DA1 = b"\x1b[?62;22c"  # VT220 with ANSI colour, as many terminals answer
_DA2 = b"\x1b[>1;10;0c"
_FG = b"rgb:c7c7/c7c7/c7c7"
_BG = b"rgb:0000/0000/0000"
_CURSOR_COLOUR = b"rgb:ffff/ffff/ffff"


@dataclass(frozen=True)
class Query:
    """A terminal query found in the stream; :meth:`Responder.answer` makes the reply."""

    kind: str  # cpr, cpr_private, status, da1, da2, xtversion, winsize, pixsize, cellsize,
    #            decrqm, osc_colour, xtgettcap
    params: bytes = b""
    terminator: bytes = b"\x07"


@dataclass(frozen=True)
class Osc:
    """An OSC string the screen does not use but callers may (e.g. ``7501;state=working``)."""

    code: str
    payload: str


Item = bytes | Query | Osc


class _Drop:
    """Marker: the sequence is removed from the stream and not answered."""


_DROP = _Drop()


class Responder:
    """Stateful scanner for one PTY's output. Not thread-safe; one per terminal."""

    def __init__(self, version: str = "0.1.0") -> None:
        self._held = b""
        self._version = version.encode()

    def split(self, data: bytes) -> list[Item]:
        """Split a chunk into screen bytes, queries and OSC notes, in stream order."""
        if self._held:
            data = self._held + data
            self._held = b""
        if b"\x1b" not in data:
            return [data]
        data = self._hold_incomplete(data)
        items: list[Item] = []
        pos = 0
        for m in _SEQ_ACTIVE.finditer(data):
            action = self._classify(m)
            if action is None:
                continue
            if m.start() > pos:
                items.append(data[pos : m.start()])
            pos = m.end()
            if not isinstance(action, _Drop):
                items.append(action)
        if pos < len(data):
            items.append(data[pos:])
        return items

    def _hold_incomplete(self, data: bytes) -> bytes:
        last = data.rfind(b"\x1b")
        if last < 0 or len(data) - last > _MAX_HOLD:
            return data
        tail = data[last:]
        if len(tail) == 1 or _SEQ.match(tail) or not _could_continue(tail):
            if len(tail) == 1:
                # A lone ESC may be the first half of the ST ending an OSC/DCS string that
                # started earlier: then hold from that string's start.
                start = data.rfind(b"\x1b", 0, last)
                if (start >= 0 and last - start <= _MAX_HOLD
                        and data[start + 1 : start + 2] in (b"]", b"P", b"X", b"^", b"_")
                        and _could_continue(data[start:last])):
                    last = start
                self._held = data[last:]
                return data[:last]
            return data
        # An OSC/DCS still waiting for its terminator can hold an ESC only as part of ST,
        # which would have ended it: so the last ESC is where the incomplete sequence starts.
        self._held = tail
        return data[:last]

    def _classify(self, m: re.Match[bytes]) -> Query | Osc | _Drop | None:
        final = m.group("csi_final")
        if final is not None:
            params = m.group("csi_params")
            inter = m.group("csi_inter")
            if final == b"n" and not inter:
                if params == b"6":
                    return Query("cpr")
                if params == b"?6":
                    return Query("cpr_private")
                if params == b"5":
                    return Query("status")
            if final == b"c" and not inter:
                if params in (b"", b"0"):
                    return Query("da1")
                if params.startswith(b">"):
                    return Query("da2")
                return _DROP
            if final == b"q" and params.startswith(b">") and not inter:
                return Query("xtversion")
            if final == b"t" and not inter and params in (b"18", b"14", b"16"):
                return Query({b"18": "winsize", b"14": "pixsize", b"16": "cellsize"}[params])
            if final == b"p" and inter == b"$" and params.startswith(b"?"):
                return Query("decrqm", params[1:])
            if params[:1] in (b"<", b"=", b">") or b":" in params:
                return _DROP  # kitty keyboard, modifyOtherKeys, colon SGR: pyte misreads them
            if params[:1] == b"?" and final == b"u":
                return _DROP  # kitty keyboard query: we are not kitty, so stay silent
            return None
        osc = m.group("osc")
        if osc is not None:
            code, _, rest = osc.partition(b";")
            if code in (b"10", b"11", b"12") and rest == b"?":
                return Query("osc_colour", code, m.group("osc_end"))
            if code in (b"0", b"1", b"2"):
                return None  # the screen takes the title
            return Osc(code.decode("ascii", "replace"), rest.decode("utf-8", "replace"))
        kind = m.group("str_kind")
        body = m.group("str_body") or b""
        if kind == b"P" and body.startswith(b"+q"):
            return Query("xtgettcap", body[2:], b"\x1b\\")
        return _DROP

    def answer(self, query: Query, *, cursor: tuple[int, int], rows: int, cols: int,
               modes: Set[int] | None = None) -> bytes:
        """The bytes a real terminal would send back for ``query``."""
        row, col = cursor
        # pyte keeps x == cols after a full-width line (a pending wrap); report the last column.
        row, col = max(0, min(row, rows - 1)), max(0, min(col, cols - 1))
        kind = query.kind
        if kind == "cpr":
            return b"\x1b[%d;%dR" % (row + 1, col + 1)
        if kind == "cpr_private":
            return b"\x1b[?%d;%dR" % (row + 1, col + 1)
        if kind == "status":
            return b"\x1b[0n"
        if kind == "da1":
            return _DA1
        if kind == "da2":
            return _DA2
        if kind == "xtversion":
            return b"\x1bP>|aimterm(" + self._version + b")\x1b\\"
        if kind == "winsize":
            return b"\x1b[8;%d;%dt" % (rows, cols)
        if kind == "pixsize":
            return b"\x1b[4;%d;%dt" % (rows * 16, cols * 8)
        if kind == "cellsize":
            return b"\x1b[6;16;8t"
        if kind == "decrqm":
            try:
                mode = int(query.params or b"0")
            except ValueError:
                return b""
            known = {1, 7, 25, 47, 1000, 1002, 1003, 1004, 1006, 1047, 1049, 2004}
            state = 0 if mode not in known else (1 if modes and mode in modes else 2)
            return b"\x1b[?%d;%d$y" % (mode, state)
        if kind == "osc_colour":
            colour = {b"10": _FG, b"11": _BG, b"12": _CURSOR_COLOUR}[query.params]
            return b"\x1b]" + query.params + b";" + colour + query.terminator
        if kind == "xtgettcap":
            return b"\x1bP0+r" + query.params + b"\x1b\\"
        return b""



def _could_continue(tail: bytes) -> bool:
    """Whether ``tail`` (starting with ESC) is the start of a sequence not yet complete."""
    if len(tail) < 2:
        return True
    second = tail[1:2]
    if second == b"[":
        body = tail[2:]
        return all(0x20 <= b <= 0x3F for b in body)
    if second == b"]":
        return b"\x07" not in tail
    if second in (b"P", b"X", b"^", b"_"):
        return True
    return False

