"""The claude adapter against a recording of the real Claude Code (runs without the CLI).

``tests/fixtures/claude.cast`` was made with ``aimterm adapter record claude`` against the fake
model server, in a throwaway HOME (/var/tmp/aimterm-claude-rec/home, whose
``.claude/settings.json`` selects the "manual" permission mode), with two prompts: a plain one,
and one whose scripted answer is a file write, so Claude Code asks "Create file … Do you want
to create notes.txt?". The recording used a user-level override ``claude.yaml``
(``extends: claude`` plus the answer rule below) found through ``$AIMTERM_ADAPTER_PATH``; the
test puts the same override on the search path, so ``load_adapter("claude")`` is what the live
run used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.replay import explain_file
from aimterm.testing.plugin import AdapterDir

CAST = Path(__file__).parent / "fixtures" / "claude.cast"

#: The Create/Edit/Overwrite dialog, its path and its "1. Yes" option.
MATCH = (r"^ (?:Create|Edit|Overwrite) file\n (?P<file>\S+)\n(?:.*\n)*?"
         r" Do you want to (?:create|make this edit to|overwrite) (?P<target>\S+)\?\n ❯ 1\. Yes")

OVERRIDE = r"""
extends: claude
answers:
  - name: edit-in-tree
    match: '{MATCH}'
    when: {file: '^(?![/~])(?!\.\.?/)(?!.*/\.\./)(?!\.\.$)', target: '^(?![/~])(?!\.\./)'}
    send: "1"
""".replace("{MATCH}", MATCH)

STARTUP = ["theme", "security-notes", "trust-move", "trust-yes"]


@pytest.fixture
def with_override(aimterm_adapters: AdapterDir) -> None:
    aimterm_adapters.add("claude", OVERRIDE)


def test_claude_recording_replays_as_recorded(with_override: None) -> None:
    spec = load_adapter("claude")
    assert [a.name for a in spec.answers] == ["edit-in-tree"]
    result = explain_file(spec, str(CAST))
    assert result.flags == []
    assert result.turns == 2
    # start-up: theme, security notes, the trust dialog (moved off "No, exit", then
    # confirmed), then idle; turn 1 plain; turn 2 with the file creation approved by the rule
    # (busy throughout, no WAITING), then idle.
    assert result.states() == ["idle", "busy", "idle", "busy", "idle"]
    assert [(c.old, c.new, c.rule) for c in result.changes] == [
        ("starting", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "idle", "prompt"),
    ]
    assert [rule for _t, rule, _q in result.answered] == [*STARTUP, "edit-in-tree"]
    # The trust dialog came up on "No, exit" and was confirmed only once "Yes" was selected.
    assert [q for _t, rule, q in result.answered if rule.startswith("trust")] == [
        "❯ No, exit", "❯ Yes, I trust this folder"]
    edit_question = result.answered[-1][2]
    assert edit_question.startswith("Create file\n notes.txt\n")
    assert edit_question.endswith(" Do you want to create notes.txt?\n ❯ 1. Yes")
    # The first idle comes only after every start-up dialog was answered.
    assert result.changes[0].t > result.answered[len(STARTUP) - 1][0]


def test_builtin_claude_adapter_approves_nothing(aimterm_adapters: AdapterDir) -> None:
    spec = load_adapter("claude")
    assert spec.answers == ()
    result = explain_file(spec, str(CAST))
    assert result.turns == 2
    # Without the user's answer rule the same screens make the session WAIT on the file
    # creation, naming the file and the options; the live run (which had the rule) did not,
    # hence the one mismatch flag.
    assert result.states() == ["idle", "busy", "idle", "busy", "waiting", "busy", "idle"]
    waiting = next(c for c in result.changes if c.new == "waiting")
    assert waiting.rule == "permission"
    assert waiting.text.startswith("Create file\n notes.txt\n")
    assert " Do you want to create notes.txt?\n ❯ 1. Yes\n" in waiting.text
    assert waiting.text.endswith("   3. No\n\n Esc to cancel · Tab to amend")
    assert [rule for _t, rule, _q in result.answered] == STARTUP
    assert [f.kind for f in result.flags] == ["mismatch"]


CAST_197 = Path(__file__).parent / "fixtures" / "claude-2.1.197.cast"


def test_claude_2_1_197_first_run_dialogs(aimterm_adapters: AdapterDir) -> None:
    """``claude-2.1.197.cast``: Claude Code 2.1.197 (``aimterm adapter record claude`` with it
    first on PATH, a fresh HOME, the fake model) and two prompts, a short one and a ~300
    character one with quotes, backticks, non-Latin scripts and emoji. Its trust dialog
    numbers the options and comes up on "❯ 1. Yes, I trust this folder": confirmed at once,
    with no move, and the session gets to idle."""
    spec = load_adapter("claude")
    assert "2.1.197" in spec.verified
    result = explain_file(spec, str(CAST_197))
    assert result.flags == []
    assert [rule for _t, rule, _q in result.answered] == ["theme", "security-notes",
                                                         "trust-yes"]
    assert result.answered[-1][2] == "❯ 1. Yes, I trust this folder"
    assert result.turns == 2
    assert result.states() == ["idle", "busy", "idle", "busy", "idle"]
