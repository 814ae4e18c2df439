"""The plan scheduler's rules on plans built in Python, with a clock the tests move: which steps
start, the failure policies (none of which may leave a step waiting forever), retries that
wait without holding anything up, conflict groups, serialised steps, resume."""

from __future__ import annotations

from typing import Any

import pytest

from aimterm.plans.scheduler import TERMINAL, TRANSITIONS, Scheduler, StepState
from aimterm.plans.spec import Plan, PlanGlobals, Step

S = StepState


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def plan(*steps: Step, concurrency: int = 4) -> Plan:
    return Plan("p", tuple(steps), PlanGlobals(max_concurrency=concurrency))


def step(sid: str, *deps: str, **kw: Any) -> Step:
    return Step(sid, "demo", f"do {sid}", depends_on=deps, **kw)


def finish(s: Scheduler, sid: str) -> None:
    """An editing step through its attempt and its merge."""
    s.attempt_succeeded(sid)
    s.merge_started(sid)
    s.merged(sid, "merged")


def run_all(s: Scheduler, fail: dict[str, str] | None = None) -> list[list[str]]:
    """Drive the scheduler to the end; steps in ``fail`` fail with that outcome
    (``attempt``, ``conflict``, ``gate_failed``). The waves that started, in order."""
    fail = fail or {}
    waves = []
    while not s.done():
        wave = s.startable()
        assert wave or s.mergeable() or s.next_timer() is not None, s.states()
        for sid in wave:
            s.start(sid)
        waves.append(wave)
        for sid in wave:
            how = fail.get(sid)
            if how == "attempt":
                s.attempt_failed(sid, "boom")
            else:
                s.attempt_succeeded(sid)
        for sid in s.mergeable():
            s.merge_started(sid)
            how = fail.get(sid)
            s.merged(sid, how if how in ("conflict", "gate_failed") else "merged")
    return waves


def test_the_state_table_is_closed_and_terminal_states_have_no_moves() -> None:
    assert set(TRANSITIONS) == set(StepState)
    assert all(not TRANSITIONS[t] for t in TERMINAL)
    assert {S.SUCCEEDED, S.FAILED, S.SKIPPED, S.CANCELLED, S.CONFLICT, S.GATE_FAILED} == TERMINAL


def test_independent_steps_start_together_within_max_concurrency() -> None:
    s = Scheduler(plan(*(step(c) for c in "abcde"), concurrency=3))
    assert s.startable() == ["a", "b", "c"]
    for sid in "abc":
        s.start(sid)
    assert s.startable() == []
    s.attempt_succeeded("a")  # merging does not hold a slot
    assert s.startable() == ["d"]


def test_a_chain_runs_one_after_another_and_dependents_wait_for_the_merge() -> None:
    s = Scheduler(plan(step("a"), step("b", "a"), step("c", "b")))
    assert s.startable() == ["a"]
    s.start("a")
    s.attempt_succeeded("a")
    assert s.state("a") is S.MERGING and s.startable() == []  # b needs a's work merged
    s.merge_started("a")
    s.merged("a", "merged")
    assert s.startable() == ["b"]
    assert run_all(s) == [["b"], ["c"]]
    assert s.status() == "succeeded"


def test_the_longest_chain_starts_first() -> None:
    s = Scheduler(plan(step("x"), step("a"), step("b", "a"), step("c", "b"), concurrency=1))
    assert s.startable() == ["a"]


def test_skip_dependents_skips_them_transitively_and_the_rest_runs() -> None:
    s = Scheduler(plan(step("a", on_failure="skip_dependents"), step("b", "a"),
                       step("c", "b"), step("d")))
    run_all(s, fail={"a": "attempt"})
    assert s.states() == {"a": S.FAILED, "b": S.SKIPPED, "c": S.SKIPPED, "d": S.SUCCEEDED}
    assert s.status() == "failed"
    assert [c.reason for c in s.drain() if c.step_id == "c" and c.new is S.SKIPPED] == [
        "dependency 'b' skipped"]


def test_continue_lets_dependents_run() -> None:
    s = Scheduler(plan(step("a", on_failure="continue"), step("b", "a"), step("c", "b")))
    run_all(s, fail={"a": "attempt"})
    assert s.states() == {"a": S.FAILED, "b": S.SUCCEEDED, "c": S.SUCCEEDED}
    assert s.status() == "failed"  # any failed step fails the run


def test_abort_on_a_critical_step_cancels_every_step_not_started() -> None:
    s = Scheduler(plan(step("a"), step("b", "a"), step("c"), step("d", "c"), concurrency=2))
    assert s.startable() == ["a", "c"]
    s.start("a")
    s.start("c")
    s.attempt_failed("a", "boom")
    assert s.aborted == "critical step 'a' failed"
    assert s.states()["b"] is S.CANCELLED and s.startable() == []
    s.attempt_succeeded("c")  # what was running finishes and merges
    s.merge_started("c")
    s.merged("c", "merged")
    assert s.done() and s.states() == {"a": S.FAILED, "b": S.CANCELLED, "c": S.SUCCEEDED,
                                       "d": S.CANCELLED}


def test_abort_on_a_non_critical_step_skips_its_dependents_instead_of_hanging() -> None:
    s = Scheduler(plan(step("a", critical=False), step("b", "a"), step("c")))
    run_all(s, fail={"a": "attempt"})
    assert s.states() == {"a": S.FAILED, "b": S.SKIPPED, "c": S.SUCCEEDED}
    assert s.aborted is None


