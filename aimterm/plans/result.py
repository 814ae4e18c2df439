"""What a plan run keeps of each step while it runs (:class:`StepRecord`) and what it gives
back at the end (:class:`PlanResult`, a :class:`StepOutcome` per step)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aimterm.plans.worktrees import Worktree

__all__ = ["PlanResult", "StepOutcome", "StepRecord"]


@dataclass
class StepRecord:
    """What the runner knows of a step beyond its state: where its work is, what it took."""

    step_id: str
    worktree: Worktree | None = None
    instance: str | None = None
    mode: str | None = None
    started: float | None = None  # wall clock of its first attempt
    began: float | None = None  # monotonic: the current attempt's start
    elapsed: float = 0.0  # monotonic seconds over every attempt so far
    merge_commit: str | None = None
    snapshot: str | None = None
    result: dict[str, Any] | None = None
    conflicts: list[str] = field(default_factory=list)
    gate: list[dict[str, Any]] = field(default_factory=list)
    predicted: list[str] = field(default_factory=list)  # steps (or "integration") it collides with
    timings: dict[str, float] = field(default_factory=lambda: {
        "worktree_s": 0.0, "run_s": 0.0, "commit_s": 0.0, "merge_s": 0.0, "gate_s": 0.0})

    def detail(self) -> dict[str, Any]:
        return {"conflicts": self.conflicts, "gate": self.gate, "predicted": self.predicted,
                "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "result": self.result, "mode": self.mode}


@dataclass(frozen=True)
class StepOutcome:
    """How one step ended."""

    step_id: str
    state: str
    attempts: int
    branch: str | None
    worktree: str | None  # kept on disk (it has work that is not merged), else None
    merge_commit: str | None
    error: str | None
    elapsed_s: float
    timings: Mapping[str, float]
    conflicts: tuple[str, ...] = ()
    #: Where its last attempt ran: the instance (None for a one-shot run) and how.
    instance: str | None = None
    mode: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["timings"] = dict(self.timings)
        out["conflicts"] = list(self.conflicts)
        return out


@dataclass(frozen=True)
class PlanResult:
    """How a plan run ended: ``status`` ``succeeded`` (every step succeeded or was skipped),
    ``failed`` or ``cancelled``; ``integration`` is the branch holding the merged work and
    ``head`` its commit."""

    run_id: str
    plan_id: str
    status: str
    repo: str
    integration: str
    head: str
    steps: tuple[StepOutcome, ...]
    duration_s: float
    set_aside: tuple[str, ...] = ()  # an earlier run's branches, renamed NAME.RUN

    @property
    def success(self) -> bool:
        return self.status == "succeeded"

    @property
    def kept_worktrees(self) -> list[str]:
        return [s.worktree for s in self.steps if s.worktree]

    def step(self, step_id: str) -> StepOutcome:
        return next(s for s in self.steps if s.step_id == step_id)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "plan_id": self.plan_id, "status": self.status,
                "repo": self.repo, "integration": self.integration, "head": self.head,
                "duration_s": round(self.duration_s, 3),
                "kept_worktrees": self.kept_worktrees, "set_aside": list(self.set_aside),
                "steps": [s.to_dict() for s in self.steps]}
