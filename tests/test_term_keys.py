"""Named keys, bracketed paste, and TextTail's dumb-terminal rendering of a byte stream."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aimterm.term.keys import (
    PASTE_END,
    PASTE_START,
    bracketed_paste,
    is_key,
    key_bytes,
    key_names,
)
from aimterm.term.matcher import TextTail, strip_ansi

# -- keys ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("enter", b"\r"), ("Enter", b"\r"), ("RETURN", b"\r"), ("tab", b"\t"),
    ("escape", b"\x1b"), ("esc", b"\x1b"), ("backspace", b"\x7f"), ("space", b" "),
    ("up", b"\x1b[A"), ("down", b"\x1b[B"), ("right", b"\x1b[C"), ("left", b"\x1b[D"),
    ("home", b"\x1b[H"), ("end", b"\x1b[F"), ("delete", b"\x1b[3~"), ("pageup", b"\x1b[5~"),
    ("f1", b"\x1bOP"), ("F12", b"\x1b[24~"), ("shift-tab", b"\x1b[Z"),
])
def test_named_keys(name: str, expected: bytes) -> None:
    assert key_bytes(name) == expected
    assert is_key(name)


def test_ctrl_letters() -> None:
    for i, letter in enumerate("abcdefghijklmnopqrstuvwxyz", start=1):
        assert key_bytes(f"ctrl-{letter}") == bytes([i])
        assert key_bytes(f"CTRL-{letter.upper()}") == bytes([i])
    assert key_bytes("ctrl-c") == b"\x03"
    assert key_bytes("ctrl-d") == b"\x04"
    assert key_bytes("ctrl-[") == b"\x1b"
    assert key_bytes("ctrl-\\") == b"\x1c"
    assert key_bytes("ctrl-space") == b"\x00"


def test_unknown_key_raises_naming_it() -> None:
    assert not is_key("hyper-x")
    with pytest.raises(KeyError) as info:
        key_bytes("hyper-x")
    assert "hyper-x" in str(info.value)


def test_key_names_are_sorted_and_all_resolve() -> None:
    names = key_names()
    assert names == sorted(names)
    assert {"enter", "ctrl-c", "escape", "up"} <= set(names)
    assert all(key_bytes(n) for n in names if n not in ("ctrl-space", "ctrl-@"))


def test_bracketed_paste() -> None:
    assert bracketed_paste("hello\nworld") == PASTE_START + b"hello\nworld" + PASTE_END
    assert bracketed_paste("héllo") == PASTE_START + "héllo".encode() + PASTE_END


def test_bracketed_paste_strips_embedded_markers() -> None:
    sneaky = "a\x1b[201~rm -rf /\r\x1b[200~b"
    out = bracketed_paste(sneaky)
    assert out == PASTE_START + b"arm -rf /\rb" + PASTE_END
    inner = out[len(PASTE_START):-len(PASTE_END)]
    assert PASTE_END not in inner and PASTE_START not in inner


def test_bracketed_paste_cannot_be_rebuilt_by_stripping() -> None:
    # Removing one marker must not join the halves of another into a new one.
    out = bracketed_paste("\x1b[20\x1b[201~1~")
    inner = out[len(PASTE_START):-len(PASTE_END)]
    assert PASTE_END not in inner


# -- TextTail -----------------------------------------------------------------------------------

def tail_of(*chunks: bytes, max_lines: int = 2000) -> list[str]:
    t = TextTail(max_lines)
    for chunk in chunks:
        t.feed(chunk)
    return t.lines()


def test_text_tail_lines() -> None:
    assert tail_of(b"one\r\ntwo\nthree") == ["one", "two", "three"]
    assert tail_of(b"") == [""]


def test_carriage_return_overwrites() -> None:
    assert tail_of(b"hello\rHE") == ["HEllo"]
    assert tail_of(b"progress 10%\rprogress 100%\r\ndone") == ["progress 100%", "done"]
    assert tail_of(b"abc", b"\r", b"X") == ["Xbc"]


def test_backspace() -> None:
    assert tail_of(b"abc\x08\x08X") == ["aXc"]
    assert tail_of(b"ab\x08\x08\x08\x08Z") == ["Zb"]
    assert tail_of(b"abc\x08 \x08") == ["ab"]


def test_escape_sequences_are_dropped() -> None:
    assert tail_of(b"\x1b[31mred\x1b[0m \x1b]0;title\x07plain \x1b(Bok\x1b[?25h") == [
        "red plain ok"]
    assert strip_ansi("\x1b[1;32mgreen\x1b[m") == "green"


STREAM = ("a\x1b[31mred\x1b[0m b\x1b]0;a title\x07c\x1b]11;?\x1b\\d\x1bP+q544e\x1b\\e"
          "\x1b[?2004h\x1b(Bf ✓ 中\r\nnext").encode()


def test_escape_sequences_split_across_feeds() -> None:
    want = tail_of(STREAM)
    assert want == ["ared bcdef ✓ 中", "next"]
    for at in range(len(STREAM) + 1):
        assert tail_of(STREAM[:at], STREAM[at:]) == want, (at, STREAM[:at], STREAM[at:])


def test_fed_one_byte_at_a_time() -> None:
    assert tail_of(*(STREAM[i:i + 1] for i in range(len(STREAM)))) == ["ared bcdef ✓ 中", "next"]


def test_utf8_split_across_feeds() -> None:
    data = "café ✓ 中文 😀".encode()
    for at in range(len(data) + 1):
        assert tail_of(data[:at], data[at:]) == ["café ✓ 中文 😀"], at


def test_max_lines_bound() -> None:
    t = TextTail(max_lines=5)
    for i in range(100):
        t.feed(b"line %d\r\n" % i)
    lines = t.lines()
    assert len(lines) <= 5
    assert lines[-2:] == ["line 99", ""]
    assert lines[0].startswith("line 9")
    t.feed(b"".join(b"x%d\n" % i for i in range(50)))
    assert len(t.lines()) <= 5
    assert t.lines()[-2] == "x49"


def test_clear() -> None:
    t = TextTail()
    t.feed(b"one\r\ntwo")
    t.clear()
    t.feed(b"three")
    assert t.lines() == ["three"]
    assert t.text() == "three"


def test_unterminated_sequence_is_released_eventually() -> None:
    t = TextTail()
    t.feed(b"\x1b]0;never ends ")
    t.feed(b"x" * 400 + b"\r\nafter")
    assert t.lines()[-1] == "after"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"abc", b"x" * 50, b"\n", b"\r", b"\r\n", b"\x08", b" ",
                                 b"\x1b[31m", b"de\rf", b"\xe2\x9c\x93"]), max_size=40),
       st.integers(1, 30))
def test_text_tail_reads_the_same_however_the_stream_is_cut(pieces: list[bytes],
                                                            cut: int) -> None:
    """Appends at the end of a line are kept apart and joined when looked at: the text must
    not depend on where the reads fell, and tails() is lines() cut to each line's end."""
    data = b"".join(pieces)
    whole, chunked = TextTail(), TextTail()
    whole.feed(data)
    for i in range(0, len(data), cut):
        chunked.feed(data[i:i + cut])
        chunked.tails(8)  # looking in between must not change anything
    assert chunked.lines() == whole.lines()
    assert chunked.tails(8) == [line[-8:] for line in whole.lines()]


def test_a_line_of_megabytes_without_a_newline_costs_linear_time() -> None:
    """Each read used to copy the growing line (and the rules searched it whole): 1 MB took
    1 s and 4 MB 11 s. Eight megabytes in 64 KiB reads, looked at after each, now take well
    under a second; the bound here is generous for a loaded machine."""
    import time

    tail = TextTail()
    chunk = b"x" * 65536
    started = time.process_time()
    for _ in range(128):
        tail.feed(chunk)
        assert len(tail.tails(4096)[-1]) == 4096
    tail.feed(b"\nready> ")
    assert time.process_time() - started < 5.0
    lines = tail.lines()
    assert len(lines[0]) == 128 * 65536 and lines[-1] == "ready>"
