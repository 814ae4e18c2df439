"""Responder: query detection and exact replies, dropped sequences, OSC notes, sequences split
across reads, and a real CLI that dies unless its cursor query is answered."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimterm.term.responder import Item, Osc, Query, Responder
from aimterm.term.terminal import Terminal
from tests.helpers import wait_for


def merged(items: Iterable[Item]) -> list[Item]:
    """Join adjacent byte segments so differently chunked streams compare equal."""
    out: list[Item] = []
    for item in items:
        if isinstance(item, bytes):
            if not item:
                continue
            if out and isinstance(out[-1], bytes):
                out[-1] = out[-1] + item
                continue
        out.append(item)
    return out


def split_all(chunks: Iterable[bytes], responder: Responder | None = None) -> list[Item]:
    r = responder or Responder()
    items: list[Item] = []
    for chunk in chunks:
        items.extend(r.split(chunk))
    return merged(items)


def answer(query: Query, *, cursor: tuple[int, int] = (4, 9), rows: int = 24, cols: int = 80,
           modes: set[int] | None = None, version: str = "1.2.3") -> bytes:
    return Responder(version).answer(query, cursor=cursor, rows=rows, cols=cols, modes=modes)


# -- queries and their replies ------------------------------------------------------------------

QUERIES = [
    # (bytes in the stream, expected Query, expected reply with cursor (4, 9) on 24x80)
    (b"\x1b[6n", Query("cpr"), b"\x1b[5;10R"),
    (b"\x1b[?6n", Query("cpr_private"), b"\x1b[?5;10R"),
    (b"\x1b[5n", Query("status"), b"\x1b[0n"),
    (b"\x1b[c", Query("da1"), b"\x1b[?62;22c"),
    (b"\x1b[0c", Query("da1"), b"\x1b[?62;22c"),
    (b"\x1b[>c", Query("da2"), b"\x1b[>1;10;0c"),
    (b"\x1b[>0c", Query("da2"), b"\x1b[>1;10;0c"),
    (b"\x1b[>q", Query("xtversion"), b"\x1bP>|aimterm(1.2.3)\x1b\\"),
    (b"\x1b[>0q", Query("xtversion"), b"\x1bP>|aimterm(1.2.3)\x1b\\"),
    (b"\x1b[18t", Query("winsize"), b"\x1b[8;24;80t"),
    (b"\x1b[14t", Query("pixsize"), b"\x1b[4;384;640t"),
    (b"\x1b[16t", Query("cellsize"), b"\x1b[6;16;8t"),
    (b"\x1b[?2004$p", Query("decrqm", b"2004"), b"\x1b[?2004;2$y"),
    (b"\x1b[?9999$p", Query("decrqm", b"9999"), b"\x1b[?9999;0$y"),
    (b"\x1b]10;?\x07", Query("osc_colour", b"10", b"\x07"), b"\x1b]10;rgb:c7c7/c7c7/c7c7\x07"),
    (b"\x1b]11;?\x07", Query("osc_colour", b"11", b"\x07"), b"\x1b]11;rgb:0000/0000/0000\x07"),
    (b"\x1b]11;?\x1b\\", Query("osc_colour", b"11", b"\x1b\\"),
     b"\x1b]11;rgb:0000/0000/0000\x1b\\"),
    (b"\x1b]12;?\x1b\\", Query("osc_colour", b"12", b"\x1b\\"),
     b"\x1b]12;rgb:ffff/ffff/ffff\x1b\\"),
    (b"\x1bP+q544e\x1b\\", Query("xtgettcap", b"544e", b"\x1b\\"), b"\x1bP0+r544e\x1b\\"),
]


@pytest.mark.parametrize(("seq", "query", "reply"), QUERIES,
                         ids=[repr(q[0])[2:-1] for q in QUERIES])
def test_query_is_found_and_answered(seq: bytes, query: Query, reply: bytes) -> None:
    assert Responder().split(seq) == [query]
    assert Responder().split(b"before" + seq + b"after") == [b"before", query, b"after"]
    assert answer(query) == reply


def test_decrqm_reports_set_modes() -> None:
    q = Responder().split(b"\x1b[?2004$p")[0]
    assert isinstance(q, Query)
    assert answer(q, modes={2004}) == b"\x1b[?2004;1$y"  # set
    assert answer(q, modes={25}) == b"\x1b[?2004;2$y"  # known, reset
    assert answer(q, modes=None) == b"\x1b[?2004;2$y"


def test_decrqm_with_garbled_mode_gets_no_reply() -> None:
    (q,) = Responder().split(b"\x1b[?1;2$p")
    assert isinstance(q, Query) and q.kind == "decrqm"
    assert answer(q) == b""


def test_cpr_reply_uses_the_cursor_it_is_given() -> None:
    assert answer(Query("cpr"), cursor=(0, 0)) == b"\x1b[1;1R"
    assert answer(Query("cpr"), cursor=(23, 79)) == b"\x1b[24;80R"


def test_cpr_never_reports_a_position_outside_the_screen() -> None:
    # After a full-width line pyte keeps the cursor at x == cols (a pending wrap); a real
    # terminal reports the last column then, never a column past the right edge.
    assert answer(Query("cpr"), cursor=(3, 80), rows=24, cols=80) == b"\x1b[4;80R"
    assert answer(Query("cpr_private"), cursor=(3, 80), rows=24, cols=80) == b"\x1b[?4;80R"


def test_several_queries_in_one_chunk_keep_stream_order() -> None:
    items = Responder().split(b"a\x1b[6nb\x1b[cc\x1b]11;?\x07d")
    assert items == [b"a", Query("cpr"), b"b", Query("da1"), b"c",
                     Query("osc_colour", b"11", b"\x07"), b"d"]


# -- what passes to the screen, what is dropped, what becomes a note ------------------------------

@pytest.mark.parametrize("seq", [
    b"\x1b[31m", b"\x1b[0m", b"\x1b[?1049h", b"\x1b[2J", b"\x1b[10;5H", b"\x1b[?25l",
    b"\x1b]0;a title\x07", b"\x1b]2;a title\x1b\\", b"\x1b]1;icon\x07", b"\x1b7", b"\x1b(B",
])
def test_screen_sequences_pass_through_untouched(seq: bytes) -> None:
    data = b"AAA" + seq + b"BBB"
    assert merged(Responder().split(data)) == [data]


DROPPED = [
    b"\x1b[<u",  # kitty keyboard pop
    b"\x1b[<1u",
    b"\x1b[=1;1u",  # kitty keyboard set
    b"\x1b[>1u",  # kitty keyboard push
    b"\x1b[>4;1m",  # xterm modifyOtherKeys
    b"\x1b[>4m",
    b"\x1b[38:2:1:2:3m",  # colon SGR
    b"\x1b[4:3m",  # curly underline
    b"\x1b[?u",  # kitty keyboard query
    b"\x1b[=c",  # DA3
    b"\x1b[?1c",  # a DA reply echoed back
    b"\x1bPq#0;2;0;0;0#0~~\x1b\\",  # sixel DCS
    b"\x1bP$qm\x1b\\",  # DECRQSS
    b"\x1b_Gi=1,a=q;AAAA\x1b\\",  # kitty graphics APC
    b"\x1bXsos\x1b\\",
    b"\x1b^pm\x1b\\",
]


@pytest.mark.parametrize("seq", DROPPED, ids=[repr(s)[2:-1] for s in DROPPED])
def test_sequences_the_screen_misreads_are_dropped(seq: bytes) -> None:
    assert Responder().split(b"AAA" + seq + b"BBB") == [b"AAA", b"BBB"]
    assert Responder().split(seq) == []


def test_osc_notes() -> None:
    r = Responder()
    assert r.split(b"\x1b]7501;state=working\x07") == [Osc("7501", "state=working")]
    assert r.split(b"x\x1b]7501;state=idle\x1b\\y") == [b"x", Osc("7501", "state=idle"), b"y"]
    assert r.split(b"\x1b]7;file://host/tmp\x07") == [Osc("7", "file://host/tmp")]
    assert r.split("\x1b]9;héllo\x07".encode()) == [Osc("9", "héllo")]
    assert r.split(b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\") == [
        Osc("8", ";http://x"), b"link", Osc("8", ";")]


def test_plain_text_is_one_segment() -> None:
    assert Responder().split(b"just text\r\n") == [b"just text\r\n"]


# -- sequences split across reads ----------------------------------------------------------------

CHUNK = (b"start \x1b[6n mid \x1b]0;My Title\x07 then \x1b]11;?\x1b\\ and \x1b[<u"
         b" \xe2\x9c\x93 \x1b[31mred\x1b[0m \x1bP+q544e\x1b\\ \x1b]7501;state=working\x07 end")
WHOLE = split_all([CHUNK])


def test_reference_split_of_the_chunk() -> None:
    assert WHOLE == [
        b"start ", Query("cpr"), b" mid \x1b]0;My Title\x07 then ",
        Query("osc_colour", b"11", b"\x1b\\"),
        " and  \u2713 \x1b[31mred\x1b[0m ".encode(), Query("xtgettcap", b"544e", b"\x1b\\"),
        b" ", Osc("7501", "state=working"), b" end",
    ]


@pytest.mark.parametrize("at", range(len(CHUNK) + 1))
def test_split_at_every_byte_boundary(at: int) -> None:
    got = split_all([CHUNK[:at], CHUNK[at:]])
    assert got == WHOLE, f"split at {at}: {CHUNK[:at]!r} | {CHUNK[at:]!r}"


def test_split_into_single_bytes() -> None:
    assert split_all(CHUNK[i:i + 1] for i in range(len(CHUNK))) == WHOLE


def test_split_in_three_at_every_pair_of_boundaries_of_each_sequence() -> None:
    for seq in (b"\x1b]11;?\x1b\\", b"\x1bP+q544e\x1b\\", b"\x1b[?2004$p", b"\x1b[<u"):
        data = b"x" + seq + b"y"
        want = split_all([data])
        for i in range(len(data) + 1):
            for j in range(i, len(data) + 1):
                got = split_all([data[:i], data[i:j], data[j:]])
                assert got == want, f"{data[:i]!r} | {data[i:j]!r} | {data[j:]!r}"


def test_a_lone_trailing_escape_is_held_then_released() -> None:
    r = Responder()
    assert merged(r.split(b"abc\x1b")) == [b"abc"]
    assert merged(r.split(b"[6n")) == [Query("cpr")]
    r = Responder()
    assert merged(r.split(b"abc\x1b")) == [b"abc"]
    assert merged(r.split(b"7def")) == [b"\x1b7def"]  # DECSC: for the screen


def test_an_unterminated_sequence_is_not_held_forever() -> None:
    r = Responder()
    got = merged(r.split(b"\x1b]0;" + b"x" * 20000))
    assert got and isinstance(got[0], bytes) and got[0].startswith(b"\x1b]0;")
    assert merged(r.split(b"after")) == [b"after"]


# -- end to end ---------------------------------------------------------------------------------

def test_cursor_query_cli_gets_its_answer(fakes: Path) -> None:
    term = Terminal([sys.executable, str(fakes / "cursor_query.py")], rows=24, cols=80)
    exits: list[tuple[int | None, int | None]] = []
    term.add_exit_listener(lambda code, sig: exits.append((code, sig)))
    try:
        term.start()
        wait_for(lambda: any("cursor at" in line for line in term.lines()),
                 "cursor_query.py to print 'cursor at'")
        assert term.lines()[0] == "cursor at 1;1"
        assert term.queries_answered >= 1
        assert not exits, f"cursor_query.py exited: {exits}"
        wait_for(lambda: term.lines()[1].startswith("$"), "the '$ ' prompt")
        term.write(b"hello\r")
        wait_for(lambda: "ok: hello" in term.lines(), "'ok: hello'")
        assert term.alive
    finally:
        how = term.stop(exit_keys=[b"quit\r"], exit_timeout=5.0)
    assert how == "keys"
    assert exits == [(0, None)]


def test_cursor_query_cli_dies_without_answers(fakes: Path) -> None:
    """The control: with answers off the fake really does give up, so the test above means
    something."""
    term = Terminal([sys.executable, str(fakes / "cursor_query.py")], rows=24, cols=80,
                    answer_queries=False)
    exits: list[tuple[int | None, int | None]] = []
    term.add_exit_listener(lambda code, sig: exits.append((code, sig)))
    try:
        term.start()
        wait_for(lambda: exits, "cursor_query.py to exit without an answer")
        assert exits == [(3, None)]
        assert "no answer to cursor query" in "\n".join(term.lines())
    finally:
        term.stop()


def test_cursor_position_answer_follows_the_screen(fakes: Path) -> None:
    """The answer is the screen's cursor at the moment of the query, after earlier output."""
    script = ("import os,sys,tty,select\n"
              "tty.setraw(0)\n"
              "os.write(1, b'\\r\\n\\r\\n   abc\\x1b[6n')\n"
              "r,_,_ = select.select([0],[],[],5)\n"
              "data = os.read(0, 100) if r else b'none'\n"
              "os.write(1, b'\\r\\ngot ' + data.replace(b'\\x1b', b'ESC') + b'\\r\\n')\n")
    term = Terminal([sys.executable, "-c", script], rows=24, cols=80,
                    env={**os.environ})
    try:
        term.start()
        wait_for(lambda: any(line.startswith("got ") for line in term.lines()),
                 "the child to report what it got")
        assert "got ESC[3;7R" in term.lines()
    finally:
        term.stop()


