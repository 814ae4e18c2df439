"""The state table and the one guarded setter: one test per allowed edge, and the rest refused."""

from __future__ import annotations

import pytest

from aimterm.errors import InvalidTransition
from aimterm.events import StateChanged
from aimterm.session import Session
from aimterm.states import TRANSITIONS, State, all_edges, can_transition
from tests.helpers import ECHO, fake_adapter

SPEC = fake_adapter(ECHO)
FORBIDDEN = [(a, b) for a in State for b in State if a is not b and not can_transition(a, b)]


def _session_in(state: State) -> tuple[Session, list[StateChanged]]:
    s = Session(SPEC, instance_id="edge")
    s._state = state
    seen: list[StateChanged] = []
    s.subscribe(lambda e: seen.append(e) if isinstance(e, StateChanged) else None)
    return s, seen


@pytest.mark.parametrize(("old", "new"), all_edges(), ids=lambda s: str(s))
def test_allowed_edge_emits_one_typed_event(old: State, new: State) -> None:
    s, seen = _session_in(old)
    s._set_state(new, "test", rule="r", text="t")
    assert s.state is new
    assert len(seen) == 1
    event = seen[0]
    assert (event.old, event.new, event.reason, event.rule, event.text) == \
        (old.value, new.value, "test", "r", "t")
    assert event.instance == "edge" and event.to_dict()["kind"] == "state_changed"


@pytest.mark.parametrize(("old", "new"), FORBIDDEN, ids=lambda s: str(s))
def test_forbidden_edge_is_refused_without_event(old: State, new: State) -> None:
    s, seen = _session_in(old)
    with pytest.raises(InvalidTransition) as info:
        s._set_state(new, "test")
    assert s.state is old and not seen
    assert f"{old} -> {new}" in str(info.value) and info.value.code == "invalid_transition"


def test_same_state_is_a_no_op() -> None:
    s, seen = _session_in(State.BUSY)
    s._set_state(State.BUSY, "again")
    assert not seen


def test_table_covers_every_state_and_design_edges() -> None:
    assert set(TRANSITIONS) == set(State)
    design = [(State.STARTING, State.IDLE), (State.IDLE, State.BUSY), (State.BUSY, State.IDLE),
              (State.BUSY, State.WAITING), (State.WAITING, State.BUSY),
              (State.STOPPING, State.EXITED), (State.EXITED, State.BACKOFF),
              (State.BACKOFF, State.STARTING), (State.BACKOFF, State.FATAL)]
    for edge in design:
        assert can_transition(*edge), edge
    for state in State:
        if state not in (State.STOPPING, State.EXITED, State.BACKOFF, State.FATAL):
            assert can_transition(state, State.ATTACHED) or state is State.ATTACHED
    assert TRANSITIONS[State.STOPPING] == frozenset({State.EXITED})
