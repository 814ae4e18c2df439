"""Jobs: a prompt for one tool, the files it works on, and the commands that say it worked.

``spec`` is the :class:`Job`, ``schema`` the job file's JSON Schema (and the plan's job form),
``loader`` reads job files, ``result`` is the :class:`JobResult` a run gives back. The
:class:`Orchestrator` (``orchestrator``) runs batches of them on the fleet, through lanes of
pooled instances (``lanes``) or one-shot (``oneshot``), each job's turns rendered by its
adapter's recipe (``recipe``), each attempt (``attempt``) judged by ground truth (``checks``)
and booked (``run``); :class:`JobAdapter` (``adapters``) runs one job. See ``docs/jobs.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aimterm.jobs.loader import jobs_from_data, load_jobs, load_jobs_text
from aimterm.jobs.result import AcceptanceResult, Durations, JobResult, JobStatus
from aimterm.jobs.spec import Job

if TYPE_CHECKING:  # pragma: no cover
    from aimterm.jobs.adapters import JobAdapter, job_adapter
    from aimterm.jobs.orchestrator import Orchestrator

# Running jobs pulls in the whole runtime (pool, terminal, socket client); reading and
# checking job files (`aimterm jobs validate`) needs none of it, so it loads on first use.
_LAZY = {"Orchestrator": "aimterm.jobs.orchestrator", "JobAdapter": "aimterm.jobs.adapters",
         "job_adapter": "aimterm.jobs.adapters"}

__all__ = ["AcceptanceResult", "Durations", "Job", "JobAdapter", "JobResult", "JobStatus",
           "Orchestrator", "job_adapter", "jobs_from_data", "load_jobs", "load_jobs_text"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'aimterm.jobs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
