"""Live and replay decide alike: each real agent CLI's recording, replayed through the adapter it
was recorded with, gives the very state changes — same states, rules and reasons, in the same
order, at nearly the same moments — that the live session wrote into it as it ran.

Both go through :mod:`aimterm.adapter.tracker`; this is the check that they cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.replay import explain_file
from aimterm.states import State
from tests import test_replay_aider, test_replay_claude, test_replay_codex, test_replay_gemini
from tests.helpers import use_adapter_override

FIXTURES = Path(__file__).parent / "fixtures"

#: The user adapter each recording was made with (the built-in plus its answer rule).
OVERRIDES = {
    "aider": test_replay_aider.USER_AIDER,
    "claude": test_replay_claude.OVERRIDE,
    "codex": test_replay_codex.OVERRIDE,
    "gemini": test_replay_gemini.EDIT_RULE,
}
DETECTED = {State.IDLE, State.BUSY, State.WAITING}
#: How far a decision the screen drives (settle, busy, a question) may lie from the live one:
#: the live settle timer fires a little late, and its marker goes out a loop pass after it.
SLACK_S = 0.05
#: A turn starts live when the prompt is taken, and in the recording when its Enter is typed:
#: later, by the submit recipe's pauses.
TYPING_S = 0.5


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_replay_makes_the_live_sessions_decisions(name: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    use_adapter_override(tmp_path, monkeypatch, name, OVERRIDES[name])
    result = explain_file(load_adapter(name), str(FIXTURES / f"{name}.cast"))
    live = [c for c in result.recorded if c.new in DETECTED]
    ours = result.changes
    assert len(live) >= 5, "the recording holds the live session's state markers"
    assert [(c.old, c.new, c.rule, c.reason) for c in ours] == \
        [(c.old, c.new, c.rule, c.reason) for c in live]
    for mine, theirs in zip(ours, live, strict=True):
        if mine.reason == "turn started":
            assert 0 <= mine.t - theirs.t < TYPING_S, (mine, theirs)
        else:
            assert abs(mine.t - theirs.t) < SLACK_S, (mine, theirs)
    assert not [f for f in result.flags if f.kind == "mismatch"]
