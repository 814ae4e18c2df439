"""The :class:`Plan`: a graph of steps, each a job for one tool, with what it depends on, the
files it may write, and what happens when it fails.

A plan is data only; :mod:`aimterm.plans.loader` builds it from a plan file (aimterm's form or
the workstream form) and checks every value, :mod:`aimterm.plans.graph` reads its shape
(levels, critical path), :mod:`aimterm.plans.runner` runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_TIMEOUT_S", "MAX_STEPS", "ON_FAILURE", "Plan", "PlanGlobals", "Step"]

#: What a failed step (retries spent) does to the rest of the run.
#: ``abort``: a critical step's failure cancels every step not yet started (a non-critical
#: one's only skips its dependents); ``skip_dependents``: its dependents, and theirs, are
#: skipped; ``continue``: its dependents run as if it had succeeded.
ON_FAILURE = ("abort", "skip_dependents", "continue")
#: The plan format's default step timeout (30 minutes).
DEFAULT_TIMEOUT_S = 1800.0
#: Steps in one plan: far past real use, small enough that a bad file cannot make a run
#: unmanageable.
MAX_STEPS = 500


@dataclass(frozen=True)
class PlanGlobals:
    """Defaults for every step. ``max_concurrency``: steps running at once. ``setup``: a
    shell command run in each new worktree before its step starts (installing dependencies,
    say)."""

    max_concurrency: int = 1
    default_timeout_s: float = DEFAULT_TIMEOUT_S
    default_retries: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    setup: str | None = None


@dataclass(frozen=True)
class Step:
    """One node of the plan: a job for ``tool``.

    ``prompt`` is what the tool is told (a workstream step's ``tasks`` joined, one per line).
    ``reads`` and ``writes`` are the step's file scope, as git pathspec-like globs relative to
    the repository (``src/**``, ``docs/api.md``); steps whose writes overlap must share a
    ``conflict_group``, and steps of one group never run at once. ``timeout_s`` and
    ``retries`` are resolved against the plan's globals at load time (an explicit ``0``
    stays 0). ``acceptance`` runs in the step's worktree after its turn and again on the
    integration branch after its merge. ``edits``: whether the step changes code (it gets a
    worktree and a branch, and its work is merged); a step with ``edits: false`` runs in a
    worktree too but nothing of it is merged.
    """

    id: str
    tool: str
    prompt: str
    depends_on: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    conflict_group: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = 0
    retry_delay_s: float = 0.0
    critical: bool = True
    on_failure: str = "abort"
    acceptance: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    edits: bool = True
    name: str | None = None
    description: str | None = None
    line: int | None = None  # where the step starts in its file, for messages

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "tool": self.tool, "prompt": self.prompt,
                               "depends_on": list(self.depends_on),
                               "files_scope": {"reads": list(self.reads),
                                               "writes": list(self.writes)},
                               "timeout_sec": self.timeout_s, "retries": self.retries,
                               "retry_delay_sec": self.retry_delay_s,
                               "critical": self.critical, "on_failure": self.on_failure,
                               "acceptance_tests": list(self.acceptance), "edits": self.edits}
        if self.conflict_group is not None:
            out["conflict_group"] = self.conflict_group
        if self.env:
            out["env"] = dict(self.env)
        if self.name is not None:
            out["name"] = self.name
        if self.description is not None:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Plan:
    """A checked plan: its steps in file order, every dependency known, no cycle.

    ``source`` is the file it came from (None for data handed over in Python), ``variables``
    the ``--var`` values substituted into it.
    """

    id: str
    steps: tuple[Step, ...]
    globals: PlanGlobals = field(default_factory=PlanGlobals)
    version: str | None = None
    description: str | None = None
    source: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def to_dict(self) -> dict[str, Any]:
        """The plan in aimterm's file form; loading it gives this plan back."""
        g = self.globals
        out: dict[str, Any] = {"plan_id": self.id,
                               "globals": {"max_concurrency": g.max_concurrency,
                                           "default_timeout_sec": g.default_timeout_s,
                                           "default_retries": g.default_retries,
                                           "env": dict(g.env),
                                           **({"setup": g.setup} if g.setup else {})},
                               "steps": [s.to_dict() for s in self.steps]}
        if self.version is not None:
            out["version"] = self.version
        if self.description is not None:
            out["description"] = self.description
        return out
