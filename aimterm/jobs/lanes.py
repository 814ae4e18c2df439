"""Lanes: the instances that can take the pooled jobs of one (tool, folder, environment), and
the queue they take them from.

Each instance of a lane has a worker that takes one job at a time and gives the instance to
no one else meanwhile, so a job's turns (aider's ``/add`` for each file, then the prompt)
arrive together, never interleaved with another job's. Jobs with a ``key`` stay with the
instance that took the first of them; a job whose instance died goes to another one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aimterm.adapter.spec import AdapterSpec
from aimterm.errors import AimtermError
from aimterm.jobs.attempt import JobFleet
from aimterm.jobs.spec import Job
from aimterm.states import State
from aimterm.turn import Turn

__all__ = ["HeldGroup", "HoldingFleet", "Lane", "LaneKey", "Task", "lane_key", "usable"]

LaneKey = tuple[str, str | None, tuple[tuple[str, str], ...], tuple[str, ...]]


def lane_key(job: Job) -> LaneKey:
    """Jobs share instances when they need the same tool, in the same folder, with the same
    environment (an instance's folder and environment are fixed when it starts) and tags."""
    return job.tool, job.cwd, tuple(sorted(job.env.items())), tuple(sorted(set(job.tags)))


def usable(row: Mapping[str, Any]) -> bool:
    """Whether an instance (a fleet status row) can be given work: the fleet means to keep it
    (not draining or retired) and has not given up on it (not FATAL)."""
    return row.get("lifecycle") == "active" and row.get("state") != "fatal"


@dataclass(eq=False)
class Task:
    """A job waiting in a lane. ``avoid``: instances it must not go back to (it died there)."""

    job: Job
    run: Any  # the orchestrator's JobRun: this module only queues it
    avoid: set[str] = field(default_factory=set)


class Lane:
    """A queue of tasks and the instance ids that take them."""

    def __init__(self, key: LaneKey, adapter: AdapterSpec, fleet: JobFleet, *,
                 own: bool = False) -> None:
        self.key = key
        self.adapter = adapter
        self.fleet = fleet
        #: The fleet is one the orchestrator started for this lane (and may grow), not the
        #: instances of a fleet it was given.
        self.own = own
        self._cond = threading.Condition()
        self._queue: collections.deque[Task] = collections.deque()
        self._sticky: dict[str, str] = {}  # job key -> instance id
        self._workers: set[str] = set()
        self._open = 0  # tasks put and not yet finished

    @property
    def tool(self) -> str:
        return self.key[0]

    def put(self, task: Task, *, again: bool = False) -> None:
        """Queue a task (``again``: one coming back for another attempt, already counted)."""
        with self._cond:
            if not again:
                self._open += 1
            if again and task.job.key is not None and self._sticky.get(task.job.key) in task.avoid:
                del self._sticky[task.job.key]  # its instance died: the key moves on
            self._queue.append(task)
            self._cond.notify_all()

    def done(self, task: Task) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify_all()

    def join_worker(self, iid: str) -> bool:
        """Register a worker for ``iid``; False if one already runs for it."""
        with self._cond:
            if iid in self._workers:
                return False
            self._workers.add(iid)
            return True

    def leave(self, iid: str, on_orphans: Callable[[list[Task]], None]) -> None:
        """The worker of ``iid`` stops. If it was the last one, the tasks still queued can
        never run here: ``on_orphans`` gets them (to be failed)."""
        with self._cond:
            self._workers.discard(iid)
            orphans: list[Task] = []
            if not self._workers:
                orphans = list(self._queue)
                self._queue.clear()
            self._cond.notify_all()
        if orphans:
            on_orphans(orphans)

    def take(self, iid: str, stop: threading.Event, poll_s: float = 0.5) -> Task | None:
        """The next task for instance ``iid``; None once the lane has no open task (or the
        run stops)."""
        with self._cond:
            while not stop.is_set():
                task = self._pick(iid)
                if task is not None:
                    return task
                if self._open <= 0:
                    return None
                self._cond.wait(poll_s)
            return None

    def _pick(self, iid: str) -> Task | None:
        for task in self._queue:
            key = task.job.key
            owner = self._sticky.get(key) if key is not None else None
            if owner is not None and owner != iid and owner in self._workers:
                continue
            # A task avoids the instance it died on, unless no other worker is left.
            if iid in task.avoid and self._workers - task.avoid:
                continue
            self._queue.remove(task)
            if key is not None:
                self._sticky[key] = iid
            return task
        return None


class HoldingFleet(JobFleet, Protocol):
    """A fleet that runs groups of instances for a caller, for as long as it holds them (the
    daemon's: :class:`~aimterm.ipc.fleet.RemoteFleet`, and in the daemon its own pool)."""

    def hold_group(self, tool: str, *, cwd: str, env: Mapping[str, str] | None = None,
                   args: Sequence[str] = (), count: int = 1) -> str: ...

    def release_group(self, name: str) -> concurrent.futures.Future[None]: ...


class HeldGroup:
    """A lane's own instances as a group held in a given fleet, so that they are that
    fleet's (in its status, attachable) rather than this process's. Started at the first
    :meth:`scale` above zero, released at :meth:`shutdown`."""

    def __init__(self, fleet: HoldingFleet, tool: str, *, cwd: str, env: Mapping[str, str],
                 args: Sequence[str] = ()) -> None:
        self.fleet = fleet
        self.tool = tool
        self.name: str | None = None
        self._cwd, self._env, self._args = cwd, dict(env), tuple(args)

    def scale(self, tool: str, count: int) -> None:
        if self.name is None:
            if count > 0:
                self.name = self.fleet.hold_group(self.tool, cwd=self._cwd, env=self._env,
                                                  args=self._args, count=count)
            return
        self.fleet.scale(self.name, count)

    def status(self) -> list[dict[str, Any]]:
        if self.name is None:
            return []
        return [row for row in self.fleet.status() if row.get("group") == self.name]

    def submit(self, prompt: str, *, tool: str | None = None, key: str | None = None,
               tags: Iterable[str] = (), to: str | None = None,
               timeout: float | None = None) -> concurrent.futures.Future[Turn]:
        return self.fleet.submit(prompt, tool=tool, key=key, tags=tags, to=to, timeout=timeout)

    def screen(self, instance_id: str) -> list[str]:
        return self.fleet.screen(instance_id)

    def interrupt(self, instance_id: str) -> None:
        self.fleet.interrupt(instance_id)

    def restart(self, instance_id: str) -> State:
        return self.fleet.restart(instance_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        name, self.name = self.name, None
        if name is not None:
            with contextlib.suppress(AimtermError, concurrent.futures.TimeoutError):
                self.fleet.release_group(name).result(timeout)
