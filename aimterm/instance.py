"""A member of the fleet and what the pool knows about it: its group, its restart policy, the
prompt in its hands.

:class:`Instance` pairs a :class:`~aimterm.handle.SessionHandle` (the tool) with the pool's
bookkeeping (lifecycle, restarts, the prompt it holds); :class:`Group` is an adapter with a
desired count; :class:`Pending` is a prompt on its way. The pool (lifecycle) and the
dispatcher (prompts) share these; neither reaches into the session behind the handle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import hashlib
import itertools
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aimterm.adapter.spec import AdapterSpec
from aimterm.handle import SessionHandle
from aimterm.router import Candidate, Request
from aimterm.states import LIVE_STATES, State

if TYPE_CHECKING:
    from aimterm.turn import Turn

__all__ = ["Group", "GroupSpec", "Instance", "InstanceSetup", "Lifecycle", "Pending",
           "RestartPolicy", "SetupHook", "creation_order"]


@dataclass(frozen=True)
class RestartPolicy:
    """When and how often an instance that exited unasked is started again (cf. Supervisor's
    startsecs/startretries): the first restart waits ``backoff_s``; each further fast failure
    multiplies the wait by ``backoff_factor`` up to ``backoff_max_s``; after
    ``max_fast_failures`` fast failures in a row the instance is FATAL."""

    backoff_s: float = 0.1
    backoff_factor: float = 2.0
    backoff_max_s: float = 10.0
    fast_failure_s: float = 5.0
    max_fast_failures: int = 3
    restart: bool = True


@dataclass(frozen=True)
class InstanceSetup:
    """Per-instance overrides returned by a group's setup hook (e.g. its own git worktree)."""

    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    args: Sequence[str] = ()


SetupHook = Callable[[str, int], InstanceSetup | None]


@dataclass
class GroupSpec:
    """How many instances of which adapter, and how to run them."""

    adapter: AdapterSpec | str
    count: int = 1
    cwd: str | os.PathLike[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    tags: Iterable[str] = ()
    stagger_ms: int = 0
    setup: SetupHook | None = None
    transcript_dir: str | os.PathLike[str] | None = None
    #: Roll an instance's transcript over past this size (the run goes on in a new file;
    #: three older files kept). None: no limit.
    transcript_max_bytes: int | None = None
    args: Sequence[str] = ()
    #: Start every instance with the adapter's ``resume`` arguments, restarts included, so a
    #: crashed tool comes back in its conversation. (A resumed start that fails before the
    #: tool is ready is retried fresh: ``claude --continue`` exits where there is nothing to
    #: continue.)
    resume: bool = False
    #: The group's name, unique in its pool and the stem of its instances' ids (``name-1``).
    #: None: the adapter's name (one group per tool, as a cluster file has it). Groups with
    #: names of their own let one pool run a tool in several folders, as plan steps do.
    name: str | None = None


def env_digest(env: Mapping[str, str]) -> str:
    """A short fingerprint of the environment a group adds: in an instance's status, so that
    a job that sets variables can find instances started with exactly those (and no one
    reads the values off the status)."""
    text = "\0".join(f"{k}={v}" for k, v in sorted(env.items()))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class Lifecycle(str, enum.Enum):
    """What the pool intends for an instance (its process state is the session's State)."""

    ACTIVE = "active"  # keep it running, route to it
    DRAINING = "draining"  # finish the turn in hand, take no more, then stop
    RETIRED = "retired"  # stopped and removed

    def __str__(self) -> str:
        return self.value


class Group:
    def __init__(self, spec: GroupSpec, adapter: AdapterSpec) -> None:
        self.spec = spec
        self.adapter = adapter
        self.name = spec.name or adapter.name
        self.env_digest = env_digest(spec.env)
        self.desired = spec.count
        self.tags = frozenset(spec.tags)
        self.numbers = itertools.count(1)


class Pending:
    """A prompt on its way: queued, in flight, or retried after its instance died."""

    def __init__(self, number: int, prompt: str, route: Request, timeout: float | None,
                 retries: int) -> None:
        self.number = number
        self.prompt = prompt
        self.route = route
        self.timeout = timeout
        self.retries_left = retries
        self.attempts = 0
        self.future: concurrent.futures.Future[Turn] = concurrent.futures.Future()
        self.queued_at = time.monotonic()
        self.instance: str | None = None
        self.due: float | None = None  # when the turn in flight times out
        self.started_at: float | None = None  # wall clock: when an instance took it


class Instance:
    """One member of the fleet: a session plus what the pool knows about it."""

    def __init__(self, iid: str, group: Group, index: int, session: SessionHandle) -> None:
        self.id = iid
        self.group = group
        self.index = index
        self.session = session
        self.lifecycle = Lifecycle.ACTIVE
        self.restarts = 0
        self.fast_failures = 0
        self.started_at = 0.0
        self.expect_exit = False  # the pool itself is stopping it: no restart
        self.fatal_reason: str | None = None
        self.pending: Pending | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.retired: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.cwd: str | None = None
        self.transcript: str | None = None  # its asciicast file, one per run
        self.seq = 0  # creation order: candidates are listed in it, as the router expects
        self._ready_cand: Candidate | None = None
        self.resumed = False  # this run was started with the adapter's resume arguments
        self.resume_failed = False  # a resumed start died before it was ready: start fresh
        self.ready_once = False  # this run reached IDLE (or a question) at least once
        self.startup_timed_out: float | None = None  # this run was stopped: not ready in time
        self._tags = group.tags | {f"id:{iid}"}

    @property
    def adapter(self) -> str:
        return self.group.adapter.name

    @property
    def state(self) -> State:
        return self.session.state

    @property
    def tags(self) -> frozenset[str]:
        return self._tags

    def ready_candidate(self) -> Candidate:
        """What candidate() says of this instance when it is ready (made once: it is
        the same every time)."""
        cand = self._ready_cand
        if cand is None:
            cand = self._ready_cand = Candidate(id=self.id, adapter=self.adapter, tags=self.tags,
                                                ready=True, alive=True, in_flight=0)
        return cand

    def candidate(self) -> Candidate:
        state = self.session.state
        return Candidate(
            id=self.id, adapter=self.adapter, tags=self.tags,
            ready=(self.lifecycle is Lifecycle.ACTIVE and state is State.IDLE
                   and self.pending is None),
            alive=self.lifecycle is Lifecycle.ACTIVE and state in LIVE_STATES,
            in_flight=1 if self.pending is not None else 0)

    def status(self) -> dict[str, Any]:
        data = self.session.status()
        data.update(id=self.id, adapter=self.adapter, group=self.group.name,
                    env_digest=self.group.env_digest, tags=sorted(self.group.tags),
                    lifecycle=self.lifecycle.value, restarts=self.restarts, cwd=self.cwd,
                    fatal_reason=self.fatal_reason, resumed=self.resumed,
                    prompt=self.pending.prompt if self.pending is not None else None,
                    turn_started_at=self.pending.started_at if self.pending is not None
                    else None)
        return data


def creation_order(inst: Instance) -> int:
    return inst.seq
