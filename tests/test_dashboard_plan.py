"""A plan run in the dashboard (aimterm.dashboard.plan): built from ``plans_get``, kept up to
date by the run's events, its steps by level."""

from __future__ import annotations

from typing import Any

from aimterm.dashboard.plan import STEP_COLOUR, PlanView
from aimterm.plans.scheduler import StepState


def reply(run_id: str = "R1", running: bool = True) -> dict[str, Any]:
    """What the daemon's ``plans_get`` answers (cut to what the dashboard reads)."""
    steps = [{"id": "greet", "tool": "demo", "depends_on": []},
             {"id": "farewell", "tool": "demo", "depends_on": []},
             {"id": "both", "tool": "codex", "depends_on": ["greet", "farewell"]},
             {"id": "docs", "tool": "demo", "depends_on": ["both"]}]
    return {"run": {"id": run_id, "status": "running" if running else "succeeded",
                    "plan_id": "rename-greetings", "plan": {"plan_id": "rename-greetings",
                                                            "steps": steps}},
            "steps": [{"step_id": "greet", "state": "running", "attempts": 1,
                       "instance": "greet-1", "error": None},
                      {"step_id": "farewell", "state": "pending", "attempts": 0,
                       "instance": None, "error": None},
                      {"step_id": "both", "state": "pending", "attempts": 0, "instance": None,
                       "error": None},
                      {"step_id": "docs", "state": "pending", "attempts": 0, "instance": None,
                       "error": None}],
            "running": running, "result": None, "failure": None}


def test_steps_by_level_from_the_reply() -> None:
    plan = PlanView.from_reply(reply())
    assert (plan.run_id, plan.plan_id, plan.finished) == ("R1", "rename-greetings", None)
    assert [[s.id for s in level] for level in plan.levels()] == [
        ["greet", "farewell"], ["both"], ["docs"]]
    greet = plan.steps["greet"]
    assert (greet.state, greet.attempts, greet.instance, greet.colour) == (
        "running", 1, "greet-1", "yellow")
    assert plan.counts() == {"running": 1, "pending": 3}
    assert PlanView.from_reply(reply(running=False)).finished == "succeeded"


def test_events_of_the_run_move_its_steps() -> None:
    plan = PlanView.from_reply(reply())
    assert not plan.apply({"kind": "step_changed", "run_id": "R2", "step_id": "greet",
                           "state": "failed"})
    assert plan.steps["greet"].state == "running"
    plan.apply({"kind": "step_changed", "run_id": "R1", "step_id": "greet", "old": "running",
                "state": "merging", "attempt": 1, "reason": None})
    plan.apply({"kind": "task_started", "run_id": "R1", "task_id": "farewell", "instance": "f-1",
                "attempt": 1})
    plan.apply({"kind": "step_merged", "run_id": "R1", "step_id": "greet", "branch": "b",
                "commit": "c", "merge_s": 0.1, "gate_s": 0.1})
    plan.apply({"kind": "step_changed", "run_id": "R1", "step_id": "both", "old": "pending",
                "state": "skipped", "attempt": 0, "reason": "dependency 'farewell' failed"})
    assert plan.steps["greet"].state == "succeeded"
    assert plan.steps["farewell"].instance == "f-1"
    assert (plan.steps["both"].state, plan.steps["both"].reason) == (
        "skipped", "dependency 'farewell' failed")
    plan.apply({"kind": "run_finished", "run_id": "R1", "status": "failed"})
    assert plan.finished == "failed"


def test_a_loop_or_a_missing_step_does_not_hang() -> None:
    data = reply()
    data["run"]["plan"]["steps"] = [{"id": "a", "depends_on": ["b"]},
                                    {"id": "b", "depends_on": ["a", "ghost"]}]
    levels = PlanView.from_reply(data).levels()
    assert sorted(s.id for level in levels for s in level) == ["a", "b"]


def test_every_step_state_has_a_colour() -> None:
    assert set(STEP_COLOUR) == {state.value for state in StepState}
    assert STEP_COLOUR["succeeded"] == "green" and STEP_COLOUR["failed"] == "red"


def test_collisions_are_marked_from_the_reply_and_the_radars_events() -> None:
    data = reply()
    data["steps"][1]["detail"] = {"predicted": ["integration"], "conflicts": []}
    plan = PlanView.from_reply(data)
    assert plan.steps["farewell"].collides == ["integration"]
    event = {"kind": "merge_conflict_detected", "run_id": "R1", "step_id": "greet",
             "other": "farewell", "paths": ["a.txt"], "predicted": True}
    assert plan.apply(event) and plan.apply(event)
    assert plan.steps["greet"].collides == ["farewell"]  # once, however often it is seen
