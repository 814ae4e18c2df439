"""The :class:`Orchestrator`: a batch of jobs, run in parallel on the fleet, one result each.

Every job is queued before any is waited on. Jobs of a tool whose adapter supports pool mode
(and, in ``auto`` mode, that has more than one job) run on pooled instances: a lane per
(tool, folder, environment), each instance taking one job at a time, kept across calls so the
next batch starts warm. The other jobs run one-shot: the tool's own non-interactive command,
once per job, several at a time.

Pooled instances come from the fleet the orchestrator is given — by default the daemon's,
when one is up — when it has instances of the tool in the job's folder; otherwise the
orchestrator starts its own (and stops them at :meth:`Orchestrator.shutdown`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.spec import AdapterSpec
from aimterm.cluster import ClusterManager
from aimterm.config import DB_NAME, default_state_dir
from aimterm.errors import AimtermError
from aimterm.events import Event, EventBus, RunFinished, RunStarted
from aimterm.instance import GroupSpec, env_digest
from aimterm.jobs.attempt import InstanceFate, JobFleet, oneshot_attempt, pooled_attempt
from aimterm.jobs.checks import ACCEPTANCE_TIMEOUT_S
from aimterm.jobs.lanes import HeldGroup, Lane, LaneKey, Task, lane_key, usable
from aimterm.jobs.loader import jobs_from_data
from aimterm.jobs.result import JobResult, JobStatus
from aimterm.jobs.run import JobRun
from aimterm.jobs.spec import Job
from aimterm.store import Store

__all__ = ["MODES", "Orchestrator", "new_run_id"]

MODES = ("auto", "pooled", "oneshot")
Mode = Literal["auto", "pooled", "oneshot"]

#: Instances an orchestrator starts in all, over every lane (past it, a lane runs one-shot, or
#: with one instance when its tool has no one-shot form): a batch of jobs in a hundred folders
#: must not start a hundred agents at once.
MAX_OWN_INSTANCES = 16


#: The instances a lane starts for itself: a fleet of this process's, or a group held in the
#: daemon's fleet when the orchestrator runs on one.
OwnFleet = ClusterManager | HeldGroup


def new_run_id() -> str:
    """Sortable and unique enough: the start time to the second and a random tail."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class Orchestrator:
    """Runs batches of jobs (:meth:`execute_jobs`) and keeps its pools between batches.

    ``fleet``: where pooled jobs may run — ``"auto"`` (the daemon's fleet when a daemon of
    ``state_dir`` is up), a :class:`~aimterm.fleet.Fleet` (any :class:`JobFleet`), or None
    (only instances this orchestrator starts). ``instances_per_tool`` bounds the instances it
    starts per lane, ``max_oneshot`` the one-shot processes at once, ``max_instances`` the
    instances it starts in all. ``record``: keep runs, jobs, attempts and events in the store
    of ``state_dir`` and failed jobs' reports beside it.
    """

    def __init__(self, *, instances_per_tool: int = 3, fleet: JobFleet | str | None = "auto",
                 state_dir: str | os.PathLike[str] | None = None, record: bool = True,
                 max_oneshot: int = 8, acceptance_timeout_s: float = ACCEPTANCE_TIMEOUT_S,
                 store: Store | None = None,
                 record_event: Callable[[Event], object] | None = None,
                 max_instances: int = MAX_OWN_INSTANCES) -> None:
        if instances_per_tool < 1 or max_oneshot < 1:
            raise ValueError("instances_per_tool and max_oneshot must be at least 1")
        if isinstance(fleet, str) and fleet != "auto":
            raise ValueError(f"fleet: expected a Fleet, 'auto' or None, got {fleet!r}")
        self.instances_per_tool = instances_per_tool
        self.max_instances = max_instances
        self.acceptance_timeout_s = acceptance_timeout_s
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.bus = EventBus()
        self._fleet_choice = fleet
        self._fleet: JobFleet | None = None if fleet == "auto" else fleet  # type: ignore[assignment]
        self._fleet_owned = False
        self._record = record
        self._store: Store | None = store
        self._store_owned = store is None
        self._record_event = record_event
        self._adapters: dict[str, AdapterSpec] = {}
        self._pools: dict[LaneKey, OwnFleet] = {}
        self._oneshots = concurrent.futures.ThreadPoolExecutor(
            max_oneshot, thread_name_prefix="aimterm-oneshot")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._batch = threading.Lock()
        self._closed = False
        self.last_run_id: str | None = None

    # -- life ----------------------------------------------------------------------------------

    def __enter__(self) -> Orchestrator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def cancel(self) -> None:
        """Stop the batch in progress: no job gets another attempt; those not started end
        ``cancelled``; the turns in flight are interrupted."""
        self._stop.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the instances this orchestrator started; close its store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._oneshots.shutdown(wait=True, cancel_futures=True)
        for pool in list(self._pools.values()):
            try:
                pool.shutdown(timeout)
            except AimtermError:
                pass
        self._pools.clear()
        if self._fleet_owned and self._fleet is not None:
            close = getattr(self._fleet, "close", None)
            if close is not None:
                close()
        if self._store is not None and self._store_owned:
            self._store.close()

    def pools(self) -> dict[LaneKey, OwnFleet]:
        """The fleets this orchestrator started, by lane (tool, cwd, env): its own, or groups
        it holds in a daemon's fleet."""
        return dict(self._pools)

    # -- running jobs --------------------------------------------------------------------------

    async def aexecute_jobs(self, jobs: Iterable[Job | Mapping[str, Any]], *,
                            mode: Mode = "auto", source: str | None = None) -> list[JobResult]:
        """:meth:`execute_jobs` without blocking the event loop (the work runs in threads)."""
        return await asyncio.to_thread(self.execute_jobs, jobs, mode=mode, source=source)

    def execute_jobs(self, jobs: Iterable[Job | Mapping[str, Any]], *, mode: Mode = "auto",
                     source: str | None = None, run_id: str | None = None) -> list[JobResult]:
        """Run every job; one :class:`JobResult` per job, in the jobs' order.

        ``mode``: ``auto`` pools jobs when their adapter supports pool mode and instances that
        fit are up or several jobs share a lane; ``pooled`` and ``oneshot`` force one form.
        Jobs may be :class:`Job` or their mapping form (checked as a job file is). ``run_id``
        names the run (default: a new one; :attr:`last_run_id` has it). One batch at a time:
        a second call while one runs raises ``RuntimeError`` (make a second Orchestrator)."""
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if self._closed:
            raise RuntimeError("the orchestrator was shut down")
        if not self._batch.acquire(blocking=False):
            raise RuntimeError("this orchestrator is running a batch already; one batch at a "
                               "time (cancel() stops it; another Orchestrator runs beside it)")
        try:
            return self._execute(jobs, mode, source, run_id)
        finally:
            self._batch.release()

    def _execute(self, jobs: Iterable[Job | Mapping[str, Any]], mode: Mode,
                 source: str | None, run_id: str | None) -> list[JobResult]:
        checked = _as_jobs(list(jobs))
        for job in checked:
            self._adapter(job.tool)  # an unknown tool fails the batch before anything runs
        self._stop.clear()
        run_id = run_id or new_run_id()
        self.last_run_id = run_id
        started = time.monotonic()
        store = self._open_store()
        if store is not None:
            store.run_started(run_id, [j.to_dict() for j in checked], source=source)
        self._emit(RunStarted(None, run_id=run_id, jobs=len(checked), source=source))
        report_dir = self.state_dir / "runs" if self._record else None
        runs = [JobRun(job, run_id, run_started=started, emit=self._emit, store=store,
                       report_dir=report_dir) for job in checked]
        named = {f for job in checked for f in job.files}
        for run in runs:
            run.others = frozenset(f for f in named if f not in run.job.files)
        futures = [concurrent.futures.Future[JobResult]() for _ in runs]
        by_run = {id(run): fut for run, fut in zip(runs, futures, strict=True)}
        try:
            self._dispatch(runs, by_run, mode)
            _wait_all(futures)
        except BaseException:
            self.cancel()
            _wait_all(futures, limit=60.0)
            raise
        finally:
            for run, fut in zip(runs, futures, strict=True):
                if not fut.done():
                    _settle(fut, run.finish(JobStatus.CANCELLED, "the run was cancelled"))
        results = [f.result() for f in futures]
        failed = sum(not r.success for r in results)
        status = "succeeded" if not failed else "failed"
        if store is not None:
            store.run_finished(run_id, status)
        self._emit(RunFinished(None, run_id=run_id, status=status,
                               succeeded=len(results) - failed, failed=failed,
                               duration_s=round(time.monotonic() - started, 3)))
        return results

    # -- where each job goes -------------------------------------------------------------------

    def _dispatch(self, runs: Sequence[JobRun],
                  futures: dict[int, concurrent.futures.Future[JobResult]], mode: Mode) -> None:
        groups: dict[LaneKey, list[JobRun]] = {}
        for run in runs:
            groups.setdefault(lane_key(run.job), []).append(run)
        for key, members in groups.items():
            adapter = self._adapter(key[0])
            lane = self._lane(members[0].job, adapter, len(members), mode)
            if lane is None:
                for run in members:
                    self._oneshots.submit(self._run_oneshot, run, adapter, futures[id(run)])
            else:
                self._start_lane(lane, members, self._instances_for(lane, len(members)),
                                 futures)

    def _start_lane(self, lane: Lane, members: Sequence[JobRun], ids: Sequence[str],
                    futures: dict[int, concurrent.futures.Future[JobResult]]) -> None:
        """Queue the lane's jobs and start a worker per instance."""
        if not ids:
            for run in members:
                _settle(futures[id(run)], run.finish(
                    JobStatus.FAILED, f"no instance of {lane.tool!r} to run it on"))
            return
        for run in members:
            lane.put(Task(run.job, run))
        for iid in ids:
            threading.Thread(target=self._work, args=(lane, iid, futures), daemon=True,
                             name=f"aimterm-job-{iid}").start()

    def _lane(self, job: Job, adapter: AdapterSpec, jobs: int, mode: Mode) -> Lane | None:
        """Where the lane of ``job`` runs: instances of the given fleet that fit it, a pool of
        our own, or None for one-shot. ``auto`` pools when the adapter supports pool mode and
        instances are up already (the given fleet's, or ours from an earlier batch) or the
        lane has more than one job; a lone job would start an instance only to use it once."""
        oneshot = adapter.jobs.oneshot is not None
        if mode == "oneshot" and oneshot:
            return None
        key = lane_key(job)
        fleet = self._given_fleet()
        # (An instance has the environment it was started with: a job that sets variables
        # fits only instances whose group set exactly those, by their env_digest.)
        if fleet is not None and _fitting_ids(fleet, key) and (
                mode == "pooled" or adapter.jobs.pooled or not oneshot):
            return Lane(key, adapter, fleet)
        warm = key in self._pools
        if mode == "auto" and oneshot and not (adapter.jobs.pooled and (warm or jobs > 1)):
            return None
        if not warm and oneshot and self._own_instances() >= self.max_instances:
            return None  # no room for more instances: the lane's jobs run one-shot
        return Lane(key, adapter, self._own_pool(key, adapter, job), own=True)

    def _own_instances(self) -> int:
        return sum(len(pool.status()) for pool in list(self._pools.values()))

    def _own_pool(self, key: LaneKey, adapter: AdapterSpec, job: Job) -> OwnFleet:
        with self._lock:
            pool = self._pools.get(key)
            given = self._given_fleet()
            if pool is None and given is not None and hasattr(given, "hold_group"):
                # A daemon's fleet: the lane's instances are held there, the daemon's own.
                pool = HeldGroup(given, adapter.name, cwd=job.cwd or os.getcwd(),  # type: ignore[arg-type]
                                 env=job.env, args=adapter.jobs.pooled_args)
                self._pools[key] = pool
            elif pool is None:
                spec = GroupSpec(adapter, count=0, cwd=job.cwd, env=dict(job.env),
                                 tags=job.tags, args=adapter.jobs.pooled_args)
                # The orchestrator retries jobs itself, on another instance if one died: the
                # fleet must not resend a job's prompt behind its back.
                pool = ClusterManager([spec], retry_turns=0).start(wait=False)
                self._pools[key] = pool
            return pool

    def _instances_for(self, lane: Lane, jobs: int) -> list[str]:
        """The instance ids the lane's workers drive: the fitting ones of a given fleet, or
        our own pool grown to ``min(jobs, instances_per_tool)``."""
        if not lane.own:
            return _fitting_ids(lane.fleet, lane.key)
        others = self._own_instances() - len(lane.fleet.status())
        want = max(1, min(jobs, self.instances_per_tool, self.max_instances - others))
        if sum(r["lifecycle"] == "active" for r in lane.fleet.status()) < want:
            # (Our pools have no setup hook: the new instances are listed once this returns.)
            lane.fleet.scale(lane.adapter.name, want)
        return [r["id"] for r in lane.fleet.status() if usable(r)]

    def _work(self, lane: Lane, iid: str,
              futures: dict[int, concurrent.futures.Future[JobResult]]) -> None:
        """One instance's worker: a job at a time, until the lane has none left."""
        if not lane.join_worker(iid):
            return

        def orphans(tasks: list[Task]) -> None:
            for task in tasks:
                _settle(futures[id(task.run)], task.run.finish(
                    JobStatus.FAILED, f"no instance of {lane.tool!r} is left to run it"))
                lane.done(task)

        try:
            while (task := lane.take(iid, self._stop)) is not None:
                run: JobRun = task.run
                number = run.begin("pooled", iid)
                attempt = pooled_attempt(lane.fleet, iid, task.job, lane.adapter, number,
                                         acceptance_timeout_s=self.acceptance_timeout_s,
                                         cancel=self._stop, others=run.others)
                again = run.end(attempt) and not self._stop.is_set()
                usable = True
                if attempt.fate is InstanceFate.RESTART:
                    usable = self._restart(lane.fleet, iid)
                elif attempt.fate is InstanceFate.LOST:
                    usable = _alive(lane.fleet, iid)
                if again:
                    if attempt.fate is InstanceFate.LOST:
                        task.avoid.add(iid)
                    lane.put(task, again=True)
                else:
                    _settle(futures[id(run)], run.finish())
                    lane.done(task)
                if not usable:
                    break
        finally:
            lane.leave(iid, orphans)

    def _run_oneshot(self, run: JobRun, adapter: AdapterSpec,
                     future: concurrent.futures.Future[JobResult]) -> None:
        try:
            while True:
                number = run.begin("oneshot", None)
                attempt = oneshot_attempt(run.job, adapter, number,
                                          acceptance_timeout_s=self.acceptance_timeout_s,
                                          cancel=self._stop, others=run.others)
                if not run.end(attempt) or self._stop.is_set():
                    break
            _settle(future, run.finish())
        except BaseException as exc:  # a bug must not leave the batch waiting forever
            _settle(future, run.finish(JobStatus.FAILED, f"internal error: {exc!r}"))
            raise

    @staticmethod
    def _restart(fleet: JobFleet, iid: str) -> bool:
        """A timed-out instance starts afresh before it takes more work; False if it could
        not (the lane goes on without it)."""
        try:
            state = fleet.restart(iid)
        except AimtermError:
            return False
        return str(state) in ("idle", "waiting")

    # -- helpers -------------------------------------------------------------------------------

    def _adapter(self, tool: str) -> AdapterSpec:
        adapter = self._adapters.get(tool)
        if adapter is None:
            adapter = self._adapters[tool] = load_adapter(tool)
        return adapter

    def _given_fleet(self) -> JobFleet | None:
        if self._fleet is None and self._fleet_choice == "auto":
            self._fleet_choice = None  # look once
            from aimterm.ipc.fleet import RemoteFleet  # only when a daemon may be up

            socket = RemoteFleet.socket_of(self.state_dir)
            if socket.exists():
                try:
                    self._fleet = RemoteFleet(socket, timeout=10.0)
                    self._fleet.status()
                    self._fleet_owned = True
                except (AimtermError, OSError):
                    self._fleet = None
        return self._fleet

    def _open_store(self) -> Store | None:
        if self._record and self._store is None:
            self._store = Store(self.state_dir / DB_NAME)
        return self._store

    def _emit(self, event: Event) -> None:
        if self._record_event is not None:
            self._record_event(event)
        elif self._store is not None:
            try:
                self._store.append_event(event)
            except AimtermError:
                pass  # the run goes on; the result still comes back to the caller
        self.bus.emit(event)


