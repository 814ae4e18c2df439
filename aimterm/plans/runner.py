"""Running a plan: each step in a git worktree of its own, its work merged back through the
merge train, everything recorded so that a run survives its process.

:class:`PlanRun` holds the pieces together — the :class:`~aimterm.plans.scheduler.Scheduler`
(which step next), :class:`~aimterm.plans.worktrees.Worktrees` (a worktree and branch per
step), the :class:`~aimterm.plans.train.MergeTrain` (one merge at a time, each gated), the
radar (:mod:`aimterm.plans.radar`: collisions found while steps still run) and the jobs
layer's :class:`~aimterm.jobs.orchestrator.Orchestrator` (one attempt of a step is one job).

Threads: the caller's runs the schedule; each attempt has one; the merge train and the radar
one each. They share one lock around the scheduler, and one around git's shared state
(creating and removing worktrees, merging), so no two of them race on the repository's refs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aimterm.config import DB_NAME, default_state_dir
from aimterm.errors import AimtermError, PlanError
from aimterm.events import (
    Event,
    EventBus,
    MergeConflictDetected,
    RunFinished,
    RunStarted,
    StepChanged,
    StepMerged,
    TaskStarted,
)
from aimterm.jobs.result import JobResult, JobStatus
from aimterm.jobs.spec import Job
from aimterm.plans.git import Git, GitError, head, repo_root
from aimterm.plans.history import (
    clear_stale_locks,
    recorded_states,
    set_aside_earlier_branches,
    undo_unfinished_merges,
)
from aimterm.plans.instances import StepFleet, StepGroup
from aimterm.plans.radar import INTEGRATION, predict
from aimterm.plans.result import PlanResult, StepOutcome, StepRecord
from aimterm.plans.scheduler import TERMINAL, Change, Scheduler, StepState
from aimterm.plans.spec import Plan, Step
from aimterm.plans.train import MergeOutcome, MergeTrain
from aimterm.plans.worktrees import Worktree, Worktrees
from aimterm.statedir import private_dirs
from aimterm.store import Store

__all__ = ["PlanError", "PlanResult", "PlanRun", "StepOutcome"]

#: How often the radar compares the running steps' work (seconds).
RADAR_INTERVAL_S = 1.0
#: How long the gate of one merge may run (seconds), as an acceptance command's.
GATE_TIMEOUT_S = 600.0


class PlanRun:
    """One run of a plan in the git repository ``repo``.

    ``resume``: go on with the recorded run ``run_id`` (its merged steps are not redone, its
    running ones are). ``keep_worktrees``: leave every step's worktree on disk (one with work
    that did not merge is always kept). ``record``: keep the run in the store of
    ``state_dir``. ``on_event`` sees every event as it happens (the live display).
    ``fleet``: where steps get their instances (the daemon's; see
    :mod:`aimterm.plans.instances`); None: each attempt runs as a job on its own.
    """

    def __init__(self, plan: Plan, *, repo: str | os.PathLike[str] = ".",
                 run_id: str | None = None, resume: bool = False,
                 state_dir: str | os.PathLike[str] | None = None, store: Store | None = None,
                 record: bool = True, max_concurrency: int | None = None,
                 keep_worktrees: bool = False, gate_timeout_s: float = GATE_TIMEOUT_S,
                 radar_interval_s: float = RADAR_INTERVAL_S,
                 on_event: Callable[[Event], object] | None = None,
                 record_event: Callable[[Event], object] | None = None,
                 fleet: StepFleet | None = None) -> None:
        from aimterm.jobs.orchestrator import new_run_id  # the runtime loads with a run

        if resume and run_id is None:
            raise ValueError("resume needs the run_id of the run to go on with")
        self.plan = plan
        try:
            self.repo = repo_root(Path(repo))
        except GitError as exc:
            raise PlanError(str(exc).partition(" (git said:")[0]) from exc
        self.run_id = run_id or new_run_id()
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.keep_worktrees = keep_worktrees
        self.gate_timeout_s = gate_timeout_s
        self.radar_interval_s = radar_interval_s
        self.bus = EventBus()
        self._on_event = on_event
        self._record_event = record_event  # instead of the store's append (the daemon's)
        self._fleet = fleet  # where steps get their instances (the daemon's), if given
        #: The run's result once :meth:`run` returned; ``failure``: why it could not run.
        self.result: PlanResult | None = None
        self.failure: str | None = None
        self._resume = resume
        self._max_concurrency = max_concurrency
        self._store = store
        self._record = record
        self._store_owned = store is None and record
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._git = threading.Lock()
        self._records = {s.id: StepRecord(s.id) for s in plan.steps}
        self._orchestrators: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._seen_predictions: set[tuple[str, str]] = set()
        self.scheduler: Scheduler | None = None
        #: Branches of an earlier run of the plan, renamed to make room for this one's.
        self.set_aside: list[str] = []
        # Worktrees live in the state dir, not under .git: some agent CLIs (Claude Code)
        # refuse to write anywhere below a .git folder.
        root = self.state_dir / "worktrees"
        self.worktrees = Worktrees(self.repo, plan_id=plan.id, run_id=self.run_id, root=root)
        self.train = MergeTrain(self.repo, plan_id=plan.id, run_id=self.run_id, root=root)
        self._ignore: dict[str, tuple[str, ...]] = {}

    # -- the run -----------------------------------------------------------------------------

    def cancel(self) -> None:
        """Start no more steps, interrupt the running ones; merges under way finish."""
        with self._cond:
            if self.scheduler is not None:
                self.scheduler.cancel()
            for orch in list(self._orchestrators.values()):
                orch.cancel()
            self._cond.notify_all()

    def prepare(self) -> None:
        """Check that the run can start (or go on) and set it up: the store, the earlier
        run's branches, the integration branch, the record. :meth:`run` does it if not done;
        doing it first reports a run that cannot start before anything is under way."""
        if self.scheduler is not None:
            return
        private_dirs(self.worktrees.root.parent)
        store = self._open_store()
        try:
            self._begin(store)
        except BaseException:
            if store is not None and self._store_owned:
                store.close()
                self._store = None
            raise

    def run(self) -> PlanResult:
        """Run the plan to its end (or go on with it); the result. Ctrl-C cancels it."""
        started = time.monotonic()
        self.prepare()
        store = self._store
        try:
            assert self.scheduler is not None
            self._emit(RunStarted(None, run_id=self.run_id, jobs=len(self.plan.steps),
                                  source=self.plan.source))
            self._spawn(self._merge_loop, "aimterm-plan-train")
            self._spawn(self._radar_loop, "aimterm-plan-radar")
            try:
                self._schedule()
            except BaseException:
                self.cancel()
                self._wait_attempts()
                raise
            finally:
                self._stop.set()
                with self._cond:
                    self._cond.notify_all()
                for thread in self._threads:
                    thread.join(timeout=60.0)
            status = self.scheduler.status()
            self.train.close(keep=self.keep_worktrees)
            # The result is kept before run_finished goes out: a client that hears the event
            # can ask for it at once.
            result = self.result = self._result(status, time.monotonic() - started)
            if store is not None:
                store.run_finished(self.run_id, status)
            failed = sum(s.state in ("failed", "gate_failed", "conflict") for s in result.steps)
            self._emit(RunFinished(None, run_id=self.run_id, status=status,
                                   succeeded=sum(s.state == "succeeded" for s in result.steps),
                                   failed=failed, duration_s=round(result.duration_s, 3)))
            return result
        finally:
            if store is not None and self._store_owned:
                store.close()

    def _begin(self, store: Store | None) -> None:
        """Open the merge train and the scheduler: afresh, or from the run's record."""
        resume: dict[str, tuple[StepState, int]] = {}
        if self._resume:
            resume = recorded_states(store, self.plan, self.run_id)
            clear_stale_locks(self.repo, self.worktrees.root, self.plan.id, self.run_id)
        with self._git:
            if not self._resume:
                self.set_aside = set_aside_earlier_branches(
                    store, self.plan, self.repo,
                    [self.train.branch] + [self.worktrees.branch_name(s.id)
                                           for s in self.plan.steps])
            self.train.open()
            if self._resume:
                undo_unfinished_merges(self.train.path, self.run_id, self.train.head(),
                                       self.worktrees.branch_name, resume)
        self.scheduler = Scheduler(self.plan, max_concurrency=self._max_concurrency,
                                   resume=resume)
        for wt in self.worktrees.existing():
            if wt.step_id in self._records:
                self._records[wt.step_id].worktree = wt
        if store is not None and not self._resume:
            store.plan_run_started(
                self.run_id, plan_id=self.plan.id, plan=self.plan.to_dict(),
                repo=str(self.repo), base=self.train.head(), integration=self.train.branch,
                source=self.plan.source,
                steps=[{"id": s.id, "tool": s.tool, **s.to_dict()} for s in self.plan.steps])
        self._flush()

    def _schedule(self) -> None:
        sched = self.scheduler
        assert sched is not None
        with self._cond:
            while not sched.done():
                for sid in sched.startable():
                    number = sched.start(sid)
                    self._spawn(functools.partial(self._attempt, sid, number),
                                f"aimterm-step-{sid}")
                self._flush()
                if sched.done():
                    break
                wait = 0.5
                timer = sched.next_timer()
                if timer is not None:
                    wait = max(0.01, min(wait, timer - time.monotonic()))
                self._cond.wait(wait)
            self._flush()

    # -- one attempt -------------------------------------------------------------------------

    def _attempt(self, sid: str, number: int) -> None:
        from aimterm.jobs.orchestrator import Orchestrator

        step = self.plan.step(sid)
        rec = self._records[sid]
        assert self.scheduler is not None
        with self._lock:
            rec.began = time.monotonic()
            if rec.started is None:
                rec.started = time.time()
            rebase = self.scheduler.rebase_wanted(sid)
        error: str | None = None
        result: JobResult | None = None
        try:
            t0 = time.monotonic()
            with self._git:
                wt = self._worktree(sid, rebase)
            rec.timings["worktree_s"] += time.monotonic() - t0
            with self._lock:
                rec.worktree = wt
            self._flush_step(sid)
            group = StepGroup(self._fleet, name=f"{sid}-{self.run_id[-4:]}", tool=step.tool,
                              cwd=str(wt.path), env=self._env(step))
            orch = Orchestrator(fleet=group.fleet, record=False, instances_per_tool=1,
                                max_oneshot=1, state_dir=self.state_dir,
                                record_event=lambda e: self._job_event(sid, number, e))
            with self._lock:
                cancelled = self.scheduler.cancelled
                self._orchestrators[sid] = orch
            try:
                if cancelled:
                    orch.cancel()
                t1 = time.monotonic()
                [result] = orch.execute_jobs([self._job(step, wt)], run_id=self.run_id)
                rec.timings["run_s"] += time.monotonic() - t1
            finally:
                with self._lock:
                    self._orchestrators.pop(sid, None)
                orch.shutdown()
                group.close()
            t2 = time.monotonic()
            if result.success and step.edits:
                self.worktrees.commit(wt, f"{self.plan.id}: {step.name or sid}\n\n"
                                          f"aimterm run {self.run_id}, step {sid}, "
                                          f"attempt {number}", ignore=self._ignored(step))
            rec.snapshot = self.worktrees.snapshot(wt)
            rec.timings["commit_s"] += time.monotonic() - t2
            if result.status is JobStatus.TIMED_OUT:
                error = f"timed out after {step.timeout_s:g} s: {result.error}"
            elif not result.success:
                error = result.error or result.status.value
        except (AimtermError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, AimtermError) \
                else str(exc)
        except BaseException as exc:  # a bug must not leave the run waiting for this step
            error = f"internal error: {exc!r}"
            raise
        finally:
            with self._cond:
                rec.elapsed += time.monotonic() - (rec.began or time.monotonic())
                rec.began = None
                if result is not None:
                    rec.result = result.to_dict()
                if self._store is not None:
                    with contextlib.suppress(AimtermError):
                        self._store.attempt_finished(
                            self.run_id, sid, number,
                            "succeeded" if error is None else "failed", error)
                if error is None:
                    self.scheduler.attempt_succeeded(sid)
                else:
                    self.scheduler.attempt_failed(sid, error)
                self._flush()
                self._cond.notify_all()

    def _worktree(self, sid: str, rebase: bool) -> Worktree:
        """The step's worktree: made from the integration branch as it is now, or the one an
        earlier attempt left (a retry goes on from that attempt's work). ``rebase``: start
        again from the integration head, the earlier work kept under a ref of its own."""
        wt = self.worktrees.create(sid, self.train.head(), setup=self.plan.globals.setup,
                                   env=self._env(self.plan.step(sid)))
        if rebase:
            git = Git(wt.path)
            earlier = (self.scheduler.attempts(sid) if self.scheduler else 1) - 1
            git.run("update-ref", f"refs/aimterm/attempts/{self.run_id}/{sid}/{earlier}",
                    "HEAD")
            git.run("reset", "--hard", self.train.head())
            git.run("clean", "-fd")
            wt = dataclasses.replace(wt, base=self.train.head())
        return wt

    def _ignored(self, step: Step) -> tuple[str, ...]:
        """The files the step's tool writes for itself (its adapter's ``jobs.ignore``: chat
        history, caches): never committed, never counted as the step's work."""
        if step.tool not in self._ignore:
            from aimterm.adapter.registry import load_adapter

            self._ignore[step.tool] = tuple(load_adapter(step.tool).jobs.ignore)
        return self._ignore[step.tool]

    def _env(self, step: Step) -> dict[str, str]:
        return {**self.plan.globals.env, **step.env, "AIMTERM_RUN_ID": self.run_id,
                "AIMTERM_STEP_ID": step.id, "AIMTERM_SCOPE": " ".join(step.writes)}

    def _job(self, step: Step, wt: Worktree) -> Job:
        return Job(id=step.id, tool=step.tool, prompt=step.prompt, cwd=str(wt.path),
                   env=self._env(step), timeout_s=step.timeout_s, retries=0,
                   acceptance=step.acceptance,
                   metadata={"plan_id": self.plan.id, "step_id": step.id})

    def _job_event(self, sid: str, number: int, event: Event) -> None:
        """The jobs layer's events of an attempt, under the step's attempt number; its own
        run_started/run_finished (one per attempt) are not the plan's and stay out."""
        if event.kind in ("run_started", "run_finished"):
            return
        if hasattr(event, "attempt"):
            event = dataclasses.replace(event, attempt=number)  # type: ignore[call-arg]
        if isinstance(event, TaskStarted):
            rec = self._records[sid]
            with self._lock:
                rec.instance, rec.mode = event.instance, event.mode
            if self._store is not None:
                with contextlib.suppress(AimtermError):
                    self._store.attempt_started(self.run_id, sid, number, event.mode,
                                                event.instance)
            self._flush_step(sid)
        self._emit(event)

    # -- the merge train -----------------------------------------------------------------------

    def _merge_loop(self) -> None:
        sched = self.scheduler
        assert sched is not None
        while True:
            with self._cond:
                while not (ready := sched.mergeable()) and not self._stop.is_set():
                    self._cond.wait(0.5)
                if not ready:
                    return
                sid = ready[0]
                sched.merge_started(sid)
            try:
                self._merge(sid)
            except BaseException as exc:
                with self._cond:
                    sched.merged(sid, "conflict", f"internal error while merging: {exc!r}")
                    self._flush()
                    self._cond.notify_all()
                if not isinstance(exc, Exception):
                    raise

    def _merge(self, sid: str) -> None:
        step, rec = self.plan.step(sid), self._records[sid]
        branch = self.worktrees.branch_name(sid)
        try:
            with self._git:
                outcome = self.train.merge(sid, branch, gate=step.acceptance,
                                           env=self._env(step),
                                           gate_timeout_s=self.gate_timeout_s)
        except GitError as exc:
            outcome = MergeOutcome(status="conflict", step_id=sid, branch=branch, tag="",
                                   commit=None, error=f"the merge failed: {exc}")
        rec.timings["merge_s"] += outcome.merge_s
        rec.timings["gate_s"] += outcome.gate_s
        rec.gate = [g.to_dict() for g in outcome.gate]
        error = outcome.error
        if outcome.status == "conflict" and outcome.conflicts:
            rec.conflicts = [c.path for c in outcome.conflicts]
            error = f"conflicts with the integration branch in {', '.join(rec.conflicts)}"
            self._emit(MergeConflictDetected(None, run_id=self.run_id, step_id=sid,
                                             other="integration", paths=rec.conflicts,
                                             predicted=False))
        elif outcome.status == "gate_failed":
            failed = next((g for g in outcome.gate if not g.passed), None)
            how = "" if failed is None else f": {failed.command} exited {failed.exit_code}"
            error = f"the gate failed on the merged result{how} (the merge was rolled back)"
        elif outcome.status == "merged" and outcome.commit:
            rec.merge_commit = outcome.commit
            self._emit(StepMerged(None, run_id=self.run_id, step_id=sid, branch=branch,
                                  commit=outcome.commit, merge_s=round(outcome.merge_s, 3),
                                  gate_s=round(outcome.gate_s, 3)))
        with self._cond:
            assert self.scheduler is not None
            state = self.scheduler.merged(sid, outcome.status, error)
            self._flush()
            self._cond.notify_all()
        if state is StepState.SUCCEEDED and rec.worktree is not None and not self.keep_worktrees:
            with self._git, contextlib.suppress(GitError):
                if self.worktrees.remove(rec.worktree, self.train.branch,
                                         ignore=self._ignored(step)):
                    rec.worktree = None
                    self._flush_step(sid)

    # -- the radar -------------------------------------------------------------------------------

    def _radar_loop(self) -> None:
        while not self._stop.wait(self.radar_interval_s):
            with contextlib.suppress(AimtermError, OSError):
                self._radar_once()

    def _radar_once(self) -> None:
        sched = self.scheduler
        assert sched is not None
        with self._lock:
            live = {sid: self._records[sid].worktree for sid, state in sched.states().items()
                    if state in (StepState.RUNNING, StepState.MERGING)}
        heads: dict[str, str] = {}
        for sid, wt in live.items():
            if wt is not None and (snap := self.worktrees.snapshot(wt)) is not None:
                heads[sid] = snap
        if not heads:
            return
        for pred in predict(self.repo, heads, self.train.head()):
            if pred.b == INTEGRATION:  # with the merged work: nothing to order, only to show
                first, then = INTEGRATION, pred.a
            else:
                first, then = self._order(pred.a, pred.b)
            if (first, then) in self._seen_predictions:
                continue
            self._seen_predictions.add((first, then))
            self._emit(MergeConflictDetected(None, run_id=self.run_id, step_id=then,
                                             other=first, paths=list(pred.paths),
                                             predicted=True))
            with self._cond:
                self._records[then].predicted.append(first)
                if first != INTEGRATION:
                    sched.serialise(first, then)
                self._flush_step(then)
                self._cond.notify_all()

    def _order(self, a: str, b: str) -> tuple[str, str]:
        """Of two colliding steps, the one further on (started first, then file order) goes
        first."""
        ra, rb = self._records[a], self._records[b]
        index = {s.id: i for i, s in enumerate(self.plan.steps)}
        ka = (ra.started or float("inf"), index[a])
        kb = (rb.started or float("inf"), index[b])
        return (a, b) if ka <= kb else (b, a)

    # -- records ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Record and announce the scheduler's moves since the last flush."""
        assert self.scheduler is not None
        with self._lock:
            changes = self.scheduler.drain()
        for change in changes:
            self._record_change(change)

    def _record_change(self, change: Change) -> None:
        sid = change.step_id
        self._flush_step(sid, change)
        self._emit(StepChanged(None, run_id=self.run_id, step_id=sid, old=change.old.value,
                               state=change.new.value, attempt=change.attempt,
                               reason=change.reason))

    def _flush_step(self, sid: str, change: Change | None = None) -> None:
        if self._store is None or self.scheduler is None:
            return
        rec = self._records[sid]
        with self._lock:
            state = change.new if change is not None else self.scheduler.state(sid)
            fields: dict[str, Any] = {
                "state": state.value, "attempts": self.scheduler.attempts(sid),
                "branch": self.worktrees.branch_name(sid)
                if rec.worktree or rec.merge_commit else None,
                "worktree": str(rec.worktree.path) if rec.worktree else None,
                "instance": rec.instance, "started": rec.started,
                "merge_commit": rec.merge_commit, "snapshot": rec.snapshot,
                "error": self.scheduler.error(sid), "detail": rec.detail()}
            if state in TERMINAL:
                fields["finished"] = time.time()
        with contextlib.suppress(AimtermError, KeyError):
            self._store.plan_step_update(self.run_id, sid, **fields)
            if state in TERMINAL:
                self._store.job_finished(self.run_id, sid, {
                    "status": state.value, "error": fields["error"], **rec.detail()})

    def view(self) -> list[dict[str, Any]]:
        """Each step as the live display shows it: state, attempt, instance, branch,
        elapsed seconds, and a note (the error, or a predicted conflict)."""
        with self._lock:
            sched = self.scheduler
            rows = []
            for step in self.plan.steps:
                rec = self._records[step.id]
                elapsed = rec.elapsed + (time.monotonic() - rec.began if rec.began else 0.0)
                state = sched.state(step.id).value if sched else "pending"
                note = sched.error(step.id) if sched else None
                if not note and rec.predicted:
                    note = "may conflict with " + ", ".join(rec.predicted)
                rows.append({"step": step.id, "state": state,
                             "attempt": sched.attempts(step.id) if sched else 0,
                             "instance": rec.instance or rec.mode,
                             "branch": self.worktrees.branch_name(step.id)
                             if rec.worktree or rec.merge_commit else None,
                             "elapsed_s": round(elapsed, 1), "note": note})
            return rows

    def _result(self, status: str, duration: float) -> PlanResult:
        assert self.scheduler is not None
        steps = []
        for step in self.plan.steps:
            rec = self._records[step.id]
            steps.append(StepOutcome(
                step_id=step.id, state=self.scheduler.state(step.id).value,
                attempts=self.scheduler.attempts(step.id),
                branch=self.worktrees.branch_name(step.id)
                if rec.worktree or rec.merge_commit else None,
                worktree=str(rec.worktree.path) if rec.worktree else None,
                merge_commit=rec.merge_commit, error=self.scheduler.error(step.id),
                elapsed_s=round(rec.elapsed, 3), timings=dict(rec.timings),
                conflicts=tuple(rec.conflicts), instance=rec.instance, mode=rec.mode))
        return PlanResult(run_id=self.run_id, plan_id=self.plan.id, status=status,
                          repo=str(self.repo), integration=self.train.branch,
                          head=head(self.repo, self.train.branch), steps=tuple(steps),
                          duration_s=duration, set_aside=tuple(self.set_aside))

    # -- plumbing --------------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _wait_attempts(self, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        with self._cond:
            while self.scheduler is not None and self.scheduler.running() \
                    and time.monotonic() < deadline:
                self._cond.wait(0.5)
            self._flush()

    def _open_store(self) -> Store | None:
        if self._record and self._store is None:
            self._store = Store(self.state_dir / DB_NAME)
        return self._store

    def _emit(self, event: Event) -> None:
        if self._record_event is not None:
            with contextlib.suppress(AimtermError):
                self._record_event(event)
        elif self._store is not None:
            with contextlib.suppress(AimtermError):
                self._store.append_event(event)
        if self._on_event is not None:
            with contextlib.suppress(Exception):  # the display must not stop the run
                self._on_event(event)
        self.bus.emit(event)


