"""One attempt at a job: its turns on a pooled instance, or its tool's one-shot command; then
the ground truth (the acceptance commands, the files that changed) decides how it went.

An attempt never raises for what the tool or the fleet did: every outcome is an
:class:`Attempt`, whose ``status`` and ``error`` say what happened and whose ``instance``
(:class:`InstanceFate`) tells the orchestrator what became of the instance.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import enum
import fnmatch
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aimterm.adapter.spec import AdapterSpec
from aimterm.errors import AimtermError, SessionExited, TurnTimeout
from aimterm.jobs.checks import changed_files, relative_to, run_acceptance, snapshot
from aimterm.jobs.oneshot import oneshot_cwd, oneshot_env, run_oneshot
from aimterm.jobs.recipe import job_turns, oneshot_argv
from aimterm.jobs.result import AcceptanceResult, JobStatus
from aimterm.jobs.spec import Job
from aimterm.states import State
from aimterm.turn import Turn, TurnStatus

__all__ = ["Attempt", "InstanceFate", "JobFleet", "judge", "oneshot_attempt", "pooled_attempt",
           "turn_timeout_of"]

#: A file turn (aider's ``/add``) or a reset turn takes seconds; this bounds one anyway.
SETUP_TURN_TIMEOUT_S = 120.0
#: How long past a turn's own timeout to wait for the fleet to report it (the fleet enforces
#: the timeout; this only keeps a lost reply from hanging the job).
_GRACE_S = 60.0
#: How long a job's tool may wait on a question no rule answers before the job fails (the
#: adapter's answer rules are the policy; a question past them needs a person).
QUESTION_TIMEOUT_S = 2.0
#: How long a cancelled turn may take to end after its interrupt.
_CANCEL_WAIT_S = 10.0
#: How often a job's turn looks at its instance meanwhile.
_POLL_S = 0.25
#: Lines of the screen kept for the error report.
SCREEN_TAIL = 40


class JobFleet(Protocol):
    """What running jobs needs of a fleet: a part of :class:`~aimterm.fleet.Fleet`, so that
    every Fleet is one, and so is the daemon's own pool behind a thin wrapper."""

    def submit(self, prompt: str, *, tool: str | None = None, key: str | None = None,
               tags: Iterable[str] = (), to: str | None = None,
               timeout: float | None = None) -> concurrent.futures.Future[Turn]: ...

    def status(self) -> list[dict[str, Any]]: ...

    def screen(self, instance_id: str) -> list[str]: ...

    def interrupt(self, instance_id: str) -> None: ...

    def restart(self, instance_id: str) -> State: ...

    def scale(self, tool: str, count: int) -> None: ...


class InstanceFate(str, enum.Enum):
    """What an attempt left of its pooled instance."""

    KEPT = "kept"  # it can take the next job
    LOST = "lost"  # it died, or could not take the job: the job goes to another instance
    RESTART = "restart"  # it timed out: restart it before it takes more work


@dataclass
class Attempt:
    """What one attempt did. ``queued_s`` is the time its turns waited for the instance
    (still starting, say), ``running_s`` the tool's time, ``checking_s`` the acceptance
    commands'. ``fate``: what became of the instance (pooled attempts)."""

    number: int
    mode: str
    instance: str | None
    status: JobStatus = JobStatus.FAILED
    error: str | None = None
    reply: str = ""
    files_changed: tuple[str, ...] = ()
    acceptance: tuple[AcceptanceResult, ...] = ()
    started: float = field(default_factory=time.time)
    queued_s: float = 0.0
    running_s: float = 0.0
    checking_s: float = 0.0
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    screen_tail: list[str] = field(default_factory=list)
    fate: InstanceFate = InstanceFate.KEPT

    def to_dict(self) -> dict[str, Any]:
        """The attempt as the error report keeps it."""
        return {"number": self.number, "mode": self.mode, "instance": self.instance,
                "status": self.status.value, "error": self.error, "started": self.started,
                "queued_s": round(self.queued_s, 3), "running_s": round(self.running_s, 3),
                "checking_s": round(self.checking_s, 3),
                "reply_tail": self.reply[-4000:], "files_changed": list(self.files_changed),
                "acceptance": [a.to_dict() for a in self.acceptance],
                "screen_tail": self.screen_tail}


def turn_timeout_of(job: Job, adapter: AdapterSpec) -> float:
    return job.timeout_s if job.timeout_s is not None else adapter.turn_timeout_s