def _as_jobs(jobs: Sequence[Job | Mapping[str, Any] | None]) -> list[Job]:
    if all(isinstance(j, Job) for j in jobs):
        return list(jobs)  # type: ignore[arg-type]
    return jobs_from_data([j.to_dict() if isinstance(j, Job) else j for j in jobs])


def _settle(future: concurrent.futures.Future[JobResult], result: JobResult) -> None:
    """Give a job its result, unless it has one (a worker late after the batch gave up on it:
    the batch's answer stands)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(result)


def _wait_all(futures: Sequence[concurrent.futures.Future[JobResult]],
              limit: float | None = None) -> None:
    """Wait in short steps, so that Ctrl-C reaches the caller while jobs run."""
    deadline = None if limit is None else time.monotonic() + limit
    pending = set(futures)
    while pending and (deadline is None or time.monotonic() < deadline):
        _, pending = concurrent.futures.wait(pending, timeout=0.5)


def _fitting_ids(fleet: JobFleet, key: LaneKey) -> list[str]:
    """The instances of a fleet that can take the lane's jobs: of its tool, active, not
    given up on, in its folder (when it names one), with its tags, started with its
    variables (when it sets any)."""
    tool, cwd, env, tags = key
    digest = env_digest(dict(env)) if env else None
    return [row["id"] for row in fleet.status()
            if row.get("adapter") == tool and usable(row)
            and set(tags) <= set(row.get("tags") or ())
            and (cwd is None or _same_dir(row.get("cwd"), cwd))
            and (digest is None or row.get("env_digest") == digest)]


def _same_dir(a: Any, b: str) -> bool:
    if not isinstance(a, str):
        return False
    return os.path.realpath(a) == os.path.realpath(b)


def _alive(fleet: JobFleet, iid: str) -> bool:
    """Whether an instance that failed a job will come back (the fleet restarts it)."""
    try:
        rows = {r["id"]: r for r in fleet.status()}
    except AimtermError:
        return False
    row = rows.get(iid)
    return row is not None and usable(row)
