"""Screen: scrollback, alternate screen, title, resize, wide characters, redraw, and a fuzz of
everything a tool might send, fed through a Responder exactly as Terminal does."""

from __future__ import annotations

import random
import time
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimterm.term.responder import Query, Responder
from aimterm.term.screen import Screen


def feed_lines(screen: Screen, lines: list[str]) -> None:
    for line in lines:
        screen.feed(line.encode() + b"\r\n")


def pump(responder: Responder, screen: Screen, data: bytes) -> list[bytes]:
    """What Terminal._on_data does with one read: split, feed bytes, answer queries."""
    replies = []
    for item in responder.split(data):
        if isinstance(item, bytes):
            screen.feed(item)
        elif isinstance(item, Query):
            replies.append(responder.answer(item, cursor=screen.cursor, rows=screen.rows,
                                            cols=screen.cols, modes=screen._screen.private_modes))
    return replies


def cells(line: str) -> int:
    """Cells a rendered line occupies at most: combining marks share their base's cell."""
    return sum(1 for ch in line if not unicodedata.combining(ch))


def check_invariants(screen: Screen, rows: int, cols: int) -> None:
    lines = screen.lines()
    assert len(lines) == rows, lines
    assert (screen.rows, screen.cols) == (rows, cols)  # only the PTY's size decides these
    for line in lines:
        assert cells(line) <= screen.cols, (line, screen.cols)
    row, col = screen.cursor
    assert 0 <= row < screen.rows, screen.cursor
    # col == cols is pyte's "pending wrap" after the last column was written.
    assert 0 <= col <= screen.cols, screen.cursor


# -- scrollback ---------------------------------------------------------------------------------

def test_lines_scrolled_off_the_top_go_to_scrollback() -> None:
    s = Screen(5, 20, scrollback=100)
    feed_lines(s, [f"line{i}" for i in range(10)])
    assert s.lines() == ["line6", "line7", "line8", "line9", ""]
    assert s.scrollback == [f"line{i}" for i in range(6)]
    assert s.pushed == 6


def test_nothing_is_pushed_before_the_screen_is_full() -> None:
    s = Screen(5, 20, scrollback=100)
    feed_lines(s, ["a", "b", "c", "d"])
    assert s.scrollback == [] and s.pushed == 0
    assert s.lines() == ["a", "b", "c", "d", ""]


def test_scrollback_is_bounded() -> None:
    s = Screen(5, 20, scrollback=3)
    feed_lines(s, [f"line{i}" for i in range(10)])
    assert s.scrollback == ["line3", "line4", "line5"]
    assert s.pushed == 6  # the clock counts every push, kept or not


def test_scrollback_zero_keeps_nothing_but_counts() -> None:
    s = Screen(3, 20, scrollback=0)
    feed_lines(s, [f"line{i}" for i in range(6)])
    assert s.scrollback == []
    assert s.pushed == 4


def test_index_escapes_push_and_reverse_index_does_not() -> None:
    s = Screen(3, 20, scrollback=10)
    s.feed(b"one\r\ntwo\r\nthree")
    s.feed(b"\x1bD")  # IND at the bottom scrolls
    assert s.scrollback == ["one"]
    s.feed(b"\x1bEfour")  # NEL likewise
    assert s.scrollback == ["one", "two"]
    s.feed(b"\x1b[H\x1bM")  # RI at the top scrolls down: nothing leaves at the top
    assert s.scrollback == ["one", "two"]


def test_scrolling_inside_a_region_below_the_top_does_not_push() -> None:
    s = Screen(6, 20, scrollback=10)
    s.feed(b"header\x1b[2;5r\x1b[5;1H")
    feed_lines(s, [f"r{i}" for i in range(8)])
    assert s.scrollback == []
    assert s.pushed == 0
    assert s.lines()[0] == "header"


def test_scrollback_since() -> None:
    s = Screen(3, 20, scrollback=5)
    feed_lines(s, ["a", "b", "c", "d"])
    clock = s.pushed
    assert s.scrollback_since(clock) == []
    assert s.scrollback == ["a", "b"]
    feed_lines(s, ["e", "f"])
    assert s.scrollback_since(clock) == ["c", "d"]
    assert s.scrollback_since(s.pushed) == []
    assert s.scrollback_since(s.pushed + 10) == []
    # More pushed than kept: only what is kept comes back.
    clock = s.pushed
    feed_lines(s, [f"x{i}" for i in range(20)])
    assert s.scrollback_since(clock) == s.scrollback
    assert len(s.scrollback) == 5


