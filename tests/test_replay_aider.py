"""The aider adapter's rules replayed over a recording of the real aider (no aider needed).

``tests/fixtures/aider.cast`` was made with ``aimterm adapter record aider`` against the fake
model server, with a throwaway HOME (the configuration of ``tests/live/test_aider_live.py``)
and two prompts: a question, then a request whose reply is a "whole" format edit block
creating ``greeting.txt``. The repository had no ``.gitignore``, so aider first asked to add
``.aider*`` to it (the built-in startup dialog declines). The "Create new file?" question was
approved by a user adapter named ``aider`` that extends the built-in one with a single rule,
found through ``AIMTERM_ADAPTER_PATH`` (the built-in adapter approves nothing).
"""

from __future__ import annotations

from pathlib import Path

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.replay import explain_file
from aimterm.testing.plugin import AdapterDir

CAST = str(Path(__file__).parent / "fixtures" / "aider.cast")
BUILTIN = Path(__file__).resolve().parent.parent / "adapters" / "aider.yaml"

# The user adapter the recording was made with: the built-in plus one answer rule (the same
# as the fleet's in tests/live/test_aider_live.py).
EDIT_MATCH = (r"^(?P<file>\S[^\n]*)\n(?:Create new file|Allow edits to file that has not been added"
              r" to the chat)\? \(Y\)es/\(N\)o[^\n]*\]: ?$")
USER_AIDER = r"""
name: aider
extends: aider
answers:
  - name: edit-in-tree
    region: cursor:2
    match: 'EDIT_MATCH'
    when: {file: '^(?!/)(?!~)(?!(?:.*/)?\.\.(?:/|$))'}
    send: ['y', enter]
""".replace("EDIT_MATCH", EDIT_MATCH)

QUESTION = "greeting.txt\nCreate new file? (Y)es/(N)o [Yes]:"


def _changes(result) -> list[tuple[str, str, str | None]]:
    return [(c.old, c.new, c.rule) for c in result.changes]


def test_replay_through_the_adapter_it_was_recorded_with(aimterm_adapters: AdapterDir) -> None:
    aimterm_adapters.add("aider", USER_AIDER)
    spec = load_adapter("aider")
    assert spec.name == "aider" and [a.name for a in spec.answers] == ["edit-in-tree"]
    result = explain_file(spec, CAST)
    assert _changes(result) == [
        ("starting", "idle", "prompt"),
        ("idle", "busy", None),   # turn 1 started
        ("busy", "idle", "prompt"),
        ("idle", "busy", None),   # turn 2 started; its question is answered by the rule
        ("busy", "idle", "prompt"),
    ]
    assert result.turns == 2
    assert [(rule, q) for _t, rule, q in result.answered] == [
        ("gitignore", "Add .aider* to .gitignore (recommended)? (Y)es/(N)o [Yes]:"),
        ("edit-in-tree", QUESTION),
    ]
    assert result.flags == []


def test_replay_through_the_builtin_adapter_waits_on_the_question(
        aimterm_adapters: AdapterDir) -> None:
    spec = load_adapter(BUILTIN)
    assert spec.name == "aider" and spec.answers == ()
    result = explain_file(spec, CAST)
    # The built-in adapter leaves "Create new file?" to the caller: WAITING, then busy again
    # once the answer typed in the recording shows on the line, then idle at the prompt.
    assert _changes(result) == [
        ("starting", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "idle", "prompt"),
        ("idle", "busy", None),
        ("busy", "waiting", "question"),
        ("waiting", "busy", "line-taken"),
        ("busy", "idle", "prompt"),
    ]
    assert result.changes[4].text == QUESTION
    assert result.turns == 2
    # The one flag says exactly that: the live run had a rule answer it without waiting.
    assert [f.kind for f in result.flags] == ["mismatch"]
