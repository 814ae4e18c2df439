"""A session takes its replies from the tool's own record when its adapter names one: exact
text, tokens and cost, polled for a moment after the screen settles, and the screen's reply
when the record gives nothing. With a fake CLI that renders on screen and records exactly."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aimterm.records import RECORDERS
from aimterm.records.base import RecordedReply, Recorder, TurnQuery, same_prompt
from aimterm.session import Session
from tests.helpers import fake_adapter

RECORDING = fake_adapter("""
command: ["{py}", "{fakes}/recording_cli.py"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^rec>$']}]
settle_ms: 0
submit: {keys: [enter]}
reply: {from: stream, strip: [echo, prompt]}
exit: {keys: [exit, enter], timeout_s: 3}
""", "recording")

EXPECTED = ("said `{}` and a line long enough to wrap on any terminal: "
            "alpha beta gamma delta epsilon zeta eta theta iota kappa")


class FakeRecorder(Recorder):
    """Reads recording_cli.py's JSONL record; ``mode`` (class-wide, set by a test) hides it
    or makes the reader fail."""

    name = "fake"
    mode = "normal"
    made: list[FakeRecorder] = []

    def __init__(self, ctx: object) -> None:
        super().__init__(ctx)  # type: ignore[arg-type]
        self.path = self.ctx.private_dir / "record.jsonl"
        FakeRecorder.made.append(self)

    def launch_env(self) -> dict[str, str]:
        if self.mode == "hidden":
            return {"RECORD_FILE": os.devnull}
        return {"RECORD_FILE": str(self.path)}

    def reply(self, turn: TurnQuery) -> RecordedReply | None:
        if self.mode == "broken":
            raise RuntimeError("a reader bug")
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return None
        entries = [json.loads(line) for line in lines]
        mine = [e for e in entries if same_prompt(e["user"], turn.prompt)]
        if not mine:
            return None
        e = mine[-1]
        return RecordedReply(e["assistant"], e["tokens"], e["cost_usd"], str(self.path))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeRecorder]]:
    monkeypatch.setitem(RECORDERS, "fake", f"{__name__}:FakeRecorder")
    FakeRecorder.mode = "normal"
    FakeRecorder.made = []
    yield FakeRecorder


def _spec(wait_ms: int = 2000) -> object:
    return dataclasses.replace(RECORDING, reply=dataclasses.replace(
        RECORDING.reply, record="fake", record_wait_ms=wait_ms))


def test_the_reply_is_the_record_exactly_with_tokens_and_cost(
        recorder: type[FakeRecorder]) -> None:
    with Session(_spec(), env={"RECORD_DELAY": "0.3"}) as s:  # type: ignore[arg-type]
        for prompt in ("first `one`", "second, with  two   spaces"):
            turn = s.send(prompt, timeout=20)
            assert turn.reply_source == "record"
            assert turn.reply == EXPECTED.format(prompt)  # backticks and one line, as written
            assert turn.tokens == {"input": len(prompt.split()),
                                   "output": len(EXPECTED.format(prompt).split())}
            assert turn.cost_usd == 0.001
            assert turn.to_dict()["reply_source"] == "record"
        private = recorder.made[0].ctx.private_dir
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert private.exists()  # kept across a stop: a restart may resume from it
    del s
    import gc

    gc.collect()
    assert not private.exists()  # a temporary folder: gone with the session


def test_without_the_record_the_screen_gives_the_reply_and_later_turns_wait_less(
        recorder: type[FakeRecorder]) -> None:
    recorder.mode = "hidden"
    with Session(_spec(wait_ms=1500)) as s:  # type: ignore[arg-type]
        first = s.send("where is it", timeout=20)
        assert first.reply_source == "screen"
        assert "said where is it and a line" in first.reply  # the rendered screen text
        started = time.monotonic()
        second = s.send("still nothing", timeout=20)
        assert second.reply_source == "screen"
        assert time.monotonic() - started < 1.2  # after a miss the record is waited on briefly


def test_a_reader_that_fails_leaves_the_screen_reply(recorder: type[FakeRecorder]) -> None:
    recorder.mode = "broken"
    with Session(_spec()) as s:  # type: ignore[arg-type]
        turn = s.send("try it", timeout=20)
        assert turn.ok and turn.reply_source == "screen" and "said try it" in turn.reply


def test_the_private_folder_sits_beside_the_transcript(recorder: type[FakeRecorder],
                                                       tmp_path: Path) -> None:
    cast = tmp_path / "logs" / "rec-1.cast"
    with Session(_spec(), instance_id="rec-1", transcript=cast) as s:  # type: ignore[arg-type]
        assert s.send("hello", timeout=20).reply_source == "record"
    private = tmp_path / "logs" / "rec-1.record"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert (private / "record.jsonl").is_file()  # kept: it outlives one run