def test_erase_saved_lines_clears_scrollback_only() -> None:
    s = Screen(3, 20, scrollback=10)
    feed_lines(s, ["a", "b", "c", "d"])
    s.feed(b"tail")
    visible = s.lines()
    assert s.scrollback
    s.feed(b"\x1b[3J")
    assert s.scrollback == []
    assert s.lines() == visible


def test_erase_display_does_not_clear_scrollback() -> None:
    s = Screen(3, 20, scrollback=10)
    feed_lines(s, ["a", "b", "c", "d"])
    kept = s.scrollback
    s.feed(b"\x1b[2J")
    assert s.scrollback == kept
    assert s.lines() == ["", "", ""]


# -- alternate screen ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [1049, 1047, 47])
def test_alternate_screen_restores_main_and_does_not_feed_scrollback(mode: int) -> None:
    s = Screen(5, 20, scrollback=100)
    feed_lines(s, ["m0", "m1", "m2", "m3", "m4", "m5"])
    s.feed(b"prompt")
    main_lines, main_cursor, pushed = s.lines(), s.cursor, s.pushed
    assert main_lines == ["m2", "m3", "m4", "m5", "prompt"]
    s.feed(b"\x1b[?%dh" % mode)
    assert s.alternate
    s.feed(b"\x1b[H\x1b[2J")
    feed_lines(s, [f"alt{i}" for i in range(12)])
    assert "alt11" in s.lines()
    assert s.pushed == pushed
    s.feed(b"\x1b[?%dl" % mode)
    assert not s.alternate
    assert s.lines() == main_lines
    if mode == 1049:
        assert s.cursor == main_cursor
    # The main screen scrolls into scrollback again.
    feed_lines(s, ["", "after"])
    assert s.pushed > pushed


def test_alternate_screen_enter_twice_leave_once() -> None:
    s = Screen(3, 20)
    s.feed(b"main")
    s.feed(b"\x1b[?1049h\x1b[?1049hALT")
    s.feed(b"\x1b[?1049l")
    assert s.lines()[0] == "main"
    s.feed(b"\x1b[?1049l")  # leaving when not in it is harmless
    assert s.lines()[0] == "main"


def test_snapshot() -> None:
    s = Screen(3, 20)
    s.feed(b"\x1b]2;T\x07hi\x1b[?1049h")
    snap = s.snapshot()
    assert snap.alt and snap.title == "T" and snap.cursor == (0, 2)
    assert snap.lines == ["", "", ""]


# -- title, modes, resize, wide characters ------------------------------------------------------

def test_title_from_osc_0_and_2() -> None:
    s = Screen(3, 20)
    s.feed(b"\x1b]0;first title\x07")
    assert s.title == "first title"
    s.feed(b"\x1b]2;second\x1b\\")
    assert s.title == "second"
    s.feed("\x1b]0;⠋ spinner-cli\x07".encode())
    assert s.title == "⠋ spinner-cli"
    assert s.lines() == ["", "", ""]


def test_title_split_across_reads_through_the_responder() -> None:
    data = b"x\x1b]0;split title\x07y"
    for at in range(len(data) + 1):
        s, r = Screen(3, 20), Responder()
        pump(r, s, data[:at])
        pump(r, s, data[at:])
        assert s.title == "split title", at
        assert s.lines()[0] == "xy", at


def test_bracketed_paste_mode_is_tracked() -> None:
    s = Screen(3, 20)
    assert not s.bracketed_paste
    s.feed(b"\x1b[?2004h")
    assert s.bracketed_paste and s.mode_set(2004)
    s.feed(b"\x1b[?2004l")
    assert not s.bracketed_paste


def test_resize() -> None:
    s = Screen(5, 20)
    feed_lines(s, ["hello", "world"])
    s.resize(10, 40)
    assert (s.rows, s.cols) == (10, 40)
    assert s.lines()[:2] == ["hello", "world"]
    assert len(s.lines()) == 10
    s.feed(b"\x1b[10;35Hcorner")
    assert s.lines()[9] == " " * 34 + "corner"
    s.resize(3, 4)
    assert (s.rows, s.cols) == (3, 4)
    assert len(s.lines()) == 3
    assert all(len(line) <= 4 for line in s.lines())
    check_invariants(s, 3, 4)


