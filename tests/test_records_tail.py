"""FileTail: what a record reader reads of a file a tool appends to."""

from __future__ import annotations

import os
from pathlib import Path

from aimterm.records.tail import FileTail, iso_timestamp


def test_lines_partial_lines_and_catching_up(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    tail = FileTail(path, chunk=8)
    assert tail.read() is None  # not there yet
    path.write_bytes(b'{"a":1}\n{"b":')
    assert tail.read() == ([b'{"a":1}'], False)
    assert tail.read() == ([], False) and not tail.behind
    with open(path, "ab") as f:
        f.write(b'2}\n\n{"c":3}\n{"d":4}\n')
    lines: list[bytes] = []
    while True:
        got = tail.read()
        assert got is not None
        lines += got[0]
        if not tail.behind:
            break
    assert lines == [b'{"b":2}', b'{"c":3}', b'{"d":4}']


def test_a_replaced_or_truncated_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"one\ntwo\n")
    tail = FileTail(path)
    assert tail.read() == ([b"one", b"two"], False)
    path.write_bytes(b"x\n")  # truncated
    assert tail.read() == ([b"x"], True)
    other = tmp_path / "new.jsonl"
    other.write_bytes(b"x\ny\nz\n")
    os.replace(other, path)  # replaced: another inode, though longer
    assert tail.read() == ([b"x", b"y", b"z"], True)


def test_an_over_long_line_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"short\n" + b"x" * 100 + b"\nafter\n")
    tail = FileTail(path, chunk=30, max_line=40)
    lines: list[bytes] = []
    for _ in range(10):
        got = tail.read()
        assert got is not None
        lines += got[0]
    assert lines == [b"short", b"after"]


def test_at_end_reads_only_what_comes_next(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"old\n")
    tail = FileTail.at_end(path)
    with open(path, "ab") as f:
        f.write(b"new\n")
    assert tail.read() == ([b"new"], False)


def test_iso_timestamps() -> None:
    assert iso_timestamp("1970-01-01T00:00:01.500Z") == 1.5
    assert iso_timestamp("nope") is None and iso_timestamp(12) is None
