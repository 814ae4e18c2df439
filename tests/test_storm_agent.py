"""The redraw-storm agent (tests/fakes/storm_agent.py) under a real pseudo-terminal: it redraws
the whole screen at its frame rate while busy, numbers its frames on screen and in its trace,
and returns to the idle prompt."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from tests.conftest import FAKES

AGENT = FAKES / "storm_agent.py"
ROWS, COLS = 24, 80


class Term:
    """The agent under pexpect, with a pyte screen playing the terminal."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.child = pexpect.spawn(sys.executable, [str(AGENT), *args], dimensions=(ROWS, COLS),
                                   env=env, timeout=10)
        self.child.delaybeforesend = None
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.bytes = 0

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.02)
            except pexpect.TIMEOUT:
                continue
            self.bytes += len(data)
            self.stream.feed(data)

    def until(self, pred: object, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pump(0.05)
            if pred():  # type: ignore[operator]
                return
        raise AssertionError("screen never matched:\n" + "\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The screen's lines, trailing blank rows dropped (the agent may draw fewer rows)."""
        lines = [line.rstrip() for line in self.screen.display]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def frame(self) -> int:
        m = re.search(r"frame (\d+)", self.lines()[0])
        assert m, self.lines()[0]
        return int(m.group(1))

    def idle(self) -> bool:
        lines = self.lines()
        return len(lines) > 3 and lines[-1] == "  ? for shortcuts" and lines[-3].startswith("❯")

    def busy(self) -> bool:
        lines = self.lines()
        return bool(lines) and "esc to interrupt" in lines[-1]


@pytest.fixture
def term() -> Iterator[list[Term]]:
    made: list[Term] = []
    yield made
    for t in made:
        t.child.close(force=True)


def _trace(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_redraws_counts_frames_and_returns_to_idle(term: list[Term], tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    t = Term("--fps", "20", "--busy", "1", "--trace", str(trace))
    term.append(t)
    t.until(t.idle)
    assert t.lines()[0].startswith("storm-agent · frame 000001")
    t.child.send("hello storm")
    t.until(lambda: "❯ hello storm" in t.lines()[-3])
    t.child.send("\r")
    t.until(t.busy)
    first = t.frame()
    t.pump(0.5)
    assert t.busy()
    assert t.frame() >= first + 5  # 20 frames/s: about 10 in half a second
    t.until(t.idle, timeout=5)
    assert any(line.startswith("● done: hello storm (") for line in t.lines())

    records = _trace(trace)
    busy = [r for r in records if r["state"] == "busy"]
    assert 14 <= len(busy) <= 24, len(busy)  # 1 s at 20 frames/s
    assert [r["frame"] for r in records] == list(range(1, len(records) + 1))
    assert all(r["turn"] == 1 for r in busy)
    final = records[-1]
    assert final["final"] is True and final["prompt"] == "hello storm"
    assert final["state"] == "idle" and not final["interrupted"]
    assert final["frame"] == t.frame()  # the screen shows the newest frame written
    times = [float(r["t"]) for r in busy]
    assert times == sorted(times)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(0.05, abs=0.02)

    t.child.send("/exit\r")
    t.child.expect(pexpect.EOF)
    t.child.close()
    assert t.child.exitstatus == 0


def test_frame_size_rows_and_cols_from_the_environment(term: list[Term], tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    env = {"STORM_TRACE": str(trace), "STORM_FRAME_BYTES": "6000", "STORM_ROWS": "20",
           "STORM_COLS": "60", "STORM_FPS": "10", "PATH": "/usr/bin:/bin"}
    t = Term(env=env)
    term.append(t)
    t.until(t.idle)
    t.child.send("busy 0.6\r")
    t.until(t.busy)
    t.until(t.idle, timeout=5)
    lines = [line.rstrip() for line in t.screen.display]
    assert lines[19] == "  ? for shortcuts"  # 20 rows drawn in the 24-row terminal
    assert not any(lines[20:])
    assert all(len(line) <= 60 for line in lines)
    busy = [r for r in _trace(trace) if r["state"] == "busy"]
    assert 4 <= len(busy) <= 9, len(busy)
    assert all(abs(int(r["bytes"]) - 6000) <= 8 for r in busy), [r["bytes"] for r in busy]


def test_busy_forever_until_escape(term: list[Term], tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    t = Term("--busy", "forever", "--fps", "25", "--trace", str(trace))
    term.append(t)
    t.until(t.idle)
    t.child.send("work\r")
    t.until(t.busy)
    t.pump(1.2)
    assert t.busy()
    t.child.send("\x1b")
    t.until(t.idle)
    assert "Interrupted." in t.lines()
    final = _trace(trace)[-1]
    assert final["final"] is True and final["interrupted"] is True
    # Enter with nothing typed is ignored (a submit recipe's retry must not start a turn).
    t.child.send("\r")
    t.pump(0.3)
    assert t.idle() and _trace(trace)[-1]["frame"] == final["frame"]
    t.child.send("\x04")  # Ctrl-D at the idle prompt
    t.child.expect(pexpect.EOF)
    t.child.close()
    assert t.child.exitstatus == 0