def test_shrinking_keeps_the_cursor_on_the_screen() -> None:
    s = Screen(10, 40)
    s.feed(b"\x1b[10;35Hend")
    assert s.cursor == (9, 37)
    s.resize(3, 4)
    row, col = s.cursor
    assert 0 <= row < 3 and 0 <= col < 4
    s.feed(b"\rX")  # what is written next must be visible
    assert "X" in "".join(s.lines())


def test_deccolm_does_not_change_the_width() -> None:
    # The child's PTY stays as wide as it is; a screen of another width would misplace text.
    s = Screen(5, 20)
    s.feed(b"hello\x1b[?3h")
    assert s.cols == 20
    s.feed(b"\x1b[?3l")
    assert s.cols == 20
    s.feed(b"\x1b[?3;2004h")  # other modes in the same sequence still apply
    assert s.bracketed_paste and s.cols == 20


def test_wide_characters() -> None:
    s = Screen(3, 20)
    s.feed("中文字".encode())
    assert s.lines()[0] == "中文字"
    assert s.cursor == (0, 6)
    s.feed("\r\na中b😀c".encode())
    assert s.lines()[1] == "a中b😀c"
    assert s.cursor == (1, 7)
    s.feed("\x1b[3;5H字".encode())  # at a column: two cells from column 5
    assert s.lines()[2] == "    字"
    assert s.cursor == (2, 6)


def test_wide_characters_split_across_reads() -> None:
    data = "前后 ✓ é".encode()
    for at in range(len(data) + 1):
        s = Screen(3, 20)
        s.feed(data[:at])
        s.feed(data[at:])
        assert s.lines()[0] == "前后 ✓ é", at


def test_render_ansi_redraws_the_same_text() -> None:
    s = Screen(8, 30)
    s.feed("\x1b[31mred\x1b[0m plain\r\n\r\n   indented\r\n中文 wide\r\n".encode())
    s.feed(b"\x1b[7;10Hfar down\x1b[5;4H")
    fresh = Screen(8, 30)
    fresh.feed(s.render_ansi())
    assert fresh.lines() == s.lines()
    assert fresh.cursor == s.cursor == (4, 3)


def test_render_ansi_of_a_blank_screen() -> None:
    s = Screen(4, 10)
    fresh = Screen(4, 10)
    fresh.feed(b"junk\r\nmore")
    fresh.feed(s.render_ansi())
    assert fresh.lines() == ["", "", "", ""]
    assert fresh.cursor == (0, 0)


# -- hardening ----------------------------------------------------------------------------------

TRAPS = [b"\x1b[?4m", b"\x1b[<u", b"\x1b[>4;1m", b"\x1b[38:2:1:2:3m"]


@pytest.mark.parametrize("trap", TRAPS, ids=[repr(t)[2:-1] for t in TRAPS])
def test_trap_sequences_leave_no_text(trap: bytes) -> None:
    data = b"AAA" + trap + b"BBB"
    for at in range(len(data) + 1):
        s, r = Screen(3, 40), Responder()
        pump(r, s, data[:at])
        pump(r, s, data[at:])
        assert s.lines() == ["AAABBB", "", ""], (at, s.lines())


def test_screen_alone_survives_the_trap_that_crashes_pyte() -> None:
    s = Screen(3, 40)
    s.feed(b"AAA\x1b[?4mBBB\x1b[1mCCC")
    assert s.lines()[0] == "AAABBBCCC"


# -- fuzz ---------------------------------------------------------------------------------------

_num = st.one_of(st.just(b""), st.integers(0, 99999).map(lambda n: b"%d" % n),
                 st.integers(0, 9).map(lambda n: b"%d" % n))


