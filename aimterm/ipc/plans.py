"""Plan runs inside the daemon: the ``plans_run``, ``plans_cancel`` and ``plans_get`` ops.

As with job runs, a plan handed to the daemon belongs to the daemon: it goes on when the
client that asked goes away, its events reach every ``events`` follower, and its record is
the daemon's store (``aimterm runs show``). If the daemon itself dies mid-run, ``aimterm run
PLAN --resume RUN`` goes on, in a new daemon or without one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimterm.adapter.registry import load_adapter
from aimterm.errors import AimtermError, ConfigError, LimitExceeded, ProtocolError
from aimterm.events import RunFinished
from aimterm.ipc.jobs import PoolFleet
from aimterm.plans.loader import plan_from_data
from aimterm.plans.runner import PlanRun
from aimterm.plans.spec import Plan

if TYPE_CHECKING:
    from aimterm.daemon import Daemon

__all__ = ["DaemonPlans"]

#: Plan runs going on at once in one daemon.
MAX_PLAN_RUNS = 8
_MAX_PATH = 4096


def _text(args: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_PATH or "\x00" in value:
        raise ProtocolError(f"'{name}' must be a non-empty string of at most {_MAX_PATH} "
                            "characters")
    return value


def _check_plan(raw: Any, source: str | None) -> Plan:
    """The plan, checked as a plan file is (no lines: it came as data), every tool known."""
    if not isinstance(raw, dict):
        raise ProtocolError("plans_run takes 'plan': a plan as a mapping")
    try:
        plan = plan_from_data(raw)
    except ConfigError as exc:
        raise ProtocolError(str(exc)) from None
    for tool in sorted({s.tool for s in plan.steps}):
        load_adapter(tool)  # AdapterNotFound: the reply's own code
    return dataclasses.replace(plan, source=source)


class DaemonPlans:
    """The plan runs of one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._runs: dict[str, tuple[PlanRun, threading.Thread]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def ops(self) -> dict[str, Any]:
        return {"plans_run": self.run, "plans_cancel": self.cancel, "plans_get": self.get}

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{plan, repo, source?, resume?, max_concurrency?, keep_worktrees?}``: check the
        plan, start (or go on with) the run; its id and the ``seq`` after which its events
        come."""
        repo = _text(args, "repo", required=True)
        assert repo is not None
        if not os.path.isabs(repo):
            raise ProtocolError("'repo' must be an absolute path (the daemon has its own cwd)")
        source = _text(args, "source")
        resume = _text(args, "resume")
        width = args.get("max_concurrency")
        if width is not None and (isinstance(width, bool) or not isinstance(width, int)
                                  or not 1 <= width <= 64):
            raise ProtocolError("'max_concurrency' must be an integer from 1 to 64")
        keep = args.get("keep_worktrees", False)
        if not isinstance(keep, bool):
            raise ProtocolError("'keep_worktrees' must be true or false")
        plan = await asyncio.to_thread(_check_plan, args.get("plan"), source)
        with self._lock:
            if self._closed:
                raise ProtocolError("the daemon is stopping")
            for old in [k for k, (_, t) in self._runs.items() if not t.is_alive()]:
                del self._runs[old]  # over: the store has it
            if len(self._runs) >= MAX_PLAN_RUNS:
                raise LimitExceeded("plan runs", len(self._runs) + 1, MAX_PLAN_RUNS,
                                    "wait for a run to end, or cancel one")
            since = self.daemon.store.last_seq() if self.daemon.store is not None else 0
            assert self.daemon.pool is not None
            try:
                runner = PlanRun(plan, repo=Path(repo), run_id=resume,
                                 resume=resume is not None,
                                 state_dir=self.daemon.config.state_dir,
                                 store=self.daemon.store, max_concurrency=width,
                                 keep_worktrees=keep, record_event=self.daemon.record,
                                 fleet=PoolFleet(self.daemon.pool, self.daemon))
            except AimtermError as exc:
                raise ProtocolError(str(exc)) from None
            if runner.run_id in self._runs:
                raise ProtocolError(f"run {runner.run_id} is going on in this daemon already")
            self._runs[runner.run_id] = (runner, threading.Thread())  # held while it prepares
        try:
            # A run that cannot start (a branch in the way, a resume that does not fit) is
            # the reply's error, not a run that ends at once.
            await asyncio.to_thread(runner.prepare)
        except AimtermError as exc:
            with self._lock:
                self._runs.pop(runner.run_id, None)
            raise ProtocolError(str(exc)) from None
        with self._lock:
            thread = threading.Thread(target=self._execute, args=(runner,), daemon=True,
                                      name=f"aimterm-plan-{runner.run_id}")
            self._runs[runner.run_id] = (runner, thread)
            thread.start()
        return {"run_id": runner.run_id, "since": since, "steps": len(plan.steps)}

    async def cancel(self, args: dict[str, Any]) -> dict[str, Any]:
        run_id = args.get("run_id")
        entry = self._runs.get(run_id) if isinstance(run_id, str) else None
        if entry is None:
            raise ProtocolError(f"no plan run {run_id!r} is going on in this daemon")
        entry[0].cancel()
        return {"run_id": run_id, "cancelled": True}

    async def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{run_id}``: the run's record (its steps), whether it still runs, and its result
        (there from the moment its ``run_finished`` event is written)."""
        run_id = args.get("run_id")
        if not isinstance(run_id, str) or not run_id or len(run_id) > 128:
            raise ProtocolError("plans_get takes 'run_id' (a plan run's id)")
        store = self.daemon.store
        assert store is not None
        row = store.plan_run(run_id)
        if row is None:
            raise ProtocolError(f"no plan run {run_id!r} in the store")
        entry = self._runs.get(run_id)
        running = entry is not None and entry[1].is_alive()
        result = entry[0].result if entry is not None else None
        return {"run": row, "steps": store.plan_steps(run_id), "running": running,
                "result": result.to_dict() if result is not None else None,
                "failure": entry[0].failure if entry is not None else None}

    def shutdown(self, timeout: float = 10.0) -> None:
        """The daemon stops: every plan run is cancelled and waited for (bounded); each can
        be resumed later."""
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
        for runner, _ in runs:
            runner.cancel()
        for _, thread in runs:
            thread.join(timeout)

    def _execute(self, runner: PlanRun) -> None:
        try:
            runner.run()
        except Exception as exc:  # noqa: BLE001 - the client must hear the run ended
            runner.failure = f"{type(exc).__name__}: {exc}"
            self.daemon.record(RunFinished(None, run_id=runner.run_id, status="failed",
                                           succeeded=0, failed=0, duration_s=0.0))
