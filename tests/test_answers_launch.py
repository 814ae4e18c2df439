"""The answer memory (once per question, again if its keys were lost) and the launch recipe."""

from __future__ import annotations

import dataclasses
import os

from aimterm.adapter.answers import AnswerMarks
from aimterm.adapter.launch import Launch, expand_template
from tests.helpers import ECHO, fake_adapter


def test_a_question_is_answered_once_then_again_if_it_stays() -> None:
    marks = AnswerMarks(hold_s=1.0, retry_s=3.0)
    assert marks.take("trust", "Trust this folder?", 10.0)
    assert not marks.take("trust", "Trust this folder?", 11.0)  # the tool has not redrawn
    assert marks.take("trust", "Trust other folder?", 11.0)  # a new question for the rule
    assert marks.take("trust", "Trust other folder?", 14.5)  # still there: keys were lost


def test_a_mark_outlives_a_flicker_but_not_the_questions_leaving() -> None:
    marks = AnswerMarks(hold_s=1.0, retry_s=3.0)
    marks.take("edit", "Apply this change?", 0.0)
    marks.forget_gone(["redrawing…"], 0.5)  # gone for a moment right after the answer
    assert len(marks) == 1 and not marks.take("edit", "Apply this change?", 0.6)
    marks.forget_gone(["> "], 2.0)  # gone for good
    assert len(marks) == 0
    assert marks.take("edit", "Apply this change?", 2.1)  # it came back: a new question
    marks.forget_gone(["Apply this change?"], 9.0)  # on screen: kept however long
    assert len(marks) == 1


def test_launch_fills_templates_and_builds_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("DROP_ME", "1")
    base = fake_adapter(ECHO)
    spec = dataclasses.replace(base, command=(*base.command, "--as", "{instance}", "{cwd}"),
                               env=(("WHO", "{instance}@{adapter}"),), env_remove=("DROP_ME",),
                               resume=("--resume",))
    launch = Launch(spec, "fake-7", cwd="/tmp", env={"EXTRA": "x"}, args=["--flag"])
    assert launch.argv() == [*base.command, "--as", "fake-7", "/tmp", "--flag"]
    assert launch.argv(resume=True) == [*base.command, "--as", "fake-7", "/tmp", "--resume",
                                        "--flag"]
    env = launch.environ()
    assert env["WHO"] == "fake-7@fake" and env["EXTRA"] == "x"
    assert env["AIMTERM_INSTANCE"] == "fake-7" and env["TERM"] == spec.terminal.term
    assert "DROP_ME" not in env and "COLUMNS" not in env
    assert launch.workdir() == "/tmp"
    assert expand_template("{home}/x", {"home": os.path.expanduser("~")}) == \
        os.path.expanduser("~") + "/x"