@st.composite
def csi(draw: st.DrawFn) -> bytes:
    intro = draw(st.sampled_from([b"\x1b[", b"\x1b[", b"\x1b[", "\u009b".encode(), b"\x9b"]))
    prefix = draw(st.sampled_from([b"", b"", b"?", b"<", b"=", b">"]))
    parts = draw(st.lists(st.tuples(st.sampled_from([b";", b";", b":"]), _num), max_size=6))
    body = b"".join(sep + n for sep, n in parts)[1:]
    inter = draw(st.sampled_from([b"", b"", b"", b" ", b"$", b"!", b'"', b"'", b"*"]))
    final = bytes([draw(st.integers(0x40, 0x7E))])
    return intro + prefix + body + inter + final


@st.composite
def osc(draw: st.DrawFn) -> bytes:
    intro = draw(st.sampled_from([b"\x1b]", b"\x1b]", "\u009d".encode()]))
    code = draw(st.one_of(
        st.sampled_from([b"0", b"1", b"2", b"4", b"7", b"8", b"10", b"11", b"12", b"52",
                         b"133", b"7501"]),
        _num))
    payload = draw(st.one_of(st.just(b"?"), st.text(max_size=20).map(str.encode),
                             st.binary(max_size=10)))
    end = draw(st.sampled_from([b"\x07", b"\x1b\\", b"", "\u009c".encode()]))
    return intro + code + b";" + payload + end


@st.composite
def string_seq(draw: st.DrawFn) -> bytes:  # DCS, SOS, PM, APC
    kind = draw(st.sampled_from([b"P", b"P", b"X", b"^", b"_"]))
    body = draw(st.one_of(st.just(b"+q544e"), st.just(b"$qm"), st.binary(max_size=20),
                          st.text(max_size=10).map(str.encode)))
    end = draw(st.sampled_from([b"\x1b\\", b"\x1b\\", b""]))
    return b"\x1b" + kind + body + end


@st.composite
def utf8_fragment(draw: st.DrawFn) -> bytes:
    data = draw(st.text(min_size=1, max_size=6)).encode()
    i = draw(st.integers(0, len(data)))
    j = draw(st.integers(i, len(data)))
    return data[i:j]


FRAGMENTS = st.one_of(
    st.binary(max_size=30),
    csi(), osc(), string_seq(), utf8_fragment(),
    st.sampled_from(TRAPS),
    st.integers(0x80, 0x9F).map(lambda n: bytes([n])),  # raw C1 bytes (invalid UTF-8)
    st.integers(0x80, 0x9F).map(lambda n: chr(n).encode()),  # C1 as UTF-8
    st.sampled_from([b"\x1b7", b"\x1b8", b"\x1bD", b"\x1bE", b"\x1bM", b"\x1bc", b"\x1b#8",
                     b"\x1b(0", b"\x1b(B", b"\x1b)0", b"\x1b=", b"\x1b>", b"\x1b%G", b"\x1bH",
                     b"\x1b", b"\x1b[", b"\x1b]", b"\x1bP"]),
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\t", b"\x08", b"\x07", b"\x0e", b"\x0f",
                     b"\x00", b"\x7f", b"\x0b", b"\x0c"]),
    st.text(alphabet=st.sampled_from(list("abc XYZ 0123 中文字😀é\u0301\u200b")),
            max_size=40).map(str.encode),
)


@st.composite
def stream_and_cuts(draw: st.DrawFn, parts: st.SearchStrategy[bytes]) -> tuple[bytes, list[int]]:
    data = b"".join(draw(st.lists(parts, max_size=40)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    return data, cuts


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def run_fuzz(data: bytes, cuts: list[int], rows: int, cols: int) -> None:
    s, r = Screen(rows, cols, scrollback=50), Responder()
    for chunk in chunks(data, cuts):
        for reply in pump(r, s, chunk):
            assert isinstance(reply, bytes)
            if reply.startswith(b"\x1b[") and reply.endswith(b"R"):  # CPR
                row, col = (int(x) for x in reply[2:-1].lstrip(b"?").split(b";"))
                assert 1 <= row <= s.rows and 1 <= col <= s.cols, reply
        check_invariants(s, rows, cols)
    assert len(s.scrollback) <= 50
    s.render_ansi()
    s.snapshot()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_and_cuts(FRAGMENTS), st.integers(1, 30), st.integers(1, 100))
def test_fuzz_escape_sequence_mixtures(case: tuple[bytes, list[int]], rows: int,
                                       cols: int) -> None:
    data, cuts = case
    run_fuzz(data, cuts, rows, cols)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_and_cuts(st.binary(max_size=64)), st.integers(1, 30), st.integers(1, 100))