def judge(attempt: Attempt, job: Job, *, env: Mapping[str, str], acceptance_timeout_s: float,
          before: Any, others: frozenset[str] = frozenset(),
          ignore: tuple[str, ...] = ()) -> None:
    """The tool's part is over and went well: see what really happened, and say whether the
    job succeeded. Sets ``files_changed`` (leaving out ``others``, the files other jobs of
    the batch work on: their changes are theirs, and what the adapter's ``ignore`` says the
    tool writes for itself), ``acceptance``, ``status``, ``error``."""
    changed = changed_files(before, snapshot(job.cwd, job.files))
    attempt.files_changed = tuple(
        f for f in changed
        if f in job.files or (f not in others and not _ignored(f, job.cwd, ignore)))
    started = time.monotonic()
    attempt.acceptance = run_acceptance(job.acceptance, cwd=job.cwd, env=env,
                                        timeout_s=acceptance_timeout_s)
    attempt.checking_s = time.monotonic() - started
    failed = next((a for a in attempt.acceptance if not a.passed), None)
    if failed is not None:
        how = "was killed at its timeout" if failed.exit_code is None \
            else f"exited {failed.exit_code}"
        attempt.status, attempt.error = JobStatus.FAILED, f"acceptance: {failed.command} {how}"
        return
    if job.files and not set(job.files) & set(attempt.files_changed):
        names = ", ".join(relative_to(f, job.cwd) for f in job.files)
        attempt.status = JobStatus.FAILED
        attempt.error = f"none of the job's files changed ({names})"
        return
    attempt.status, attempt.error = JobStatus.SUCCEEDED, None


def _ignored(path: str, cwd: str | None, patterns: tuple[str, ...]) -> bool:
    if not patterns:
        return False
    parts = Path(os.path.relpath(path, cwd) if cwd else path).parts
    return any(fnmatch.fnmatchcase(part, pattern) for part in parts for pattern in patterns)


def _job_env(job: Job) -> dict[str, str]:
    return {**os.environ, **job.env}


class _Unanswered(Exception):
    """The tool waits on a question no adapter rule answers: nobody will."""


class _Cancelled(Exception):
    """The run was cancelled while the turn ran; the turn has been interrupted."""


def _wait_turn(future: concurrent.futures.Future[Turn], timeout: float, fleet: JobFleet, iid: str,
               cancel: threading.Event | None = None,
               question_timeout_s: float | None = QUESTION_TIMEOUT_S) -> Turn:
    """The turn, once over. A turn on a question no rule answers is not over (a person may
    answer it), so the instance is watched: WAITING that long raises :class:`_Unanswered`.
    When ``cancel`` is set the turn is interrupted, and :class:`_Cancelled` raised once it
    has ended (or after a few seconds)."""
    deadline = time.monotonic() + timeout + _GRACE_S
    waiting_since: float | None = None
    while True:
        try:
            return future.result(_POLL_S)
        except concurrent.futures.TimeoutError:
            pass
        if cancel is not None and cancel.is_set():
            _interrupt(fleet, iid)
            with contextlib.suppress(Exception):
                future.result(_CANCEL_WAIT_S)
            raise _Cancelled
        now = time.monotonic()
        if now > deadline:
            future.cancel()
            raise TurnTimeout(f"no word of the turn {timeout + _GRACE_S:g} s after it was sent")
        if question_timeout_s is None:
            continue
        row = next((r for r in fleet.status() if r.get("id") == iid), None)
        if row is not None and row.get("state") == "waiting":
            waiting_since = waiting_since or now
            if now - waiting_since >= question_timeout_s:
                raise _Unanswered(str(row.get("question") or "").strip())
        else:
            waiting_since = None


def _turn_problem(turn: Turn) -> tuple[JobStatus, str] | None:
    """What went wrong in a turn the fleet reports as over, or None if it ended well."""
    if turn.status is TurnStatus.DONE:
        return None
    if turn.status is TurnStatus.WAITING:
        return JobStatus.FAILED, f"the tool asked a question no rule answers: {turn.question}"
    if turn.status is TurnStatus.TIMEOUT:
        return JobStatus.TIMED_OUT, turn.error or "the turn timed out"
    if turn.status is TurnStatus.INTERRUPTED:
        return JobStatus.CANCELLED, turn.error or "the turn was interrupted"
    return JobStatus.FAILED, turn.error or f"the turn ended {turn.status.value}"


def _screen(fleet: JobFleet, iid: str) -> list[str]:
    try:
        lines = fleet.screen(iid)
    except AimtermError:
        return []
    while lines and not lines[-1].strip():
        lines.pop()
    return lines[-SCREEN_TAIL:]