_SPLIT_PIECES = [b"text ", b"\x1b[12;34H", b"\x1b[1;31m", b"\x1b[6n", b"\x1b[?6n", b"\x1b[5n",
                 b"\x1b[c", b"\x1b[>c", b"\x1b[=c", b"\x1b[>0q", b"\x1b[18t", b"\x1b[?2004$p",
                 b"\x1b[<u", b"\x1b[?u", b"\x1b[>4;1m", b"\x1b[38:5:1m", b"\x1b[1 q",
                 b"\x1b]0;title\x07", b"\x1b]11;?\x1b\\", b"\x1b]7501;state=working\x07",
                 b"\x1bP+q544e\x1b\\", b"\x1b_apc\x1b[1m\x1b\\", b"\x1b[", b"\x1b", b"\x1b]0;",
                 b"\x1b[12", b"\r\n", "é".encode(), b"\x1b[2J", b"\x1b[?25l"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_SPLIT_PIECES), max_size=40), st.data())
def test_the_active_scan_splits_as_the_full_scan_does(pieces: list[bytes],
                                                      data: st.DataObject) -> None:
    import aimterm.term.responder as responder

    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    def run() -> list[object]:
        r = Responder()
        out: list[object] = []
        for chunk in chunks:
            out.extend(r.split(chunk))
        # Screen bytes joined: where a run of them is cut does not matter to the screen.
        merged: list[object] = []
        for item in out:
            if isinstance(item, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += item
            else:
                merged.append(item)
        return merged

    fast = run()
    active = responder._SEQ_ACTIVE
    try:
        responder._SEQ_ACTIVE = responder._SEQ  # every sequence looked at, as before
        full = run()
    finally:
        responder._SEQ_ACTIVE = active
    assert fast == full