def test_fuzz_random_bytes(case: tuple[bytes, list[int]], rows: int, cols: int) -> None:
    data, cuts = case
    run_fuzz(data, cuts, rows, cols)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(FRAGMENTS, st.tuples(st.integers(1, 30), st.integers(1, 100))),
                max_size=30),
       st.integers(1, 30), st.integers(1, 100))
def test_fuzz_with_resizes(ops: list[bytes | tuple[int, int]], rows: int, cols: int) -> None:
    s, r = Screen(rows, cols, scrollback=50), Responder()
    for op in ops:
        if isinstance(op, tuple):
            rows, cols = op
            s.resize(rows, cols)
        else:
            pump(r, s, op)
        check_invariants(s, rows, cols)


def _random_output(size: int, seed: int = 1234) -> bytes:
    rng = random.Random(seed)
    words = ["build", "ok", "error:", "中文", "✓", "warning", "src/main.py:12", "…", "😀"]
    pieces: list[bytes] = []
    total = 0
    while total < size:
        k = rng.random()
        if k < 0.5:
            piece = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30))).encode()
            piece += b"\r\n"
        elif k < 0.65:
            piece = b"\x1b[%d;%dm" % (rng.randint(0, 107), rng.randint(0, 107))
        elif k < 0.75:
            piece = b"\x1b[%d;%dH" % (rng.randint(1, 60), rng.randint(1, 200))
        elif k < 0.8:
            piece = rng.choice(TRAPS)
        elif k < 0.85:
            piece = b"\x1b]0;title %d\x07" % rng.randint(0, 999)
        elif k < 0.9:
            piece = rng.choice([b"\x1b[2K", b"\x1b[J", b"\x1b[3J", b"\r", b"\x1b[?1049h",
                                b"\x1b[?1049l", b"\x1b[6n", b"\x1b[c", b"\x1b]11;?\x07"])
        else:
            piece = rng.randbytes(rng.randint(1, 40))
        pieces.append(piece)
        total += len(piece)
    return b"".join(pieces)


def test_one_megabyte_in_one_go() -> None:
    data = _random_output(1 << 20)
    s, r = Screen(40, 120, scrollback=2000), Responder()
    started = time.monotonic()
    pump(r, s, data)
    check_invariants(s, 40, 120)
    assert time.monotonic() - started < 60
    assert len(s.scrollback) <= 2000
    assert s.pushed > 2000


def test_a_tab_after_shrinking_to_one_column_stays_on_the_screen() -> None:
    """The example hypothesis found: resize 24x80 -> 1x9 -> 24x1, then a tab put the cursor at
    column 8 of a 1-column screen (pyte kept the tab stops of the wider screen)."""
    s = Screen(24, 80, scrollback=50)
    s.resize(1, 9)
    s.resize(24, 1)
    s.feed(b"\t")
    assert s.cursor == (0, 0)
    check_invariants(s, 24, 1)
    s.feed(b"x\tyz\t")
    check_invariants(s, 24, 1)


def test_a_wider_screen_gets_default_tab_stops_in_its_new_columns() -> None:
    s = Screen(24, 10, scrollback=50)
    s.resize(24, 40)
    s.feed(b"\t\t\t\t")
    assert s.cursor == (0, 32)
    s.feed(b"\t\t")
    assert s.cursor == (0, 39)  # no stop past 32: the last column, as a terminal does


def _plain_pyte(screen: Screen) -> None:
    """Give ``screen`` pyte's own draw and SGR (no cached cells or styles), made
    tolerant as the screen's own handlers are, and pyte's own byte-at-a-time parser: what
    the fast paths must equal."""
    import types

    import pyte

    from aimterm.term.screen import _tolerant

    inner = screen._screen

    def sgr(self: object, *attrs: int, private: bool = False) -> None:
        if not private:
            try:
                pyte.Screen.select_graphic_rendition(self, *attrs)  # type: ignore[arg-type]
            except (IndexError, KeyError, ValueError):
                pass

    for name, fn in (("draw", pyte.Screen.draw), ("select_graphic_rendition", sgr)):
        setattr(inner, name, types.MethodType(_tolerant(fn), inner))
    screen._stream = pyte.ByteStream(inner)  # (made after: it binds the handlers)


