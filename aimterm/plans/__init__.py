"""Plans: a graph of jobs over git worktrees, merged back through a tested merge train.

``spec`` is the :class:`Plan` and its :class:`Step`, ``loader`` reads plan files (aimterm's
form and the workstream form), ``graph`` their shape (levels, critical path, what can run
together), ``scheduler`` the steps' state table and the failure policies. A run
(:class:`PlanRun`, ``runner``) gives each editing step a worktree and branch (``worktrees``),
merges finished work one branch at a time, gated by its acceptance tests (``train``), and
watches running steps for collisions (``radar``); ``git`` runs git. See ``docs/plans.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimterm.plans.loader import load_plan, load_plan_text, plan_from_data
from aimterm.plans.spec import Plan, PlanGlobals, Step

if TYPE_CHECKING:  # pragma: no cover
    from aimterm.plans.runner import PlanResult, PlanRun

# Running a plan pulls in the runtime; checking one (`aimterm run --dry-run`) needs none of it.
_LAZY = {"PlanRun": "aimterm.plans.runner", "PlanResult": "aimterm.plans.runner"}

__all__ = ["Plan", "PlanGlobals", "PlanResult", "PlanRun", "Step", "load_plan",
           "load_plan_text", "plan_from_data"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'aimterm.plans' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
