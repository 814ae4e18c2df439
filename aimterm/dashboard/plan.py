"""A plan run as the dashboard shows it: its steps by level of the graph, each in the colour
of its state. Built from the daemon's ``plans_get`` reply (the plan and its steps' rows),
then kept up to date by the run's events (``step_changed``, ``step_merged``, ``task_started``,
``run_finished``). Pure, like :mod:`aimterm.dashboard.model`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aimterm.dashboard.model import number

__all__ = ["STEP_COLOUR", "PlanView", "StepView"]

#: The colour of each step state (docs/plans.md says what each means).
STEP_COLOUR: dict[str, str] = {
    "pending": "grey62", "running": "yellow", "retry_wait": "yellow", "merging": "cyan",
    "succeeded": "green", "failed": "red", "gate_failed": "red", "conflict": "red",
    "skipped": "grey50", "cancelled": "grey50",
}


@dataclass
class StepView:
    id: str
    tool: str
    depends_on: list[str]
    state: str = "pending"
    attempts: int = 0
    instance: str | None = None
    reason: str | None = None
    #: Steps (or "integration") its work is seen to collide with: predicted by the radar
    #: while it runs, or a merge that conflicted.
    collides: list[str] = field(default_factory=list)

    @property
    def colour(self) -> str:
        return STEP_COLOUR.get(self.state, "white")


@dataclass
class PlanView:
    run_id: str
    plan_id: str
    steps: dict[str, StepView] = field(default_factory=dict)
    #: The run's status once its ``run_finished`` came (``succeeded``/``failed``), else None.
    finished: str | None = None

    @classmethod
    def from_reply(cls, reply: Mapping[str, Any]) -> PlanView:
        """From ``plans_get``: ``{run: {id, plan_id, plan: {steps: [...]}, status}, steps}``."""
        run = dict(reply.get("run") or {})
        plan = dict(run.get("plan") or {})
        view = cls(str(run.get("id") or run.get("run_id") or "?"),
                   str(run.get("plan_id") or plan.get("id") or "?"))
        for spec in plan.get("steps") or []:
            sid = str(spec.get("id"))
            view.steps[sid] = StepView(sid, str(spec.get("tool") or "?"),
                                       [str(d) for d in spec.get("depends_on") or []])
        for row in reply.get("steps") or []:
            step = view.steps.get(str(row.get("step_id")))
            if step is not None:
                step.state = str(row.get("state") or step.state)
                step.attempts = number(row.get("attempts"))
                step.instance = row.get("instance")
                step.reason = row.get("error")
                detail = row.get("detail")
                if isinstance(detail, Mapping):
                    step.collides = [str(o) for o in detail.get("predicted") or []]
        if not reply.get("running") and run.get("status") not in (None, "running"):
            view.finished = str(run.get("status"))
        return view

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Take one event of this run; False if it is not about this run."""
        if event.get("run_id") != self.run_id:
            return False
        kind = event.get("kind")
        step = self.steps.get(str(event.get("step_id") or event.get("task_id")))
        if kind == "run_finished":
            self.finished = str(event.get("status"))
        elif step is None:
            return True
        elif kind == "step_changed":
            step.state = str(event.get("state"))
            step.attempts = number(event.get("attempt"), step.attempts)
            step.reason = event.get("reason")
        elif kind == "step_merged":
            step.state = "succeeded"
        elif kind == "task_started" and isinstance(event.get("instance"), str):
            step.instance = str(event["instance"])
        elif kind == "merge_conflict_detected":
            other = str(event.get("other") or "?")
            if other not in step.collides:
                step.collides.append(other)
        return True

    def levels(self) -> list[list[StepView]]:
        """The steps by level: a step is one level below the deepest step it depends on."""
        level: dict[str, int] = {}

        def depth(sid: str, seen: frozenset[str]) -> int:
            if sid in level:
                return level[sid]
            step = self.steps.get(sid)
            deps = [d for d in (step.depends_on if step else []) if d in self.steps
                    and d not in seen]  # a loop cannot be planned; it is not followed round
            level[sid] = 1 + max((depth(d, seen | {sid}) for d in deps), default=-1)
            return level[sid]

        out: list[list[StepView]] = []
        for sid, step in self.steps.items():
            n = depth(sid, frozenset())
            while len(out) <= n:
                out.append([])
            out[n].append(step)
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for step in self.steps.values():
            out[step.state] = out.get(step.state, 0) + 1
        return out