class _PyteDraw(Screen):
    """The same screen with pyte's own draw, SGR and parser."""

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__(rows, cols)
        _plain_pyte(self)


_DRAW_PIECES = [b"hello world ", b"x" * 50, b"\x1b[1;31m", b"\x1b[0m", b"\x1b[7m", b"\r\n",
                b"\x1b[5;10H", b"\x1b[?7l", b"\x1b[?7h", b"\x1b[4h", b"\x1b[4l", b"\x1b(0",
                b"\x1b(B", b"lqqk", "wide 界界 ".encode(), "e\u0301 ".encode(), b"\x1b[K",
                b"\x1b[38;5;208m", b"\t", b"\x1b[2J", b"\x1b[H", b"\x7f", b"\x1b[20G",
                "⠋ ─│ spin ✓".encode(), "a界b".encode()]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_DRAW_PIECES), max_size=60), st.integers(8, 30))
def test_the_fast_draw_makes_the_cells_pyte_makes(pieces: list[bytes], cols: int) -> None:
    fast, slow = Screen(6, cols), _PyteDraw(6, cols)
    for piece in pieces:
        fast.feed(piece)
        slow.feed(piece)
    a, b = fast._screen, slow._screen  # (the cells themselves, styles and all)
    assert {y: dict(line) for y, line in a.buffer.items() if line} == \
        {y: dict(line) for y, line in b.buffer.items() if line}
    assert (a.cursor.x, a.cursor.y, a.cursor.attrs) == (b.cursor.x, b.cursor.y, b.cursor.attrs)
    assert fast.lines() == slow.lines()


_STREAM_PIECES = [b"plain text ", b"\x1b[12;34H", b"\x1b[H", b"\x1b[2J", b"\x1b[K", b"\x1b[1K",
                  b"\x1b[2K", b"\x1b[0K", b"\x1b[5K", b"\x1b[?K", b"\x1b[44m\x1b[K",
                  b"\x1b[1;38;5;208m", b"\x1b[m", b"\x1b[0;7m", b"\x1b[?25l", b"\x1b[?1049h",
                  b"\x1b[?1049l", b"\x1b[?2004h", b"\x1b[3A", b"\x1b[;5H", b"\x1b[99999C",
                  b"\x1b[12;", b"\x1b[", b"\x1b", b"\r\n", b"\x08", b"\t", b"\x07", b"\x0e",
                  b"\x0f", b"\x1b]0;title\x07", b"\x1b]2;a \x1b[1m b\x1b\\", b"\x1b(0qqq\x1b(B",
                  b"\x1b7", b"\x1b8", b"\x1bM", b"\x1b#8", b"\x9b5C", b"\x1b[4h", b"\x1b[4l",
                  b"\x1b[1\x0d2H", b"\x1b[5\x18x", b"\x1b[>1c", b"\x1b[2$p", "é界".encode(),
                  b"\x1b[?5h", b"\x1b[?5l", b"\x1b[27m", b"\x1b]1;icon\x07", b"\x1b]0;",
                  "\x1b]2;c1 end\u009c".encode(), b"\x1b]2;\x07", b"\x1b]3;x\x07", b"\x1b]R",
                  b"\xe7\x95", b"\x8c", b"\x1b[S", b"\x1b[2@", b"\x1b[3P", b"\x1b[`"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_STREAM_PIECES), max_size=80), st.data())
def test_the_fast_stream_does_what_pyte_does(pieces: list[bytes], data: st.DataObject) -> None:

    fast = Screen(8, 30)
    slow = Screen(8, 30)
    _plain_pyte(slow)
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        fast.feed(stream[a:b])  # (a sequence may be cut anywhere, as reads cut it)
        slow.feed(stream[a:b])
    x, y = fast._screen, slow._screen
    assert {r: dict(line) for r, line in x.buffer.items() if line} == \
        {r: dict(line) for r, line in y.buffer.items() if line}
    assert (x.cursor.x, x.cursor.y, x.cursor.attrs, x.cursor.hidden) == \
        (y.cursor.x, y.cursor.y, y.cursor.attrs, y.cursor.hidden)
    assert (fast.title, fast.private_modes, fast.alternate, x.mode) == \
        (slow.title, slow.private_modes, slow.alternate, y.mode)
    assert fast.lines() == slow.lines()


