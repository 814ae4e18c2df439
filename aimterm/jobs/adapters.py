"""The job side of an adapter, in the seed's words: ``supports_pool_mode()``,
``run_job_pooled(job, pool)`` and ``run_job(job)``.

:class:`JobAdapter` runs one job at a time, for code that drives its own pool; the
:class:`~aimterm.jobs.orchestrator.Orchestrator` runs batches (and decides pooled or one-shot
itself). Both go through the same attempts (:mod:`aimterm.jobs.attempt`) and books
(:class:`~aimterm.jobs.run.JobRun`), so a job ends the same way whichever runs it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.spec import AdapterSpec
from aimterm.events import Event
from aimterm.jobs.attempt import InstanceFate, JobFleet, oneshot_attempt, pooled_attempt
from aimterm.jobs.checks import ACCEPTANCE_TIMEOUT_S
from aimterm.jobs.lanes import usable
from aimterm.jobs.loader import jobs_from_data
from aimterm.jobs.orchestrator import new_run_id
from aimterm.jobs.result import JobResult, JobStatus
from aimterm.jobs.run import JobRun
from aimterm.jobs.spec import Job

__all__ = ["JobAdapter", "job_adapter"]


def _ignore(_: Event) -> None:
    pass


class JobAdapter:
    """How jobs run on one adapter's tool."""

    def __init__(self, adapter: str | AdapterSpec, *,
                 acceptance_timeout_s: float = ACCEPTANCE_TIMEOUT_S) -> None:
        self.spec = load_adapter(adapter) if isinstance(adapter, str) else adapter
        self.acceptance_timeout_s = acceptance_timeout_s

    @property
    def name(self) -> str:
        return self.spec.name

    def supports_pool_mode(self) -> bool:
        """Whether jobs can be given to a running instance (the adapter's ``jobs.pooled``)."""
        return self.spec.jobs.pooled

    def supports_oneshot(self) -> bool:
        """Whether the tool has a non-interactive form (the adapter's ``jobs.oneshot``)."""
        return self.spec.jobs.oneshot is not None

    def run_job_pooled(self, job: Job | Mapping[str, Any], pool: Any) -> JobResult:
        """Run ``job`` on a free instance of this tool in ``pool`` (a Fleet — a
        ClusterManager, a RemoteFleet — or a ToolProcessPool), retrying on it as the job
        says. The pool's other users should leave that instance alone meanwhile."""
        fleet: JobFleet = getattr(pool, "cluster", pool)
        run = self._books(job)
        while True:
            iid = self._free_instance(fleet)
            if iid is None:
                return run.finish(JobStatus.FAILED,
                                  f"the pool has no running instance of {self.name!r}")
            number = run.begin("pooled", iid)
            attempt = pooled_attempt(fleet, iid, run.job, self.spec, number,
                                     acceptance_timeout_s=self.acceptance_timeout_s)
            again = run.end(attempt)
            if attempt.fate is InstanceFate.RESTART:
                try:
                    fleet.restart(iid)
                except Exception:  # noqa: BLE001 - the next attempt picks another instance
                    pass
            if not again:
                return run.finish()

    def run_job(self, job: Job | Mapping[str, Any]) -> JobResult:
        """Run ``job`` one-shot: the tool's own non-interactive command, in a process of its
        own, retried as the job says."""
        run = self._books(job)
        while True:
            number = run.begin("oneshot", None)
            attempt = oneshot_attempt(run.job, self.spec, number,
                                      acceptance_timeout_s=self.acceptance_timeout_s)
            if not run.end(attempt):
                return run.finish()

    def _books(self, job: Job | Mapping[str, Any]) -> JobRun:
        checked = job if isinstance(job, Job) else jobs_from_data(job)[0]
        if checked.tool != self.name:
            raise ValueError(f"the job {checked.id!r} is for {checked.tool!r}, "
                             f"not {self.name!r}")
        return JobRun(checked, new_run_id(), run_started=time.monotonic(), emit=_ignore,
                      store=None, report_dir=None)

    def _free_instance(self, fleet: JobFleet) -> str | None:
        rows = [r for r in fleet.status() if r.get("adapter") == self.name and usable(r)]
        idle = [r for r in rows if r.get("state") == "idle"]
        chosen = idle or rows
        return str(chosen[0]["id"]) if chosen else None


def job_adapter(name: str | AdapterSpec) -> JobAdapter:
    """The job side of the adapter ``name`` (as ``aimterm adapter list`` names it)."""
    return JobAdapter(name)
