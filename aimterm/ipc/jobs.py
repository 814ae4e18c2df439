"""Job runs inside the daemon: the ``jobs_run``, ``jobs_cancel`` and ``jobs_get`` ops.

A run handed to the daemon belongs to the daemon, not to the client that asked: the client
may watch it (the ``events`` op carries its ``run_*`` and ``task_*`` events), go away, and
read the results later (``jobs_get``, or ``aimterm jobs show``, from the store). The daemon's
orchestrator runs pooled jobs on the daemon's own instances when they fit (the tool, in the
job's folder), on instances of its own otherwise, and stops those when the daemon stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aimterm.adapter.registry import load_adapter
from aimterm.errors import AimtermError, ConfigError, LimitExceeded, ProtocolError
from aimterm.jobs.loader import jobs_from_data
from aimterm.jobs.orchestrator import MODES, Orchestrator, new_run_id
from aimterm.jobs.spec import MAX_JOBS
from aimterm.pool import GroupSpec, Pool
from aimterm.states import State
from aimterm.turn import Turn

if TYPE_CHECKING:
    from aimterm.daemon import Daemon

__all__ = ["MAX_RUNS", "DaemonJobs", "PoolFleet"]

#: Runs going on at once in one daemon; each has its own instances and threads.
MAX_RUNS = 16
#: Instances per lane a run may ask for (what ``aimterm jobs run -n`` allows).
MAX_INSTANCES = 64


class PoolFleet:
    """The daemon's pool as the part of a Fleet that running jobs needs, and the groups a
    plan run adds to it for its steps (``daemon``: whose transcripts they write)."""

    def __init__(self, pool: Pool, daemon: Daemon | None = None) -> None:
        self.pool = pool
        self._daemon = daemon

    def add_group(self, name: str, tool: str, *, cwd: str, env: Mapping[str, str],
                  args: Sequence[str] = (), count: int = 1) -> None:
        """Start ``count`` instances of ``tool`` in ``cwd`` as the group ``name`` (their ids
        ``name-1``, …), ``args`` added to the tool's command: they are the daemon's like any
        other, in its status, attachable."""
        if self._daemon is not None:
            spec = self._daemon.group_spec(tool, count, cwd=cwd, env=env)
        else:
            spec = GroupSpec(tool, count=count, cwd=cwd, env=dict(env))
        self.pool.add_group(dataclasses.replace(spec, name=name, args=tuple(args)))

    def remove_group(self, name: str) -> concurrent.futures.Future[None]:
        return self.pool.remove_group(name)

    def hold_group(self, tool: str, *, cwd: str, env: Mapping[str, str] | None = None,
                   args: Sequence[str] = (), count: int = 1) -> str:
        """:meth:`add_group` under a name of the daemon's choosing (``TOOL-xxxx``), as a
        client's held group is named: for a job run's lanes."""
        for _ in range(8):
            name = f"{tool}-{secrets.token_hex(2)}"
            try:
                self.add_group(name, tool, cwd=cwd, env=env or {}, args=args, count=count)
            except ValueError:  # taken: draw again
                continue
            return name
        raise ProtocolError("could not name the group (8 names taken)")

    def release_group(self, name: str) -> concurrent.futures.Future[None]:
        return self.remove_group(name)

    def submit(self, prompt: str, *, tool: str | None = None, key: str | None = None,
               tags: Iterable[str] = (), to: str | None = None,
               timeout: float | None = None) -> concurrent.futures.Future[Turn]:
        return self.pool.submit(prompt, tool=tool, key=key, tags=tags, to=to, timeout=timeout)

    def status(self) -> list[dict[str, Any]]:
        return self.pool.status()

    def screen(self, instance_id: str) -> list[str]:
        return self.pool.screen(instance_id)

    def interrupt(self, instance_id: str) -> None:
        self.pool.interrupt(instance_id)

    def restart(self, instance_id: str) -> State:
        return self.pool.restart_instance(instance_id, wait=True, timeout=120.0)

    def scale(self, tool: str, count: int) -> None:
        self.pool.scale(tool, count)


class _Run:
    def __init__(self, run_id: str, orchestrator: Orchestrator) -> None:
        self.run_id = run_id
        self.orchestrator = orchestrator
        self.thread: threading.Thread | None = None

    @property
    def live(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class DaemonJobs:
    """The runs of one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._closed = False

    def ops(self) -> dict[str, Any]:
        return {"jobs_run": self.run, "jobs_cancel": self.cancel, "jobs_get": self.get}

    # -- ops -----------------------------------------------------------------------------------

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{jobs, mode?, instances?, source?}``: check the jobs, start the run, reply with
        its id and the ``seq`` after which its events come (for an ``events`` stream)."""
        raw = args.get("jobs")
        if not isinstance(raw, list) or not raw:
            raise ProtocolError("jobs_run takes 'jobs': a non-empty list of jobs")
        if len(raw) > MAX_JOBS:
            raise LimitExceeded("jobs", len(raw), MAX_JOBS)
        mode = args.get("mode", "auto")
        if mode not in MODES:
            raise ProtocolError(f"'mode' must be one of {', '.join(MODES)}")
        instances = args.get("instances", 3)
        if isinstance(instances, bool) or not isinstance(instances, int) \
                or not 1 <= instances <= MAX_INSTANCES:
            raise ProtocolError(f"'instances' must be an integer from 1 to {MAX_INSTANCES}")
        source = args.get("source")
        if source is not None and (not isinstance(source, str) or len(source) > 4096):
            raise ProtocolError("'source' must be a string of at most 4096 characters")
        # The same checks as a job file's (no lines: the jobs came as data), paths absolute.
        jobs = await asyncio.to_thread(_check_jobs, raw)
        with self._lock:
            if self._closed:
                raise ProtocolError("the daemon is stopping")
            live = sum(r.live for r in self._runs.values())
            if live >= MAX_RUNS:
                raise LimitExceeded("runs", live + 1, MAX_RUNS,
                                    "wait for a run to end, or cancel one (aimterm jobs cancel)")
            for old in [k for k, r in self._runs.items() if r.thread is not None and not r.live]:
                del self._runs[old]  # over: the store has it
            run_id = new_run_id()
            while run_id in self._runs:
                run_id = new_run_id()
            since = self.daemon.store.last_seq() if self.daemon.store is not None else 0
            orch = Orchestrator(instances_per_tool=instances,
                                fleet=PoolFleet(self._pool(), self.daemon),
                                state_dir=self.daemon.config.state_dir,
                                store=self.daemon.store, record_event=self.daemon.record)
            run = self._runs[run_id] = _Run(run_id, orch)
            run.thread = threading.Thread(target=self._execute, args=(run, jobs, mode, source),
                                          name=f"aimterm-run-{run_id}", daemon=True)
            run.thread.start()
        return {"run_id": run_id, "since": since, "jobs": len(jobs)}

    async def cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        run = self._known(args)
        run.orchestrator.cancel()
        return {"run_id": run.run_id, "cancelled": True}

    async def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{run_id}``: the run as the store has it, its jobs with their results (None while
        a job runs)."""
        run_id = args.get("run_id")
        if not isinstance(run_id, str) or not run_id or len(run_id) > 128:
            raise ProtocolError("jobs_get takes 'run_id' (a run's id)")
        store = self.daemon.store
        assert store is not None
        row = store.run(run_id)
        if row is None:
            raise ProtocolError(f"no run {run_id!r} in the store")
        live = self._runs.get(run_id)
        return {"run": row, "jobs": store.run_jobs(run_id),
                "running": live is not None and live.live}

    # -- the daemon's side ---------------------------------------------------------------------

    def shutdown(self, timeout: float = 10.0) -> None:
        """The daemon stops: every run is cancelled, waited for (bounded) and its instances
        stopped."""
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
        for run in runs:
            run.orchestrator.cancel()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout)
            run.orchestrator.shutdown(timeout)

    def _execute(self, run: _Run, jobs: list[Any], mode: str, source: str | None) -> None:
        try:
            run.orchestrator.execute_jobs(jobs, mode=mode, source=source,  # type: ignore[arg-type]
                                          run_id=run.run_id)
        except AimtermError:
            pass  # (its jobs' results say what happened; the run's record is complete)
        finally:
            run.orchestrator.shutdown()

    def _known(self, args: Mapping[str, Any]) -> _Run:
        run_id = args.get("run_id")
        run = self._runs.get(run_id) if isinstance(run_id, str) else None
        if run is None:
            raise ProtocolError(f"no run {run_id!r} is going on in this daemon")
        return run

    def _pool(self) -> Pool:
        assert self.daemon.pool is not None
        return self.daemon.pool


def _check_jobs(raw: list[Any]) -> list[Any]:
    """The jobs, checked as a job file's are, each tool's adapter loaded (an unknown one is
    refused now, not once the run has started)."""
    try:
        jobs = jobs_from_data(raw)
    except ConfigError as exc:
        raise ProtocolError(str(exc)) from None
    for tool in sorted({job.tool for job in jobs}):
        load_adapter(tool)  # AdapterNotFound: the reply's own code
    for job in jobs:
        if job.cwd is None or not job.cwd.startswith("/"):
            raise ProtocolError(f"job {job.id!r}: 'cwd' must be an absolute path (the daemon "
                                f"does not know the client's folder)")
    return jobs
