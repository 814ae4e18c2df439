"""The turn tracker: its edge table (every allowed edge reached through its inputs, every other
edge refused), the verify recipe on a fake clock, and the verdict table both the live session
and replay act on."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aimterm.adapter.spec import AdapterSpec
from aimterm.adapter.tracker import (
    FINAL,
    PHASE_EDGES,
    SETTLEABLE,
    Phase,
    Step,
    TurnTracker,
    VerifyStep,
    check_edge,
    phase_edges,
    react,
    settle_seconds,
)
from aimterm.errors import InvalidTransition
from aimterm.states import State
from tests.helpers import ECHO, fake_adapter

P = Phase
Input = Callable[[TurnTracker], object]

#: The tracker's inputs, by name, each at a time the tests do not care about.
INPUTS: dict[str, Input] = {
    "keys_out": lambda t: t.keys_out(1.0),
    "output": lambda t: t.output(1.5),
    "busy": lambda t: t.busy(2.0),
    "verify_fired": lambda t: t.verify_fired(3.0, screen_moved=False),
    "verify_moved": lambda t: t.verify_fired(3.0, screen_moved=True),
    "asked": lambda t: t.asked(),
    "answered": lambda t: t.answered(),
    "interrupt": lambda t: t.interrupt(),
    "settled": lambda t: t.settled(),
    "failed": lambda t: t.failed(),
    "exited": lambda t: t.exited(),
}

#: For each allowed edge, the inputs (from a fresh "busy"-verified turn) that end on it.
ROUTES: dict[tuple[Phase, Phase], list[str]] = {
    (P.TYPING, P.SUBMITTED): ["keys_out"],
    (P.TYPING, P.VERIFIED): ["busy"],
    (P.TYPING, P.WAITING): ["asked"],
    (P.TYPING, P.INTERRUPTING): ["interrupt"],
    (P.TYPING, P.FAILED): ["failed"],
    (P.TYPING, P.EXITED): ["exited"],
    (P.SUBMITTED, P.VERIFIED): ["keys_out", "busy"],
    (P.SUBMITTED, P.WAITING): ["keys_out", "asked"],
    (P.SUBMITTED, P.INTERRUPTING): ["keys_out", "interrupt"],
    (P.SUBMITTED, P.FAILED): ["keys_out", "failed"],
    (P.SUBMITTED, P.EXITED): ["keys_out", "exited"],
    (P.VERIFIED, P.WAITING): ["keys_out", "busy", "asked"],
    (P.VERIFIED, P.INTERRUPTING): ["keys_out", "busy", "interrupt"],
    (P.VERIFIED, P.DONE): ["keys_out", "busy", "settled"],
    (P.VERIFIED, P.FAILED): ["keys_out", "busy", "failed"],
    (P.VERIFIED, P.EXITED): ["keys_out", "busy", "exited"],
    (P.WAITING, P.VERIFIED): ["keys_out", "busy", "asked", "answered"],
    (P.WAITING, P.INTERRUPTING): ["keys_out", "busy", "asked", "interrupt"],
    (P.WAITING, P.DONE): ["keys_out", "busy", "asked", "settled"],
    (P.WAITING, P.INTERRUPTED): ["keys_out", "busy", "interrupt", "asked", "settled"],
    (P.WAITING, P.FAILED): ["keys_out", "busy", "asked", "failed"],
    (P.WAITING, P.EXITED): ["keys_out", "busy", "asked", "exited"],
    (P.INTERRUPTING, P.WAITING): ["keys_out", "busy", "interrupt", "asked"],
    (P.INTERRUPTING, P.INTERRUPTED): ["keys_out", "busy", "interrupt", "settled"],
    (P.INTERRUPTING, P.FAILED): ["keys_out", "busy", "interrupt", "failed"],
    (P.INTERRUPTING, P.EXITED): ["keys_out", "busy", "interrupt", "exited"],
}

FORBIDDEN = [(a, b) for a in Phase for b in Phase if b not in PHASE_EDGES[a]]


def tracker(verify: str = "busy", *, timeout: float = 1.0, retry: int = 1,
            stream: bool = False) -> TurnTracker:
    return TurnTracker(verify, timeout, retry, stream=stream)


def test_routes_cover_the_table_exactly() -> None:
    assert set(ROUTES) == set(phase_edges())
    assert set(PHASE_EDGES) == set(Phase)
    assert FINAL == {P.DONE, P.INTERRUPTED, P.FAILED, P.EXITED}


@pytest.mark.parametrize(("old", "new"), phase_edges(), ids=str)
def test_every_allowed_edge_is_reached_through_the_inputs(old: Phase, new: Phase) -> None:
    t = tracker()
    path = [t.phase]
    for name in ROUTES[(old, new)]:
        INPUTS[name](t)
        if t.phase is not path[-1]:
            path.append(t.phase)
    assert path[-2:] == [old, new]
    check_edge(old, new)  # (and the table says so)


@pytest.mark.parametrize(("old", "new"), FORBIDDEN, ids=str)
def test_every_other_edge_is_refused(old: Phase, new: Phase) -> None:
    with pytest.raises(InvalidTransition) as info:
        check_edge(old, new)
    assert f"turn {old} -> {new}" in str(info.value)
    assert info.value.code == "invalid_transition"


@pytest.mark.parametrize("phase", sorted(set(Phase) - SETTLEABLE, key=list(Phase).index),
                         ids=str)
def test_settling_a_turn_the_tool_never_took_is_refused(phase: Phase) -> None:
    t = tracker()
    t.phase = phase
    with pytest.raises(InvalidTransition):
        t.settled()
    assert t.phase is phase


@given(st.lists(st.sampled_from(sorted(set(INPUTS) - {"settled"})), max_size=12),
       st.sampled_from(["busy", "output", "none"]), st.booleans())
def test_any_inputs_move_only_along_allowed_edges(names: list[str], verify: str,
                                                  stream: bool) -> None:
    """Every input but ``settled`` is legal in every phase: it moves along an edge or does
    nothing — so a live session can never crash on the order its events arrive in."""
    t = tracker(verify, stream=stream)
    for name in names:
        before = t.phase
        INPUTS[name](t)
        assert t.phase is before or t.phase in PHASE_EDGES[before]
        if t.phase is not P.SUBMITTED:
            assert t.verify_due is None  # no stray timer outside SUBMITTED
        if before in FINAL:
            assert t.phase is before


# -- the verify recipe, on a fake clock -------------------------------------------------------

def test_busy_verify_waits_for_busy_then_the_timer_is_dropped() -> None:
    t = tracker("busy", timeout=2.0)
    assert t.keys_out(10.0) == 12.0 and t.phase is P.SUBMITTED and t.submitted
    assert not t.settleable and not t.verified
    assert t.output(10.5) is True and t.phase is P.SUBMITTED  # output alone is not busy
    assert t.output(10.6) is False  # only the first counts
    t.busy(11.0)
    assert t.phase is P.VERIFIED and t.busy_at == 11.0 and t.verify_due is None
    assert t.verify_fired(12.0, screen_moved=False) is VerifyStep.NOTHING


def test_busy_before_the_last_key_counts() -> None:
    t = tracker("busy")
    t.busy(5.0)
    assert t.phase is P.VERIFIED and t.keys_out(6.0) is None and t.busy_at == 5.0


def test_a_quick_turn_that_moved_the_screen_is_accepted() -> None:
    t = tracker("busy", timeout=1.0)
    t.keys_out(0.0)
    t.output(0.2)
    assert t.verify_fired(1.0, screen_moved=True) is VerifyStep.ACCEPT
    assert t.phase is P.VERIFIED and t.settleable and t.retries == 0


def test_no_sign_of_the_prompt_resends_then_fails() -> None:
    t = tracker("busy", timeout=1.0, retry=2)
    assert t.keys_out(0.0) == 1.0
    assert t.verify_fired(1.0, screen_moved=False) is VerifyStep.RESEND
    assert (t.retries, t.verify_due) == (1, 2.0)
    t.output(1.5)  # output, but the screen did not move: still not taken
    assert t.verify_fired(2.0, screen_moved=False) is VerifyStep.RESEND
    assert (t.retries, t.verify_due) == (2, 3.0)
    assert t.verify_fired(3.0, screen_moved=False) is VerifyStep.FAIL
    assert t.phase is P.SUBMITTED  # the caller fails the turn
    t.failed()
    assert t.phase is P.FAILED and t.over and t.verify_due is None


def test_output_verify_counts_the_first_output_as_busy() -> None:
    t = tracker("output", timeout=1.0)
    assert t.output(0.5) is False  # before the submit keys: typing echo, not a reply
    assert t.keys_out(1.0) == 2.0
    assert t.output(1.25) is True
    assert t.phase is P.VERIFIED and t.busy_at == 1.25 and t.verify_due is None


def test_a_silent_line_tool_gets_no_verify_timer() -> None:
    t = tracker("output", stream=True)
    assert t.keys_out(1.0) is None and t.phase is P.SUBMITTED


def test_verify_none_takes_the_prompt_at_the_submit() -> None:
    t = tracker("none")
    assert t.keys_out(4.0) is None
    assert t.phase is P.VERIFIED and t.busy_at == 4.0 and t.settleable


def test_an_interrupted_turn_that_asks_on_its_way_out_still_ends_interrupted() -> None:
    t = tracker("none")
    t.keys_out(0.0)
    t.interrupt()
    t.asked()
    assert t.phase is P.WAITING
    t.answered()
    assert t.phase is P.INTERRUPTING
    assert t.settled() is P.INTERRUPTED


def test_an_answered_question_goes_back_to_work() -> None:
    t = tracker("none")
    t.keys_out(0.0)
    t.asked()
    t.answered()
    assert t.phase is P.VERIFIED
    assert t.settled() is P.DONE


def test_for_spec_reads_the_submit_recipe() -> None:
    spec = fake_adapter(ECHO)
    t = TurnTracker.for_spec(spec)
    assert (t.verify, t.verify_timeout_s, t.retry) == (
        spec.submit.verify, spec.submit.verify_timeout_ms / 1000.0, spec.submit.retry)
    assert t.stream == (spec.detect == "stream")


# -- what a verdict means -----------------------------------------------------------------------

@pytest.mark.parametrize("state", [State.STARTING, State.IDLE, State.BUSY, State.WAITING],
                         ids=str)
def test_react_table(state: State) -> None:
    took, untaken = tracker("none"), tracker("busy")
    took.keys_out(0.0)
    untaken.keys_out(0.0)
    assert react(state, "busy", None) is Step.BUSY
    assert react(state, "busy", untaken) is Step.BUSY
    assert react(state, "waiting", took) is Step.QUESTION
    assert react(state, "idle", None) is Step.SETTLE
    assert react(state, "idle", took) is Step.SETTLE
    assert react(state, "idle", untaken) is Step.HOLD  # not before the tool took the prompt
    assert react(state, None, None) is Step.HOLD


def _spec_with(settle_ms: int, startup_settle_ms: int | None) -> AdapterSpec:
    spec = fake_adapter(ECHO)
    return dataclasses.replace(spec, settle_ms=settle_ms, startup=dataclasses.replace(
        spec.startup, settle_ms=startup_settle_ms))


def test_settle_seconds_uses_the_startup_settle_only_while_starting() -> None:
    spec = _spec_with(150, 900)
    assert settle_seconds(spec, starting=True) == 0.9
    assert settle_seconds(spec, starting=False) == 0.15
    assert settle_seconds(_spec_with(150, None), starting=True) == 0.15


def test_idle_before_busy_brings_the_verify_timer_forward() -> None:
    from aimterm.adapter.tracker import QUICK_VERIFY_S

    t = tracker(timeout=3.0)
    assert t.keys_out(10.0) == 13.0
    assert not t.idle_seen(10.01)  # no output since the keys: nothing ran yet
    t.output(10.02)
    assert t.idle_seen(10.03) and t.verify_due == pytest.approx(10.03 + QUICK_VERIFY_S)
    assert not t.idle_seen(10.04)  # (never later again)
    assert t.verify_fired(10.53, screen_moved=True) is VerifyStep.ACCEPT
    assert t.phase is P.VERIFIED and not t.idle_seen(10.6)

    shown = tracker(timeout=3.0)
    shown.keys_out(0.0)
    shown.output(0.1)
    shown.busy(0.2)  # busy was seen: the turn is verified, no timer to move
    assert not shown.idle_seen(0.3)