def test_retries_wait_their_delay_without_holding_up_other_steps() -> None:
    clock = Clock()
    s = Scheduler(plan(step("a", retries=1, retry_delay_s=30.0), step("b"), concurrency=1),
                  now=clock)
    assert s.startable() == ["a"]
    s.start("a")
    assert s.attempt_failed("a", "boom") is S.RETRY_WAIT
    assert s.next_timer() == 130.0
    assert s.startable() == ["b"]  # the delay holds no slot
    s.start("b")
    s.attempt_succeeded("b")
    clock.t = 129.0
    assert s.startable() == []
    clock.t = 130.0
    assert s.startable() == ["a"]
    assert s.start("a") == 2
    assert s.attempt_failed("a", "boom again") is S.FAILED  # retries: 1 → two attempts
    assert s.error("a") == "boom again"


def test_retries_zero_means_one_attempt() -> None:
    s = Scheduler(plan(step("a", retries=0)))
    s.start("a")
    assert s.attempt_failed("a", "boom") is S.FAILED


def test_a_conflict_group_runs_one_at_a_time_each_after_the_last_merged() -> None:
    s = Scheduler(plan(step("a", conflict_group="g"), step("b", conflict_group="g"),
                       step("c")))
    assert s.startable() == ["a", "c"]
    s.start("a")
    s.attempt_succeeded("a")
    assert "b" not in s.startable()  # a is merging: b must start from its merged work
    s.merge_started("a")
    s.merged("a", "merged")
    assert "b" in s.startable()


def test_gate_failed_and_conflict_fail_the_step_and_apply_its_policy() -> None:
    s = Scheduler(plan(step("a", on_failure="skip_dependents"), step("b", "a"),
                       step("c", on_failure="skip_dependents"), step("d", "c")))
    run_all(s, fail={"a": "gate_failed", "c": "conflict"})
    assert s.states() == {"a": S.GATE_FAILED, "b": S.SKIPPED, "c": S.CONFLICT, "d": S.SKIPPED}


def test_a_serialised_step_waits_for_the_one_it_collides_with() -> None:
    s = Scheduler(plan(step("a"), step("b")))
    assert s.serialise("a", "b") and not s.serialise("a", "b") and not s.serialise("b", "a")
    assert s.startable() == ["a"]
    s.start("a")
    s.attempt_succeeded("a")
    assert s.startable() == []
    s.merge_started("a")
    s.merged("a", "merged")
    assert s.startable() == ["b"]


def test_a_running_pair_found_to_collide_merges_in_order_and_a_conflict_is_redone_once() -> None:
    s = Scheduler(plan(step("a"), step("b")))
    s.start("a")
    s.start("b")
    s.serialise("a", "b")  # found while both run
    s.attempt_succeeded("b")
    assert s.mergeable() == []  # b merges only after a
    s.attempt_succeeded("a")
    assert s.mergeable() == ["a"]
    s.merge_started("a")
    s.merged("a", "merged")
    s.merge_started("b")
    assert s.merged("b", "conflict") is S.PENDING and s.rebase_wanted("b")
    assert s.startable() == ["b"] and s.start("b") == 2
    s.attempt_succeeded("b")
    assert not s.rebase_wanted("b")
    s.merge_started("b")
    assert s.merged("b", "conflict") is S.CONFLICT  # only once


def test_cancel_stops_waiting_steps_and_running_ones_as_they_end() -> None:
    s = Scheduler(plan(step("a"), step("b"), step("c", "a"), concurrency=1))
    s.start("a")
    s.cancel()
    assert s.states() == {"a": S.RUNNING, "b": S.CANCELLED, "c": S.CANCELLED}
    assert s.startable() == []
    assert s.attempt_failed("a", "interrupted") is S.CANCELLED
    assert s.done() and s.status() == "cancelled"


def test_non_editing_steps_succeed_without_the_merge_train() -> None:
    s = Scheduler(plan(step("a", edits=False), step("b", "a")))
    s.start("a")
    assert s.attempt_succeeded("a") is S.SUCCEEDED
    assert s.startable() == ["b"]


def test_resume_keeps_finished_steps_and_redoes_running_ones() -> None:
    p = plan(step("a"), step("b"), step("c", "a", "b"), step("d", "c"))
    s = Scheduler(p, resume={"a": (S.SUCCEEDED, 1), "b": (S.RUNNING, 1),
                             "c": (S.PENDING, 0)})
    assert s.states() == {"a": S.SUCCEEDED, "b": S.PENDING, "c": S.PENDING, "d": S.PENDING}
    assert s.startable() == ["b"]
    assert s.start("b") == 2


def test_resume_of_a_merging_step_merges_it_without_running_it_again() -> None:
    s = Scheduler(plan(step("a"), step("b", "a")), resume={"a": (S.MERGING, 1)})
    assert s.startable() == [] and s.mergeable() == ["a"]


def test_a_move_the_table_does_not_allow_is_refused() -> None:
    s = Scheduler(plan(step("a")))
    with pytest.raises(RuntimeError, match="pending -> merging is not a move"):
        s.attempt_succeeded("a")


def test_every_plan_shape_and_failure_ends() -> None:
    """No combination of policy and failure leaves a step waiting: 3 policies x 2
    criticalities x 4 outcomes on a diamond."""
    for policy in ("abort", "skip_dependents", "continue"):
        for critical in (True, False):
            for how in ("attempt", "conflict", "gate_failed", None):
                s = Scheduler(plan(step("a", on_failure=policy, critical=critical),
                                   step("b", "a"), step("c", "a"), step("d", "b", "c")))
                run_all(s, fail={"a": how} if how else {})
                assert s.done(), (policy, critical, how, s.states())
                expected = "succeeded" if how is None else "failed"
                assert s.status() == expected
                if how is not None and policy == "continue":
                    assert s.state("d") is S.SUCCEEDED
                elif how is not None:
                    assert s.state("d") in (S.SKIPPED, S.CANCELLED)