def test_a_style_reset_in_reverse_video_mode_is_reversed_as_pyte_makes_it() -> None:
    # (A style worked out once must not be reused across the screen modes it depends on.)
    fast, slow = Screen(4, 10), Screen(4, 10)
    _plain_pyte(slow)
    for chunk in (b"\x1b[mA", b"\x1b[?5h", b"\x1b[27m\x1b[mC", b"\x1b[?5l\x1b[mD"):
        fast.feed(chunk)
        slow.feed(chunk)
        assert fast._screen.cursor.attrs == slow._screen.cursor.attrs
    assert dict(fast._screen.buffer[0]) == dict(slow._screen.buffer[0])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_STREAM_PIECES), max_size=40),
       st.lists(st.integers(-10, 9), max_size=6))
def test_a_rows_view_reads_what_lines_give(pieces: list[bytes], reads: list[int]) -> None:
    screen, plain = Screen(8, 30), Screen(8, 30)
    for piece in pieces:
        screen.feed(piece)
        plain.feed(piece)
        view = screen.rows_view()  # some rows read after each chunk, the others left dirty
        for y in reads:
            if -8 <= y < 8:
                assert view[y] == plain.lines()[y]
        assert view[-3:] == plain.lines()[-3:]
    assert screen.lines() == plain.lines() and len(screen.rows_view()) == 8
    with pytest.raises(IndexError):
        screen.rows_view()[8]


def _pyte_erase(screen: Screen) -> None:
    """Give ``screen`` pyte's own erases (every erased cell written in the cursor's style)."""
    import types

    import pyte

    from aimterm.term.screen import _tolerant

    inner = screen._screen

    def erase_in_display(self: object, how: int = 0, *args: object, **kwargs: object) -> None:
        if how == 3:
            inner.scrollback.clear()
            return
        pyte.Screen.erase_in_display(self, how)  # type: ignore[arg-type]

    for name, fn in (("erase_in_line", pyte.Screen.erase_in_line),
                     ("erase_characters", pyte.Screen.erase_characters),
                     ("erase_in_display", erase_in_display)):
        setattr(inner, name, types.MethodType(_tolerant(fn), inner))
    screen._stream = pyte.ByteStream(inner)


def _cells(screen: Screen) -> list[list[object]]:
    inner = screen._screen
    return [[inner.buffer[y][x] for x in range(inner.columns)] for y in range(inner.lines)]


_ERASE_PIECES = [*_STREAM_PIECES, b"\x1b[J", b"\x1b[1J", b"\x1b[0J", b"\x1b[X", b"\x1b[4X",
                 b"\x1b[200X", b"\x1b[41m", b"\x1b[41m\x1b[2K", b"\x1b[1;1H\x1b[2Kab"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_ERASE_PIECES), max_size=80))
def test_erased_cells_read_as_pyte_writes_them(pieces: list[bytes]) -> None:
    # A cell erased in the default style is left out rather than written: every cell reads
    # the same. (pyte's erase-in-display restyles only the cells a row holds, so after an
    # erase in a colour the blank cells' styles may differ; their text never does.)
    sparse, plain = Screen(8, 30), Screen(8, 30)
    _pyte_erase(plain)
    for piece in pieces:
        sparse.feed(piece)
        plain.feed(piece)
    a, b = _cells(sparse), _cells(plain)
    assert [[c.data for c in row] for row in a] == [[c.data for c in row] for row in b]
    if not any(p.endswith(b"J") for p in pieces):
        assert a == b
    x, y = sparse._screen, plain._screen
    assert (x.cursor.x, x.cursor.y, x.cursor.attrs) == (y.cursor.x, y.cursor.y, y.cursor.attrs)
    assert sparse.lines() == plain.lines()


def test_a_row_erased_in_the_default_style_holds_no_cells() -> None:
    screen = Screen(4, 120)
    screen.feed(b"x" * 120 + b"\x1b[1;1H\x1b[2Khi\x1b[2;1H\x1b[K\x1b[3;1H\x1b[J")
    assert {y: len(line) for y, line in screen._screen.buffer.items() if line} == {0: 2}
    assert screen.lines()[0] == "hi"
