"""The Gemini CLI recording (tests/fixtures/gemini.cast) replayed through the adapter's rules,
without the CLI: start-up, a plain turn, and a turn whose file edit was approved.

The recording was made with ``aimterm adapter record gemini`` against the fake model, with a
throwaway HOME set up like the live tests' (API-key auth selected, the folder trusted, so no
start-up dialog) and a user adapter ``gemini.yaml`` that extends the built-in one with one
answer rule (approve edits inside the working tree) — the built-in adapter approves nothing.
Each turn was submitted with the adapter's End + Enter, End + Enter: the second Enter, typed
while the turn already runs, is not a turn of its own.
"""

from __future__ import annotations

from pathlib import Path

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.replay import explain_file
from aimterm.testing.plugin import AdapterDir

CAST = str(Path(__file__).parent / "fixtures" / "gemini.cast")

EDIT_RULE = r"""
name: gemini
extends: gemini
answers:
  - name: edit-in-tree
    match: '(?s)^│ \? (?:WriteFile|Edit)\s+(?:Writing to )?(?P<file>[^\s:│]+).*?Apply this change\?'
    when: {file: '^(?!/)(?!\.\./)(?!\.\.$)'}
    send: "1"
"""


def test_replay_with_the_edit_rule_matches_the_live_run(aimterm_adapters: AdapterDir) -> None:
    aimterm_adapters.add("gemini", EDIT_RULE)
    result = explain_file(load_adapter("gemini"), CAST)
    assert result.states() == ["idle", "busy", "idle", "busy", "idle"]
    assert result.turns == 2
    assert result.flags == []
    assert [rule for _t, rule, _q in result.answered] == ["edit-in-tree"]


def test_builtin_adapter_waits_on_the_edit(aimterm_adapters: AdapterDir) -> None:
    """The built-in adapter has no answers: the same approval box is a question (WAITING)
    naming the file; the only flag is that the live run (which had the rule) disagreed."""
    result = explain_file(load_adapter("gemini"), CAST)
    assert result.states() == ["idle", "busy", "idle", "busy", "waiting", "busy", "idle"]
    waiting = [c for c in result.changes if c.new == "waiting"]
    assert waiting[0].rule == "tool-confirm" and "WriteFile  Writing to notes.txt" in waiting[0].text
    assert result.turns == 2
    assert [f.kind for f in result.flags] == ["mismatch"]
