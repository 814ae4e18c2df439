"""Transcripts: a Terminal writes a valid asciicast v2 file, with input and markers, that
read_recording (and asciinema itself, when installed) can read back."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from aimterm.term.terminal import Terminal
from aimterm.term.transcript import TranscriptWriter, read_recording
from tests.helpers import wait_for

BASH = ["bash", "--norc", "--noprofile", "-c"]


def run_to_exit(argv: list[str], path: Path, **kwargs: object) -> Terminal:
    term = Terminal(argv, transcript=path, **kwargs)  # type: ignore[arg-type]
    try:
        term.start()
        wait_for(lambda: not term.alive, f"{argv} to exit")
    finally:
        term.stop()
    return term


def raw_lines(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def output_text(path: Path) -> str:
    return "".join(e[2] for e in raw_lines(path)[1:] if e[1] == "o")  # type: ignore[index]


def test_terminal_writes_a_valid_asciicast(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "run.cast"  # the directory is created
    run_to_exit([*BASH, 'printf "h\\303\\251llo\\n"; sleep 0.1; printf "bye\\n"'], path,
                rows=30, cols=100)
    header, *events = raw_lines(path)
    assert isinstance(header, dict)
    assert header["version"] == 2
    assert (header["width"], header["height"]) == (100, 30)
    assert isinstance(header["timestamp"], int)
    assert header["env"]["TERM"]
    assert "printf" in header["command"]
    assert events, "no events"
    times = []
    for event in events:
        assert isinstance(event, list) and len(event) == 3, event
        t, code, data = event
        assert isinstance(t, float | int) and t >= 0
        assert code in ("o", "i", "m", "r")
        assert isinstance(data, str)
        times.append(t)
    assert times == sorted(times)
    text = output_text(path)
    assert "héllo" in text and "bye" in text
    assert "\ufffd" not in text
    assert text.index("héllo") < text.index("bye")


def test_the_file_is_plain_utf8_not_escaped(tmp_path: Path) -> None:
    path = tmp_path / "run.cast"
    run_to_exit([*BASH, 'printf "h\\303\\251llo\\n"'], path)
    assert "héllo" in path.read_text(encoding="utf-8")


def test_utf8_split_across_reads_stays_intact(tmp_path: Path) -> None:
    # Two writes with a pause between: the reader sees them in separate reads (almost always;
    # the decoder is checked directly below either way).
    script = ("import os, time\n"
              "os.write(1, b'caf\\xc3')\n"
              "time.sleep(0.2)\n"
              "os.write(1, b'\\xa9 \\xe4\\xb8')\n"
              "time.sleep(0.2)\n"
              "os.write(1, b'\\xad done\\r\\n')\n")
    path = tmp_path / "split.cast"
    run_to_exit([sys.executable, "-c", script], path)
    text = output_text(path)
    assert "café 中 done" in text
    assert "\ufffd" not in text


def test_writer_decodes_utf8_split_across_chunks(tmp_path: Path) -> None:
    data = "héllo ✓ 中文 😀\r\n".encode()
    for at in range(len(data) + 1):
        path = tmp_path / f"w{at}.cast"
        w = TranscriptWriter(path, rows=24, cols=80)
        w.output(data[:at], 1.0)
        w.output(data[at:], 2.0)
        w.close()
        assert output_text(path) == data.decode(), at


def test_input_markers_and_resize_are_recorded(tmp_path: Path, fakes: Path) -> None:
    path = tmp_path / "repl.cast"
    term = Terminal([sys.executable, str(fakes / "echo_repl.py")], transcript=path,
                    rows=24, cols=80)
    try:
        term.start()
        wait_for(lambda: "ready>" in "".join(term.lines()), "the echo_repl prompt")
        term.marker("state:idle")
        term.write(b"hi there\r")
        wait_for(lambda: "echo: hi there" in term.lines(), "the echo")
        term.resize(30, 100)
        term.marker("state:busy ✓")
    finally:
        how = term.stop(exit_keys=[b"exit\r"])
    assert how == "keys"
    rec = read_recording(path)
    kinds = [(code, data) for _, code, data in rec.events if code != "o"]
    # Exit keys go straight to the child in stop(), so only what was typed shows as input.
    assert kinds == [("m", "state:idle"), ("i", "hi there\r"), ("r", "100x30"),
                     ("m", "state:busy ✓")]
    times = [t for t, _, _ in rec.events]
    assert times == sorted(times)
    assert "echo: hi there" in "".join(d.decode() for _, d in rec.output())


def test_markers_after_exit_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "done.cast"
    term = run_to_exit([*BASH, "echo done"], path)
    term.marker("too late")  # the transcript closed with the child: no error, no event
    assert all(code != "m" for _, code, _ in read_recording(path).events)


def test_read_recording(tmp_path: Path) -> None:
    path = tmp_path / "ok.cast"
    path.write_text('{"version": 2, "width": 90, "height": 20}\n'
                    '[0.5, "o", "h\\u00e9"]\n'
                    '\n'
                    '[1, "m", "mark"]\n'
                    '[1.5, "o", "llo"]\n', encoding="utf-8")
    rec = read_recording(path)
    assert (rec.rows, rec.cols) == (20, 90)
    assert rec.events == [(0.5, "o", "hé"), (1.0, "m", "mark"), (1.5, "o", "llo")]
    assert list(rec.output()) == [(0.5, "hé".encode()), (1.5, b"llo")]


@pytest.mark.parametrize(("body", "line"), [
    ('[0.5, "o", "fine"]\nnot json at all\n', 3),
    ('[0.5, "o", "fine"]\n[1.0, "o"]\n', 3),
    ('[0.5, "o", "fine"]\n[0.7, "o", "fine"]\n{"t": 1}\n', 4),
    ('[0.5, "o", "fine"]\n["soon", "o", "x"]\n', 3),
    ('[0.5, "o", "fine"]\n"abc"\n', 3),
    ('[0.5, "o", "fine"]\n[null, "o", "x"]\n', 3),
])
def test_read_recording_names_the_bad_line(tmp_path: Path, body: str, line: int) -> None:
    path = tmp_path / "bad.cast"
    path.write_text('{"version": 2, "width": 80, "height": 24}\n' + body, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_recording(path)
    assert f"{path}:{line}:" in str(info.value)


@pytest.mark.parametrize("header", ['not json\n', '{"version": 1}\n', '[1, 2]\n', ''])
def test_read_recording_rejects_a_bad_header(tmp_path: Path, header: str) -> None:
    path = tmp_path / "bad.cast"
    path.write_text(header + '[0.5, "o", "x"]\n', encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_recording(path)
    assert f"{path}:1:" in str(info.value)


def test_asciinema_cat_reads_the_transcript(tmp_path: Path) -> None:
    if importlib.util.find_spec("asciinema") is None:
        pytest.skip("asciinema is not installed (pip install asciinema)")
    path = tmp_path / "run.cast"
    term = Terminal([*BASH, 'read line; printf "h\\303\\251llo %s\\n" "$line"; '
                     'sleep 0.1; printf "bye\\n"'], transcript=path)
    try:
        term.start()
        term.marker("start")
        term.write(b"world\r")
        wait_for(lambda: not term.alive, "bash to exit")
    finally:
        term.stop()
    proc = subprocess.run([sys.executable, "-m", "asciinema", "cat", str(path)],
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = proc.stdout.decode("utf-8")
    assert "héllo world" in out and "bye" in out


def test_a_lazy_screen_holds_bounded_output_and_still_shows_the_last_lines() -> None:
    # A stream tool nobody looks at (no attach, no screen rules) writes megabytes over a
    # long run: the undrawn bytes stay bounded, and the screen, when asked, is still right.
    from aimterm.term import terminal as terminal_mod

    script = "import sys\nfor i in range(60000):\n    sys.stdout.write(f'line {i}\\n')\n"
    term = Terminal([sys.executable, "-c", script], rows=24, cols=80, lazy_screen=True)
    try:
        term.start()
        wait_for(lambda: term.bytes_in >= sum(len(f"line {i}\r\n") for i in range(60000)),
                 "all the output", timeout=30)
        assert term.bytes_in > 4 * terminal_mod._LAZY_MAX
        assert term._pending_bytes <= terminal_mod._LAZY_MAX
        lines = [line for line in term.lines() if line]
        assert lines[-3:] == ["line 59997", "line 59998", "line 59999"]
    finally:
        term.stop()


def test_writer_rolls_over_past_max_bytes_and_keeps_three(tmp_path: Path) -> None:
    path = tmp_path / "busy.cast"
    w = TranscriptWriter(path, rows=24, cols=80, max_bytes=2000)
    for i in range(400):
        w.output(f"line {i}\r\n".encode())
    w.resize(30, 100)
    for i in range(400, 500):
        w.output(f"line {i}\r\n".encode())
    w.output(b"last\r\n")
    w.close()
    assert w.rolled > 3
    files = [tmp_path / "busy.cast.3", tmp_path / "busy.cast.2", tmp_path / "busy.cast.1", path]
    assert all(f.exists() for f in files) and not (tmp_path / "busy.cast.4").exists()
    texts = []
    for f in files:
        assert f.stat().st_size < 2000 + 200  # one event past the limit at most
        rec = read_recording(f)
        assert rec.header["aimterm"] == {"continued": True}
        texts.append("".join(d.decode() for _, d in rec.output()))
    # Oldest to newest, the kept files are one unbroken stretch of the output, up to the end.
    joined = "".join(texts)
    assert joined.endswith("line 498\r\nline 499\r\nlast\r\n")
    first = int(joined.split("\r\n")[0].split()[1])
    assert joined == "".join(f"line {i}\r\n" for i in range(first, 500)) + "last\r\n"
    # A file started after the resize has the new size in its header.
    assert (read_recording(path).cols, read_recording(path).rows) == (100, 30)
