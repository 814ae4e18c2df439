"""One job through its attempts: what each attempt is told, whether another follows, and the
:class:`JobResult` at the end — with its events, its store rows and, when it failed, its
error report. The orchestrator decides where attempts run; this module keeps the books.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aimterm.events import Event, TaskCompleted, TaskFailed, TaskStarted
from aimterm.jobs.attempt import Attempt, InstanceFate
from aimterm.jobs.result import Durations, JobResult, JobStatus
from aimterm.jobs.spec import Job
from aimterm.statedir import open_private_file, private_dirs
from aimterm.store import Store

__all__ = ["MAX_LOST_RETRIES", "JobRun"]

#: Attempts a job gets again when its instance died under it (not the job's fault, so they do
#: not count against its ``retries``), before it fails anyway.
MAX_LOST_RETRIES = 2
#: Events kept in an error report.
_REPORT_EVENTS = 200


class JobRun:
    """The books of one job in one run. Thread-safe: attempts run in worker threads."""

    def __init__(self, job: Job, run_id: str, *, run_started: float,
                 emit: Callable[[Event], None], store: Store | None,
                 report_dir: Path | None) -> None:
        self.job = job
        self.run_id = run_id
        self.attempts: list[Attempt] = []
        self.events: list[dict[str, Any]] = []
        self.result: JobResult | None = None
        #: Files other jobs of the batch name: a change to one is theirs, not this job's.
        self.others: frozenset[str] = frozenset()
        self._run_started = run_started  # monotonic
        self._first_start: float | None = None
        self._emit_to = emit
        self._store = store
        self._report_dir = report_dir
        self._lock = threading.Lock()
        self._failures = 0  # attempts that count against retries
        self._lost = 0

    def _emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event.to_dict())
            del self.events[:-_REPORT_EVENTS]
        self._emit_to(event)

    # -- attempts ------------------------------------------------------------------------------

    def begin(self, mode: str, instance: str | None) -> int:
        """An attempt starts; its number."""
        with self._lock:
            number = len(self.attempts) + 1
            if self._first_start is None:
                self._first_start = time.monotonic()
        if self._store is not None:
            self._store.attempt_started(self.run_id, self.job.id, number, mode, instance)
        self._emit(TaskStarted(instance, task_id=self.job.id, tool_id=self.job.tool,
                               run_id=self.run_id, attempt=number, mode=mode))
        return number

    def end(self, attempt: Attempt) -> bool:
        """Record an attempt; True if the job gets another one (it failed, and retries or
        lost-instance attempts are left)."""
        with self._lock:
            self.attempts.append(attempt)
            retry = False
            if attempt.status not in (JobStatus.SUCCEEDED, JobStatus.CANCELLED):
                if attempt.fate is InstanceFate.LOST and self._lost < MAX_LOST_RETRIES:
                    self._lost += 1
                    retry = True
                else:
                    self._failures += 1
                    retry = self._failures <= self.job.retries
        if self._store is not None:
            self._store.attempt_finished(self.run_id, self.job.id, attempt.number,
                                         attempt.status.value, attempt.error,
                                         instance=attempt.instance)
        if attempt.status is not JobStatus.SUCCEEDED:
            self._emit(TaskFailed(attempt.instance, task_id=self.job.id, tool_id=self.job.tool,
                                  run_id=self.run_id, attempt=attempt.number,
                                  status=attempt.status.value, error=attempt.error,
                                  retrying=retry))
        return retry

    # -- the end -------------------------------------------------------------------------------

    def finish(self, status: JobStatus | None = None, error: str | None = None) -> JobResult:
        """The job's result: the last attempt decides, unless ``status`` (with ``error``)
        says the job got no (more) attempts — the run was cancelled, or no instance of its
        tool could take it. Once: a second call (a worker late after a cancel) gives the
        first result back."""
        if self.result is not None:
            return self.result
        last = self.attempts[-1] if self.attempts else None
        if status is None:
            status = last.status if last is not None else JobStatus.CANCELLED
            error = last.error if last is not None else "cancelled before it started"
        started = self._first_start
        queued = (started if started is not None else time.monotonic()) - self._run_started
        queued += sum(a.queued_s for a in self.attempts)
        durations = Durations(queued=round(max(0.0, queued), 3),
                              running=round(sum(a.running_s for a in self.attempts), 3),
                              checking=round(sum(a.checking_s for a in self.attempts), 3))
        tokens: dict[str, int] = {}
        for a in self.attempts:
            for kind, n in a.tokens.items():
                tokens[kind] = tokens.get(kind, 0) + n
        costs = [a.cost_usd for a in self.attempts if a.cost_usd is not None]
        exit_code = None
        if last is not None and status is JobStatus.FAILED:
            failed = next((c for c in last.acceptance if not c.passed), None)
            if failed is not None and failed.exit_code not in (None, 0):
                exit_code = failed.exit_code
        report = None if status is JobStatus.SUCCEEDED else self._write_report(status, error)
        result = JobResult(
            job_id=self.job.id, status=status, exit_code=exit_code,
            reply=last.reply if last else "",
            files_changed=last.files_changed if last else (),
            acceptance=last.acceptance if last else (),
            instance=last.instance if last else None, attempts=len(self.attempts),
            duration_s=durations, tokens=tokens, cost_usd=sum(costs) if costs else None,
            error=error, error_report_path=report, metadata=self.job.metadata)
        if result.success:
            self._emit(TaskCompleted(result.instance, task_id=self.job.id, tool_id=self.job.tool,
                                     run_id=self.run_id, attempts=result.attempts,
                                     duration_s=round(time.monotonic() - self._run_started, 3),
                                     files_changed=list(result.files_changed)))
        if self._store is not None:
            self._store.job_finished(self.run_id, self.job.id, result.to_dict())
        self.result = result
        return result

    def _write_report(self, status: JobStatus, error: str | None) -> str | None:
        """The failure's report, as JSON: the job, every attempt (screen tail, acceptance
        output, reply) and the job's events. Written whole or not at all."""
        if self.job.error_report:
            path = Path(self.job.error_report)
        elif self._report_dir is not None:
            path = self._report_dir / self.run_id / f"{self.job.id}.error.json"
        else:
            return None
        report = {"run_id": self.run_id, "job": self.job.to_dict(), "status": status.value,
                  "error": error, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "attempts": [a.to_dict() for a in self.attempts], "events": list(self.events)}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            if self.job.error_report:
                path.parent.mkdir(parents=True, exist_ok=True)  # the user's folder, as named
            else:
                private_dirs(path.parent)  # under the state dir: owner-only
            with open_private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "w") as fh:
                json.dump(report, fh, indent=2, ensure_ascii=False, default=str)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return None
        return str(path)