def pooled_attempt(fleet: JobFleet, iid: str, job: Job, adapter: AdapterSpec, number: int, *,
                   acceptance_timeout_s: float, cancel: threading.Event | None = None,
                   others: frozenset[str] = frozenset()) -> Attempt:
    """The job's turns on instance ``iid`` of ``fleet`` (which only this attempt gives work
    to meanwhile), then its checks."""
    attempt = Attempt(number, "pooled", iid)
    turns = job_turns(adapter.jobs, job)
    timeout = turn_timeout_of(job, adapter)
    before = snapshot(job.cwd, job.files)
    started = time.monotonic()
    ok = False
    try:
        for text in turns.before:
            setup = _wait_turn(fleet.submit(text, to=iid, timeout=SETUP_TURN_TIMEOUT_S),
                               SETUP_TURN_TIMEOUT_S, fleet, iid, cancel)
            attempt.queued_s += (setup.queued_ms or 0.0) / 1000
            problem = _turn_problem(setup)
            if problem is not None:
                attempt.status, why = problem
                attempt.error = f"{text!r}: {why}"
                break
        else:
            if cancel is not None and cancel.is_set():
                attempt.status, attempt.error = JobStatus.CANCELLED, "the run was cancelled"
            else:
                turn = _wait_turn(fleet.submit(turns.prompt, to=iid, timeout=timeout), timeout,
                                  fleet, iid, cancel)
                attempt.queued_s += (turn.queued_ms or 0.0) / 1000
                attempt.reply, attempt.tokens = turn.reply, dict(turn.tokens)
                attempt.cost_usd = turn.cost_usd
                problem = _turn_problem(turn)
                if problem is None:
                    ok = True
                else:
                    attempt.status, attempt.error = problem
                    if turn.status is TurnStatus.WAITING:
                        _interrupt(fleet, iid)
    except _Cancelled:
        attempt.status, attempt.error = JobStatus.CANCELLED, "the run was cancelled"
    except _Unanswered as exc:
        attempt.error = f"the tool asked a question no rule answers: {exc}"
        _interrupt(fleet, iid)
    except TurnTimeout:
        attempt.status, attempt.fate = JobStatus.TIMED_OUT, InstanceFate.RESTART
        attempt.error = f"no reply within {timeout:g} s (timeout_s)"
        # No turn came back to say how long it waited for the instance; the fleet counts a
        # turn's timeout from its start, so the time before that was queued.
        attempt.queued_s = max(attempt.queued_s, time.monotonic() - started - timeout)
    except SessionExited as exc:
        attempt.error, attempt.fate = f"the instance died: {exc}", InstanceFate.LOST
    except AimtermError as exc:
        attempt.error, attempt.fate = str(exc), InstanceFate.LOST
    attempt.running_s = max(0.0, time.monotonic() - started - attempt.queued_s)
    attempt.screen_tail = _screen(fleet, iid) if not ok else []
    if attempt.fate is InstanceFate.KEPT:
        _reset(fleet, iid, turns.after)
    if ok:
        judge(attempt, job, env=_job_env(job), acceptance_timeout_s=acceptance_timeout_s,
              before=before, others=others, ignore=adapter.jobs.ignore)
        if attempt.status is not JobStatus.SUCCEEDED:
            attempt.screen_tail = _screen(fleet, iid)
    return attempt


def _interrupt(fleet: JobFleet, iid: str) -> None:
    """Nobody will answer the tool's question: take it back to its prompt (the adapter's
    interrupt keys end the turn), so the instance can take the next job."""
    try:
        fleet.interrupt(iid)
    except AimtermError:
        pass


def _reset(fleet: JobFleet, iid: str, after: tuple[str, ...]) -> None:
    """The recipe's reset turns (aider ``/drop``): best effort, the job's outcome stands."""
    for text in after:
        try:
            _wait_turn(fleet.submit(text, to=iid, timeout=SETUP_TURN_TIMEOUT_S),
                       SETUP_TURN_TIMEOUT_S, fleet, iid)
        except (AimtermError, _Unanswered):
            return


def oneshot_attempt(job: Job, adapter: AdapterSpec, number: int, *,
                    acceptance_timeout_s: float, cancel: threading.Event | None = None,
                    others: frozenset[str] = frozenset()) -> Attempt:
    """The tool's own non-interactive command, once, in a process of its own."""
    attempt = Attempt(number, "oneshot", None)
    argv = oneshot_argv(adapter.jobs, job)
    if argv is None:
        attempt.error = f"the adapter {adapter.name!r} has no one-shot form (jobs.oneshot)"
        return attempt
    timeout = turn_timeout_of(job, adapter)
    before = snapshot(job.cwd, job.files)
    try:
        run = run_oneshot(argv, cwd=oneshot_cwd(adapter, job), env=oneshot_env(adapter, job),
                          timeout_s=timeout,
                          rows=adapter.terminal.rows, cols=adapter.terminal.cols,
                          cancel=cancel)
    except AimtermError as exc:
        attempt.error = str(exc)
        return attempt
    attempt.running_s, attempt.reply = run.duration_s, run.output
    if run.cancelled:
        attempt.status, attempt.error = JobStatus.CANCELLED, "the run was cancelled"
    elif run.timed_out:
        attempt.status = JobStatus.TIMED_OUT
        attempt.error = f"{argv[0]} did not finish within {timeout:g} s (timeout_s)"
    elif run.exit_code != 0:
        how = f"exit code {run.exit_code}" if run.exit_code is not None \
            else f"signal {run.signal}"
        last = next((line.strip() for line in reversed(run.output.splitlines()) if line.strip()),
                    "")
        attempt.error = f"{argv[0]} ended with {how}" + (f": {last[:300]}" if last else "")
    else:
        judge(attempt, job, env=_job_env(job), acceptance_timeout_s=acceptance_timeout_s,
              before=before, others=others, ignore=adapter.jobs.ignore)
    if attempt.status is not JobStatus.SUCCEEDED:
        attempt.screen_tail = run.output.splitlines()[-SCREEN_TAIL:]
    return attempt
