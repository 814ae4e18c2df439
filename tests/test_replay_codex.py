"""The codex adapter against a recording of the real Codex CLI (runs without the CLI).

``tests/fixtures/codex.cast`` was made with ``aimterm adapter record codex`` against the fake
model server, in a throwaway HOME (/var/tmp/aimterm-codex-rec/home), with two prompts: a plain
one, and one whose scripted answer is a file edit, so codex asks "Would you like to make the
following edits?". The recording used a user-level override ``codex.yaml`` (``extends: codex``
plus the answer rule below) found through ``$AIMTERM_ADAPTER_PATH``; the test puts the same
override on the search path, so ``load_adapter("codex")`` is what the live run used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.replay import explain_file
from aimterm.testing.plugin import AdapterDir

CAST = Path(__file__).parent / "fixtures" / "codex.cast"

OVERRIDE = r"""
extends: codex
answers:
  - name: edit-in-tree
    match: 'Would you like to make the following edits\?(?:\n.*){0,6}?\n  Destination: (?P<file>/\S+)'
    when: {file: '^/var/tmp/aimterm-codex-rec/work/(?!.*\.\./)'}
    send: "y"
"""


@pytest.fixture
def with_override(aimterm_adapters: AdapterDir) -> None:
    aimterm_adapters.add("codex", OVERRIDE)


def test_codex_recording_replays_as_recorded(with_override: None) -> None:
    spec = load_adapter("codex")
    assert [a.name for a in spec.answers] == ["edit-in-tree"]
    result = explain_file(spec, str(CAST))
    assert result.flags == []
    assert result.turns == 2
    # start-up: the trust-folder dialog, then idle; turn 1 plain; turn 2 with the edit approved
    # by the rule (busy throughout, no WAITING), then idle.
    assert result.states() == ["idle", "busy", "idle", "busy", "idle"]
    assert [(c.old, c.new, c.rule) for c in result.changes] == [
        ("starting", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "idle", "prompt"),
    ]
    assert [rule for _t, rule, _q in result.answered] == ["trust-folder", "edit-in-tree"]
    edit_question = result.answered[1][2]
    assert edit_question.endswith("Destination: /var/tmp/aimterm-codex-rec/work/notes.txt")
    # The first idle comes after the loading frame (which already shows the prompt and
    # "? for shortcuts") and after the trust dialog: only once the status row is drawn.
    assert result.changes[0].t > result.answered[0][0]
    assert "GPT-5.5 default · " in result.changes[0].text


def test_builtin_codex_adapter_approves_nothing(aimterm_adapters: AdapterDir) -> None:
    spec = load_adapter("codex")
    assert spec.answers == ()
    result = explain_file(spec, str(CAST))
    # Without the user's answer rule the same screens make the session WAIT on the edit,
    # naming the file; the live run (which had the rule) did not, hence the one mismatch flag.
    assert result.states() == ["idle", "busy", "idle", "busy", "waiting", "busy", "idle"]
    waiting = next(c for c in result.changes if c.new == "waiting")
    assert waiting.rule == "edit-approval"
    assert "Destination: /var/tmp/aimterm-codex-rec/work/notes.txt" in waiting.text
    assert [f.kind for f in result.flags] == ["mismatch"]
