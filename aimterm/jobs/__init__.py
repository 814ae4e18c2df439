"""Jobs: a prompt for one tool, the files it works on, and the commands that say it worked.

``spec`` is the :class:`Job`, ``schema`` the job file's JSON Schema (and the plan's job form),
``loader`` reads job files, ``result`` is the :class:`JobResult` a run gives back. Running
jobs on a fleet comes next; see ``docs/jobs.md``.
"""

from __future__ import annotations

from aimterm.jobs.loader import jobs_from_data, load_jobs, load_jobs_text
from aimterm.jobs.result import AcceptanceResult, Durations, JobResult, JobStatus
from aimterm.jobs.spec import Job

__all__ = ["AcceptanceResult", "Durations", "Job", "JobResult", "JobStatus", "jobs_from_data",
           "load_jobs", "load_jobs_text"]
