"""The rendered screen of one terminal: pyte underneath, hardened, with text scrollback.

pyte 0.8.2 is a good VT emulator but trusts its input: ``ESC[?4m`` raises inside its parser,
``ESC[<u`` and other private-prefixed sequences leak their final byte onto the screen, and
``ESC[>4;1m`` is taken for SGR. The responder strips what pyte cannot parse before it gets
here; this module makes every handler pyte dispatches to tolerant of odd parameters, so the
screen survives any byte sequence a tool sends (the test suite fuzzes it).

Scrollback is kept as rendered text lines (a deque of ``str``), not as pyte cells: a line of
text costs ~150 bytes where a line of pyte cells costs kilobytes. The alternate screen
(``?1049h``, used by full-screen tools) is emulated: it does not feed scrollback, and leaving it
restores the main screen.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import pyte
from pyte.screens import (
    Margins,
    wcwidth,  # (pyte's own measure, cached)
)

log = logging.getLogger(__name__)

_ALT_MODES = (1049, 1047, 47)
_BRACKETED_PASTE = 2004
#: 80/132 columns: xterm ignores it by default, and the screen must keep the PTY's size.
_DECCOLM = 3
#: Cells by style and character, made once for every screen (cells are immutable): see
#: :meth:`_HardenedScreen.draw`. Styles by style, SGR attributes and reverse-video mode: see
#: :meth:`_HardenedScreen.select_graphic_rendition`. Each keeps at most _KEPT entries (a
#: tool cycling through colours clears it now and then).
_CELLS: dict[Any, dict[str, Any]] = {}
_SGR: dict[tuple[Any, tuple[int, ...], bool], Any] = {}
_KEPT = 1024


def _render(line: Any, cols: int) -> str:
    if not line:
        return ""
    buf = [" "] * cols
    for x, char in line.items():
        if x < cols:
            buf[x] = char.data
    return "".join(buf).rstrip()


#: Characters outside ASCII known to take one cell (box drawing, spinners, arrows …).
_NARROW: set[str] = set()
_WIDE_OR_ODD: set[str] = set()


def _all_narrow(text: str) -> bool:
    """Whether every character of ``text`` takes exactly one cell (wcwidth 1, as pyte
    measures), each character measured once."""
    for ch in text:
        if ch in _NARROW or (ch.isascii() and ch.isprintable()):
            continue
        if ch in _WIDE_OR_ODD:
            return False
        if wcwidth(ch) == 1:
            if len(_NARROW) < 4096:
                _NARROW.add(ch)
        else:
            if len(_WIDE_OR_ODD) < 4096:
                _WIDE_OR_ODD.add(ch)
            return False
    return True


class _Row(dict):  # type: ignore[type-arg]
    """One row's cells by column; a missing cell reads as ``default``. pyte's own row type
    keeps ``default`` in a dict of attributes, one for every row of every screen."""

    __slots__ = ("default",)

    def __init__(self, default: Any) -> None:
        self.default = default

    def __missing__(self, key: int) -> Any:
        return self.default


#: The blank cell, plain and in reverse-video screen mode: one of each for every row.
_BLANK = {reverse: pyte.screens.Char(data=" ", fg="default", bg="default", reverse=reverse)
          for reverse in (False, True)}


class _HardenedScreen(pyte.Screen):
    """pyte.Screen with text scrollback, an alternate screen, and no way to raise."""

    def __init__(self, columns: int, lines: int, scrollback: int) -> None:
        self.scrollback: deque[str] = deque(maxlen=max(0, scrollback))
        self.pushed = 0  # lines ever pushed into scrollback (a clock for deltas)
        self.alt_active = False
        self._saved_main: tuple[Any, Any] | None = None
        self.private_modes: set[int] = set()
        super().__init__(columns, lines)
        self.buffer = collections.defaultdict(self._new_row)

    def _new_row(self) -> Any:
        return _Row(self.default_char)

    @property
    def default_char(self) -> Any:
        return _BLANK[pyte.modes.DECSCNM in self.mode]

    # Scrollback: the top line leaves the screen when the whole screen scrolls up.
    def index(self) -> None:
        top, bottom = self.margins or Margins(0, self.lines - 1)
        if self.cursor.y == bottom and top == 0 and not self.alt_active:
            if self.scrollback.maxlen:
                self.scrollback.append(_render(self.buffer.get(top), self.columns))
            self.pushed += 1
        super().index()

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        if how == 3:  # xterm: erase saved lines only
            self.scrollback.clear()
            return
        if how in (0, 1, 2) and self.cursor.attrs == self.default_char:
            # Rows erased in the style a missing cell reads as hold nothing (see erase_in_line).
            rows = range(self.cursor.y + 1, self.lines) if how == 0 else \
                range(self.cursor.y) if how == 1 else range(self.lines)
            self.dirty.update(rows)
            buffer = self.buffer
            for y in rows:
                line = buffer.get(y)
                if line is None:
                    continue
                if line.default == self.cursor.attrs:
                    line.clear()
                else:  # (as pyte does)
                    for x in line:
                        line[x] = self.cursor.attrs
            if how != 2:
                self.erase_in_line(how)
            return
        super().erase_in_display(how)

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        # pyte writes the cursor's style into every erased cell, which makes each cleared row
        # a dict of every column (kilobytes, held for as long as the row shows). A cell in the
        # style a missing cell reads as is dropped instead: every cell reads the same.
        line = self.buffer.get(self.cursor.y)
        default = self.default_char if line is None else line.default
        if how not in (0, 1, 2) or self.cursor.attrs != default:
            super().erase_in_line(how, private)
            return
        self.dirty.add(self.cursor.y)
        if line is None:  # (a row never written holds nothing to erase)
            return
        if how == 2:
            line.clear()
            return
        x = self.cursor.x
        kept = {k: v for k, v in line.items() if (k < x if how == 0 else k > x)}
        if len(kept) < len(line):
            line.clear()  # (a dict never shrinks on deletes: refilled, it is sized to fit)
            line.update(kept)

    def erase_characters(self, count: int | None = None) -> None:
        line = self.buffer[self.cursor.y]
        if self.cursor.attrs != line.default:
            super().erase_characters(count)
            return
        self.dirty.add(self.cursor.y)
        x = self.cursor.x
        for k in range(x, min(x + (count or 1), self.columns)):
            line.pop(k, None)

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if private:  # ESC[?...m: xterm's "query/set key modifier options"; not SGR
            return
        # A tool sets the same few styles over and over: what a style becomes under these
        # attributes is worked out once (pyte changes nothing but the cursor's style).
        # (A reset gives the default style, reversed in reverse-video screen mode.)
        key = (self.cursor.attrs, attrs, pyte.modes.DECSCNM in self.mode)
        done = _SGR.get(key)
        if done is not None:
            self.cursor.attrs = done
            return
        try:
            super().select_graphic_rendition(*attrs)
        except (IndexError, KeyError, ValueError):
            pass
        if len(_SGR) >= _KEPT:
            _SGR.clear()
        _SGR[key] = self.cursor.attrs

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        private = bool(kwargs.get("private"))
        if private:
            modes = tuple(m for m in modes if m != _DECCOLM)
            self.private_modes.update(modes)
            if any(m in _ALT_MODES for m in modes) and not self.alt_active:
                self._enter_alt(save_cursor=1049 in modes)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        private = bool(kwargs.get("private"))
        if private:
            modes = tuple(m for m in modes if m != _DECCOLM)
            self.private_modes.difference_update(modes)
            if any(m in _ALT_MODES for m in modes) and self.alt_active:
                self._leave_alt()
        super().reset_mode(*modes, **kwargs)

    def _enter_alt(self, save_cursor: bool) -> None:
        cursor = self.cursor if save_cursor else None
        self._saved_main = (self.buffer, cursor)
        buffer: Any = self.buffer
        self.buffer = type(buffer)(buffer.default_factory)
        if save_cursor:
            self.cursor = pyte.screens.Cursor(self.cursor.x, self.cursor.y, self.cursor.attrs)
        self.alt_active = True
        self.dirty.update(range(self.lines))

    def _leave_alt(self) -> None:
        assert self._saved_main is not None
        buffer, cursor = self._saved_main
        self.buffer = buffer
        if cursor is not None:
            self.cursor = cursor
        self._saved_main = None
        self.alt_active = False
        self.dirty.update(range(self.lines))

    def draw(self, data: str) -> None:
        """pyte's ``draw``, with a fast path for the common case: characters one cell wide
        (after the charset) in replace mode. pyte measures each character's width and builds
        a new cell for it; here a run fills the rest of the line at once from cells made
        once per style — the same cells, for a fraction of the cost (a busy agent's redraws
        are mostly this). Wide and combining characters go to pyte's ``draw``."""
        text = data.translate(self.g1_charset if self.charset else self.g0_charset)
        if pyte.modes.IRM in self.mode or not (text.isascii() and text.isprintable()
                                               or _all_narrow(text)):
            super().draw(data)
            return
        cursor, columns = self.cursor, self.columns
        cells = _CELLS.get(cursor.attrs)
        if cells is None:
            if len(_CELLS) >= _KEPT:
                _CELLS.clear()
            cells = _CELLS[cursor.attrs] = {}
        wrap = pyte.modes.DECAWM in self.mode
        i, n = 0, len(text)
        while i < n:
            if cursor.x >= columns:
                if wrap:
                    self.dirty.add(cursor.y)
                    self.carriage_return()
                    self.linefeed()
                    cursor = self.cursor
                else:
                    cursor.x = columns - 1  # the last column is written over
            line = self.buffer[cursor.y]
            x = cursor.x
            run = text[i:i + columns - x]
            for ch in run:
                cell = cells.get(ch)
                if cell is None:
                    cell = cells[ch] = cursor.attrs._replace(data=ch)
                line[x] = cell
                x += 1
            cursor.x = x
            i += len(run)
        self.dirty.add(cursor.y)

    def write_process_input(self, data: str) -> None:
        """Queries are answered by the responder, in stream order, not here."""

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        old = self.columns
        super().resize(lines, columns)
        # pyte leaves the cursor where it was; a smaller screen must pull it back inside.
        self.cursor.y = min(self.cursor.y, self.lines - 1)
        self.cursor.x = min(self.cursor.x, self.columns - 1)
        # Tab stops past the edge are gone; columns a wider screen gains get the default
        # stops, every 8, as in xterm (pyte sets them only at reset).
        self.tabstops = {t for t in self.tabstops if t < self.columns}
        self.tabstops.update(range(8 * (old // 8 + 1), self.columns, 8))
        self.dirty.update(range(self.lines))

    def tab(self) -> None:
        super().tab()
        self.cursor.x = min(self.cursor.x, self.columns - 1)  # never past the right edge


def _tolerant(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except TypeError:
            # An unexpected ``private=True`` or parameter count: retry plainly, then give up.
            kwargs.pop("private", None)
            try:
                return fn(self, *args, **kwargs)
            except Exception:
                return None
        except Exception:
            log.debug("screen handler %s failed on %r", fn.__name__, args, exc_info=True)
            return None

    return wrapper


def _harden(cls: type) -> None:
    names = set(pyte.Stream.basic.values()) | set(pyte.Stream.escape.values()) \
        | set(pyte.Stream.sharp.values()) | set(pyte.Stream.csi.values()) \
        | {"draw", "set_title", "set_icon_name", "define_charset"}
    for name in names:
        fn = getattr(cls, name, None)
        if callable(fn):
            setattr(cls, name, _tolerant(fn))


_harden(_HardenedScreen)


#: The control sequences most output is made of — CSI with decimal parameters (cursor
#: moves, colours, erases) — whole in one chunk: what :class:`_FastStream` dispatches itself.
_PLAIN_CSI = re.compile(r"\x1b\[(\?)?([0-9;]*)([@A-Za-z`])")
#: A title or icon name (OSC 0, 1 or 2) whole in one chunk, ended by BEL or ST.
_PLAIN_OSC = re.compile("\x1b\\]([012]);([^\x07\x1b\x9c]*)(?:\x07|\x1b\\\\)")
#: Parameters by their text ("12;34" -> (12, 34)): the same moves and colours come back.
_PARAMS: dict[str, tuple[int, ...]] = {}


class _FastText(pyte.Stream):
    """pyte's stream, dispatching whole plain CSI sequences and single control characters
    itself. pyte's parser takes every byte of a sequence through a generator, one call
    each, which was most of a busy screen's cost; anything else (OSC, other escapes, a
    sequence cut by the chunk's end, C1 codes) still goes through it. The handlers and the
    parameters they get are pyte's: a missing parameter is 0, each at most 9999."""

    def attach(self, screen: Any) -> None:
        super().attach(screen)
        self._fast = _fast_handlers(type(self), type(screen))

    def _initialize_parser(self) -> None:
        # pyte's parser is a generator holding four tables of the screen's bound handlers
        # (6 KB a screen); it is made when a sequence the fast paths do not take first comes,
        # which for many tools is never. (Between sequences it holds no other state.)
        self._parser = None
        self._taking_plain_text = True

    def _send_to_parser(self, data: str) -> bool | None:
        if self._parser is None:
            pyte.Stream._initialize_parser(self)
        return super()._send_to_parser(data)

    def feed(self, data: str) -> None:
        send = self._send_to_parser
        screen = self.listener
        csi, basic, draw, debug, icon, title = self._fast
        match_text = self._text_pattern.match
        match_csi = _PLAIN_CSI.match
        match_osc = _PLAIN_OSC.match
        taking = self._taking_plain_text
        offset, length = 0, len(data)
        while offset < length:
            if not taking:  # inside a sequence: the parser's
                taking = bool(send(data[offset:offset + 1]))
                offset += 1
                continue
            m = match_text(data, offset)
            if m is not None:
                start, offset = m.span()
                try:
                    draw(screen, data[start:offset])
                except Exception:
                    log.debug("screen draw failed", exc_info=True)
                continue
            ch = data[offset]
            if ch == "\x1b":
                m = match_csi(data, offset)
                if m is not None:
                    private, params, final = m.groups()
                    args = _PARAMS.get(params)
                    if args is None:
                        args = tuple(min(int(p or 0), 9999) for p in params.split(";"))
                        if len(_PARAMS) < 4096:
                            _PARAMS[params] = args
                    run: Any = csi.get(final, debug)
                    try:  # (as the tolerant wrapper guards it, inlined)
                        if private:
                            run(screen, *args, private=True)
                        else:
                            run(screen, *args)
                    except TypeError:  # an unexpected `private`: once more, plainly
                        try:
                            run(screen, *args)
                        except Exception:
                            log.debug("screen handler failed on %r", args, exc_info=True)
                    except Exception:
                        log.debug("screen handler failed on %r", args, exc_info=True)
                    offset = m.end()
                    continue
                m = match_osc(data, offset)
                if m is not None:  # a title, as pyte's parser takes it
                    code, text = m.group(1), m.group(2)
                    try:
                        if code in "01":
                            icon(screen, text)
                        if code in "02":
                            title(screen, text)
                    except Exception:
                        log.debug("screen title failed on %r", text, exc_info=True)
                    offset = m.end()
                    continue
            else:
                handler = basic.get(ch)
                if handler is not None:
                    try:
                        handler(screen)
                    except Exception:
                        log.debug("screen handler %r failed", ch, exc_info=True)
                    offset += 1
                    continue
            taking = bool(send(ch))
            offset += 1
        self._taking_plain_text = taking


def _bare(cls: type, name: str) -> Any:
    """``cls``'s handler ``name`` without its tolerant wrapper (see :func:`_harden`)."""
    handler = getattr(cls, name)
    return getattr(handler, "__wrapped__", handler)


#: What :meth:`_FastText.feed` dispatches to, by stream and screen class: plain functions
#: that take the screen, made once (bound methods would be two tables per screen).
_Handlers = tuple[dict[str, Any], dict[str, Any], Any, Any, Any, Any]
_FAST: dict[tuple[type, type], _Handlers] = {}


def _fast_handlers(stream: type, screen: type) -> _Handlers:
    done = _FAST.get((stream, screen))
    if done is None:
        csi = {ch: _bare(screen, name) for ch, name in stream.csi.items()}  # type: ignore[attr-defined]
        # (SI and SO are ignored in UTF-8 mode: pyte's parser decides.)
        basic = {ch: _bare(screen, name) for ch, name in stream.basic.items()  # type: ignore[attr-defined]
                 if ch not in (pyte.control.SI, pyte.control.SO)}
        done = _FAST[(stream, screen)] = (
            csi, basic, _bare(screen, "draw"), _bare(screen, "debug"),
            _bare(screen, "set_icon_name"), _bare(screen, "set_title"))
    return done


class _FastStream(pyte.ByteStream, _FastText):  # type: ignore[misc]  # (bytes in, str on)
    """Bytes decoded as pyte's ByteStream does, then :class:`_FastText`."""


class _Rows(Sequence[str]):
    """A screen's rows, rendered as they are read (see :meth:`Screen.rows_view`)."""

    __slots__ = ("_screen",)

    def __init__(self, screen: Screen) -> None:
        self._screen = screen

    def __len__(self) -> int:
        return self._screen.rows

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        n = self._screen.rows
        if isinstance(index, slice):
            return [self._screen._row(y) for y in range(*index.indices(n))]
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("row out of range")
        return self._screen._row(index)


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of what the screen shows, for rules and reply extraction."""

    lines: list[str]
    cursor: tuple[int, int]  # (row, col), 0-based
    title: str
    pushed: int  # scrollback clock
    alt: bool


class Screen:
    """A terminal screen fed with bytes. Not thread-safe: the owner serialises access."""

    def __init__(self, rows: int = 40, cols: int = 120, scrollback: int = 2000) -> None:
        self._screen = _HardenedScreen(cols, rows, scrollback)
        self._stream = _FastStream(self._screen)
        self._lines = [""] * rows
        self._screen.dirty.clear()

    @property
    def rows(self) -> int:
        return int(self._screen.lines)

    @property
    def cols(self) -> int:
        return int(self._screen.columns)

    def feed(self, data: bytes) -> None:
        try:
            self._stream.feed(data)
        except Exception:
            log.debug("screen feed failed", exc_info=True)

    def _refresh(self) -> None:
        screen = self._screen
        if screen.dirty:
            if len(self._lines) != screen.lines:
                self._lines = [""] * screen.lines
                screen.dirty.update(range(screen.lines))
            buf, cols = screen.buffer, screen.columns
            for y in screen.dirty:
                if 0 <= y < screen.lines:
                    self._lines[y] = _render(buf[y], cols) if y in buf else ""
            screen.dirty.clear()

    def lines(self) -> list[str]:
        """The visible lines, trailing blanks removed."""
        self._refresh()
        return list(self._lines)

    def rows_view(self) -> Sequence[str]:
        """The visible lines as :meth:`lines` gives them, each rendered only when read —
        for a look at a few rows (a state rule's ``bottom:3``) of a screen a busy tool
        redraws whole. Valid until the screen is fed again: a copy to keep is
        :meth:`lines`."""
        return _Rows(self)

    def _row(self, y: int) -> str:
        screen = self._screen
        if len(self._lines) != screen.lines:
            self._refresh()
        elif y in screen.dirty:
            buf = screen.buffer
            self._lines[y] = _render(buf[y], screen.columns) if y in buf else ""
            screen.dirty.discard(y)
        return self._lines[y]

    def text(self) -> str:
        return "\n".join(self.lines())

    @property
    def cursor(self) -> tuple[int, int]:
        return int(self._screen.cursor.y), int(self._screen.cursor.x)

    @property
    def title(self) -> str:
        return str(self._screen.title or "")

    @property
    def scrollback(self) -> list[str]:
        return list(self._screen.scrollback)

    @property
    def pushed(self) -> int:
        return int(self._screen.pushed)

    def scrollback_since(self, pushed: int) -> list[str]:
        """Lines pushed into scrollback after the clock read ``pushed`` (as many as are kept)."""
        n = self._screen.pushed - pushed
        if n <= 0:
            return []
        kept = list(self._screen.scrollback)
        return kept[-n:] if n <= len(kept) else kept

    def scrollback_lost_since(self, pushed: int) -> int:
        """Lines pushed after the clock read ``pushed`` that the scrollback bound dropped."""
        return max(0, self._screen.pushed - pushed - len(self._screen.scrollback))

    def mode_set(self, private_mode: int) -> bool:
        return private_mode in self._screen.private_modes

    @property
    def private_modes(self) -> frozenset[int]:
        """The DEC private modes the tool has set (answers to DECRQM queries come from here)."""
        return frozenset(self._screen.private_modes)

    @property
    def bracketed_paste(self) -> bool:
        return self.mode_set(_BRACKETED_PASTE)

    @property
    def alternate(self) -> bool:
        return bool(self._screen.alt_active)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.lines(), self.cursor, self.title, self.pushed, self.alternate)

    def resize(self, rows: int, cols: int) -> None:
        self._screen.resize(rows, cols)

    def render_ansi(self) -> bytes:
        """The screen as bytes that redraw it on a real terminal (text only, cursor placed)."""
        out = ["\x1b[0m\x1b[H\x1b[2J"]
        for y, line in enumerate(self.lines()):
            if line:
                out.append(f"\x1b[{y + 1};1H{line}")
        row, col = self.cursor
        out.append(f"\x1b[{row + 1};{col + 1}H")
        return "".join(out).encode("utf-8")
