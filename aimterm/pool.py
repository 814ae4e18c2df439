"""The pool controller: instances of one or several adapters, kept alive and fed by the router.

A :class:`Pool` holds *groups* (an adapter with a desired count, cwd, env, tags and a per-instance
setup hook) and the :class:`Instance` s that make up the actual fleet. It

- starts instances (optionally staggered: some tools corrupt a shared config file when several
  start at once) and restarts one that exits unasked: EXITED → BACKOFF → STARTING, with an
  exponential back-off over *fast* failures (an exit within ``fast_failure_s`` of its start) and
  FATAL, with the reason, after ``max_fast_failures`` of them in a row;
- scales a group up and down, and drains an instance (it finishes its turn and takes no more);
- feeds them prompts through its :class:`~aimterm.dispatch.Dispatcher` (queue, routing, turn
  timeouts, retries on another instance);
- stops everything within a time budget, leaving no process behind.

It drives each tool only through the :class:`~aimterm.handle.SessionHandle` methods, so an
instance may be a local PTY session or one on another machine.

All decisions run on the shared reader loop (the thread that also sees every state change), so
the pool's own state needs no lock; public methods hand work over to the loop and wait.
Blocking work (stopping a process with its escalation) runs on a small worker pool.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.spec import AdapterSpec
from aimterm.dispatch import Dispatcher
from aimterm.errors import (
    AimtermError,
    LimitExceeded,
    NoSuchTool,
    StartupTimeout,
    UnknownInstance,
)
from aimterm.events import (
    Event,
    EventBus,
    InstanceAdded,
    InstanceFatal,
    InstanceRemoved,
    InstanceRestarting,
    StateChanged,
)
from aimterm.handle import SessionFactory, SessionHandle
from aimterm.host.placement import SessionHosts
from aimterm.instance import (
    Group,
    GroupSpec,
    Instance,
    InstanceSetup,
    Lifecycle,
    RestartPolicy,
    SetupHook,
)
from aimterm.router import Router, RoutingStrategy
from aimterm.session import Session
from aimterm.states import LIVE_STATES, State
from aimterm.term.loop import IOLoop
from aimterm.term.transcript import rotate as rotate_transcript
from aimterm.turn import Turn

__all__ = ["GroupSpec", "Instance", "InstanceSetup", "Lifecycle", "Pool", "RestartPolicy",
           "SetupHook"]


log = logging.getLogger(__name__)

#: Runs of an instance whose transcripts are kept besides the current one (<id>.cast.1 …).
_TRANSCRIPTS_KEPT = 3
_SETTLING = frozenset({State.STARTING, State.EXITED, State.FATAL, State.BACKOFF, State.WAITING})


class Pool:
    """A fleet of sessions. Use as a context manager, or call :meth:`start` / :meth:`shutdown`."""

    def __init__(self, groups: Iterable[GroupSpec] = (), *,
                 routing: RoutingStrategy | str = RoutingStrategy.ROUND_ROBIN,
                 queue_size: int = 1000, queue_timeout_s: float | None = None,
                 restart: RestartPolicy | None = None, retry_turns: int = 1,
                 resume: Iterable[str] = (),
                 bus: EventBus | None = None, loop: IOLoop | None = None,
                 sessions: SessionFactory | None = None, max_instances: int | None = None,
                 env: Mapping[str, str] | None = None, hosts: int | None = 0) -> None:
        self.bus = bus or EventBus()
        #: Variables every instance carries beneath its group's own (a daemon's marker); not
        #: part of a group's env_digest, which tells groups apart.
        self.env = dict(env or {})
        self._ioloop = loop or IOLoop.shared()
        self._loop = self._ioloop.loop
        self.router = Router(routing)
        self.restart_policy = restart or RestartPolicy()
        #: Session hosts the instances run in (``hosts``: how many, None for one per core;
        #: 0 runs them in this process, on its one reader loop).
        self.hosts: SessionHosts | None = None
        if sessions is None and hosts != 0:
            self.hosts = SessionHosts(hosts, loop=self._ioloop)
            sessions = self.hosts
        self._sessions: SessionFactory = sessions or Session
        #: The ceiling on desired instances over all groups (None: no ceiling).
        self.max_instances = max_instances
        self._groups: dict[str, Group] = {}
        self._instances: dict[str, Instance] = {}
        # Instances whose session is IDLE, kept from the state events: the ones to look at
        # for a prompt (still checked: not in a turn, not draining), without a sweep of all.
        self._idle: dict[str, Instance] = {}
        self.dispatcher = Dispatcher(self._ioloop, self.bus, self.router,
                                     instances=self._instances, idle=self._idle,
                                     on_turn_over=self._turn_over, queue_size=queue_size,
                                     queue_timeout_s=queue_timeout_s, retry_turns=retry_turns)
        self._seq = itertools.count()
        # Instance ids whose next start resumes the tool's previous conversation, once: the
        # fleet of a daemon that died, relaunched by the next one.
        self._resume_next: set[str] = set(resume)
        self._closing = False
        self._closed = False
        self._creating = 0  # instances whose setup hook is still running
        self._reserved: set[str] = set()
        self._to_spawn: collections.deque[Instance] = collections.deque()  # see _spawn_soon
        self._workers = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="aimterm-stop")
        self._ready_cond = threading.Condition()
        self.setup_errors: list[tuple[str, Exception]] = []
        self.started = False
        self.bus.subscribe(self._on_event)
        for spec in groups:
            self.add_group(spec)

    # -- groups and instances ---------------------------------------------------------------------

    @property
    def ioloop(self) -> IOLoop:
        """The reader loop the pool's sessions run on (a benchmark times its thread's CPU
        or schedules on it)."""
        return self._ioloop

    def add_group(self, spec: GroupSpec) -> None:
        """Add a group; its instances start with :meth:`start` (or now, if running)."""
        adapter = load_adapter(spec.adapter) if isinstance(spec.adapter, str) else spec.adapter
        group = Group(spec, adapter)

        def add() -> None:
            if self._closing:
                raise RuntimeError("the pool is shutting down")
            if group.name in self._groups:
                raise ValueError(f"the pool already has a group named {group.name!r}")
            self._check_ceiling(group, spec.count)
            self._groups[group.name] = group
            if self.started:
                self._scale(group, spec.count)

        self._ioloop.run_sync(add)

    def remove_group(self, name: str) -> concurrent.futures.Future[None]:
        """Drain the group's instances (each finishes the turn in hand) and forget the group;
        the future is done once all of them have stopped."""
        def remove() -> list[concurrent.futures.Future[None]]:
            group = self._groups.pop(name, None)
            if group is None:
                raise NoSuchTool(name, available=list(self._groups))
            group.desired = 0
            members = [i for i in self._instances.values() if i.group is group]
            for inst in members:
                self._drain(inst)
            return [i.retired for i in members]

        retired = self._ioloop.run_sync(remove)
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        left = [len(retired)]  # (the retired futures are all set on the pool's loop, in turn)

        def one(_: concurrent.futures.Future[None]) -> None:
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)

        if not retired:
            done.set_result(None)
        for future in retired:
            future.add_done_callback(one)
        return done

    def _reserve(self, group: Group) -> tuple[str, int]:
        index = next(group.numbers)
        while (iid := _instance_id(group, index)) in self._instances or iid in self._reserved:
            index = next(group.numbers)
        return iid, index

    def planned(self) -> dict[str, AdapterSpec]:
        """Before :meth:`start`: the id and adapter of every instance it will start."""
        def plan() -> dict[str, AdapterSpec]:
            if self.started:
                raise RuntimeError("the pool has started: its instances are in instances()")
            return {_instance_id(g, n): g.adapter for g in self._groups.values()
                    for n in range(1, g.desired + 1)}

        return self._ioloop.run_sync(plan)

    def _new_instance(self, group: Group, iid: str, index: int,
                      extra: InstanceSetup | None) -> Instance:
        spec = group.spec
        cwd = os.fspath(spec.cwd) if spec.cwd is not None else None
        env = {**self.env, **spec.env}
        args = list(spec.args)
        if extra is not None:
            cwd = extra.cwd if extra.cwd is not None else cwd
            env.update(extra.env)
            args += list(extra.args)
        transcript = None
        if spec.transcript_dir is not None:
            transcript = os.path.join(os.fspath(spec.transcript_dir), f"{iid}.cast")
        session = self._sessions(group.adapter, instance_id=iid, cwd=cwd, env=env, args=args,
                                 transcript=transcript,
                                 transcript_max_bytes=spec.transcript_max_bytes,
                                 bus=self.bus, loop=self._ioloop)
        inst = Instance(iid, group, index, session)
        inst.seq = next(self._seq)
        inst.cwd = cwd
        inst.transcript = transcript
        self._instances[iid] = inst
        self.bus.emit(InstanceAdded(iid, adapter=group.adapter.name))
        return inst

    def _add_instance(self, group: Group, delay: float) -> None:
        """Create and spawn one more instance of ``group``. A setup hook (which may be slow:
        ``git worktree add``) runs on a worker thread, never on the loop."""
        iid, index = self._reserve(group)
        self._reserved.add(iid)  # while its setup hook runs, the id is taken

        def create(extra: InstanceSetup | None) -> None:
            self._creating -= 1
            self._reserved.discard(iid)
            if self._closing:
                self._wake()
                return
            inst = self._new_instance(group, iid, index, extra)
            if delay:
                inst.timer = self._loop.call_later(delay, self._spawn, inst)
            else:
                self._spawn_soon(inst)

        self._creating += 1
        hook = group.spec.setup
        if hook is None:
            create(None)
            return

        def run_hook() -> None:
            try:
                extra = hook(iid, index)
            except Exception as exc:  # noqa: BLE001 - reported, and the instance is not made
                self._loop.call_soon_threadsafe(self._setup_failed, iid, exc)
                return
            self._loop.call_soon_threadsafe(create, extra)

        self._workers.submit(run_hook)

    def _setup_failed(self, iid: str, exc: Exception) -> None:
        self._creating -= 1
        self._reserved.discard(iid)
        self.setup_errors.append((iid, exc))
        self._wake()

    def _wake(self) -> None:
        with self._ready_cond:
            self._ready_cond.notify_all()

    def _check_ceiling(self, group: Group, count: int) -> None:
        """Refuse, before anything starts, a count that takes the fleet past its ceiling."""
        if self.max_instances is None:
            return
        total = count + sum(g.desired for g in self._groups.values() if g is not group)
        if total > self.max_instances:
            raise LimitExceeded("instances in the cluster", total, self.max_instances,
                                hint="raise max_instances in the cluster file")

    def _scale(self, group: Group, count: int) -> None:
        self._check_ceiling(group, count)
        group.desired = count
        active = [i for i in self._instances.values()
                  if i.group is group and i.lifecycle is Lifecycle.ACTIVE]
        if count > len(active):
            stagger = group.spec.stagger_ms / 1000.0
            for n in range(count - len(active)):
                self._add_instance(group, stagger * n)
        elif count < len(active):
            # Retire the least useful first: dead ones, then idle ones, then busy ones.
            order = {State.FATAL: 0, State.BACKOFF: 0, State.EXITED: 0, State.STARTING: 1,
                     State.IDLE: 2, State.WAITING: 3, State.ATTACHED: 4, State.BUSY: 5}
            victims = sorted(active, key=lambda i: (order.get(i.state, 5), -i.index))
            for inst in victims[: len(active) - count]:
                self._drain(inst)

    # -- start ------------------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Start every group's instances; with ``wait``, until each is IDLE (or gave up)."""
        if self.hosts is not None:
            self.hosts.start()

        def go() -> None:
            if self.started:
                return
            self.started = True
            for group in self._groups.values():
                self._scale(group, group.desired)

        self._ioloop.run_sync(go)
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until every active instance is IDLE (or WAITING on a start-up question, or
        FATAL). Raises StartupTimeout naming the instances that are not."""
        if timeout is None:
            timeout = max((g.adapter.startup.timeout_s for g in self._groups.values()),
                          default=60.0) + 5.0
        deadline = time.monotonic() + timeout
        settled = {State.IDLE, State.WAITING, State.FATAL}
        with self._ready_cond:
            while True:
                if self.setup_errors:
                    iid, exc = self.setup_errors[0]
                    raise StartupTimeout(f"setup of {iid} failed: {exc}")
                waiting = [i for i in list(self._instances.values())
                           if i.lifecycle is Lifecycle.ACTIVE and i.state not in settled]
                if not waiting and not self._creating:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    names = ", ".join(f"{i.id} ({i.state})" for i in waiting)
                    raise StartupTimeout(f"instances not ready after {timeout:g}s: {names}")
                self._ready_cond.wait(min(left, 1.0))

    def _spawn_soon(self, inst: Instance) -> None:
        """Spawn ``inst`` on a later pass of the loop, one instance per pass. A fork and exec
        take milliseconds; a hundred in one pass would hold up the loop for seconds, and with
        it the answers to the terminal queries of the tools already started (a tool that asks
        for the cursor position at start-up gives up after a while) and the socket's clients."""
        self._to_spawn.append(inst)
        if len(self._to_spawn) == 1:
            self._loop.call_soon(self._spawn_next)

    def _spawn_next(self) -> None:
        if not self._to_spawn:
            return
        self._spawn(self._to_spawn.popleft())
        if self._to_spawn:
            self._loop.call_soon(self._spawn_next)

    def _spawn(self, inst: Instance) -> None:
        inst.timer = None
        if inst.lifecycle is not Lifecycle.ACTIVE or self._closing:
            return
        inst.expect_exit = False
        inst.started_at = time.monotonic()
        inst.ready_once = False
        inst.startup_timed_out = None
        wants = inst.group.spec.resume or inst.id in self._resume_next
        inst.resumed = inst.session.resume = (wants and not inst.resume_failed
                                              and bool(inst.group.adapter.resume))
        if inst.transcript is not None:
            try:
                rotate_transcript(inst.transcript, _TRANSCRIPTS_KEPT)
            except OSError as exc:  # the new run overwrites it: worth a line, not a failure
                log.warning("%s: could not keep the previous transcript: %s", inst.id, exc)
        try:
            inst.session.start(wait=False)
        except AimtermError as exc:
            # The session went STARTING -> EXITED and said why in its event; the exit
            # handler below schedules the retry or gives up, like any other fast failure.
            log.warning("%s: could not start: %s", inst.id, exc)
            return
        starts = inst.session.starts
        limit = inst.group.adapter.startup.timeout_s
        inst.timer = self._loop.call_later(limit, self._startup_overdue, inst, starts)

    def _startup_overdue(self, inst: Instance, starts: int) -> None:
        inst.timer = None
        if inst.session.starts == starts and inst.state is State.STARTING:
            # Counts as a failure: stop it (off the loop) and let the exit handler decide.
            limit = inst.group.adapter.startup.timeout_s
            inst.startup_timed_out = limit
            log.warning("%s: startup timeout: not ready after %gs; stopping it", inst.id, limit)
            self._workers.submit(inst.session.stop, 2.0)

    # -- events (loop thread) ---------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, StateChanged):
            return
        inst = self._instances.get(event.instance)
        if inst is None:
            return
        if event.old in _SETTLING or event.new in _SETTLING:
            # Only start-up and death matter to wait_ready(); busy <-> idle does not.
            with self._ready_cond:
                self._ready_cond.notify_all()
        if event.old is State.STARTING and event.new in (State.IDLE, State.WAITING):
            inst.ready_once = True
            self._resume_next.discard(inst.id)
        # (The session passes State members: identity is enough, and cheaper than ==.)
        if event.new is State.IDLE:
            self._idle[inst.id] = inst
            if inst.timer is not None and event.old is State.STARTING:
                inst.timer.cancel()
                inst.timer = None
            self.dispatcher.kick()
        else:
            self._idle.pop(inst.id, None)
            if event.new is State.EXITED:
                self._on_exit(inst, event.reason)

    def _on_exit(self, inst: Instance, reason: str) -> None:
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        if inst.lifecycle is Lifecycle.DRAINING and inst.pending is None:
            self._retire(inst, "drained")
            return
        if inst.expect_exit or self._closing or inst.lifecycle is not Lifecycle.ACTIVE:
            return
        policy = self.restart_policy
        lived = time.monotonic() - inst.started_at
        if inst.startup_timed_out is not None:
            reason = f"startup timeout: not ready after {inst.startup_timed_out:g}s"
        if inst.resumed and not inst.ready_once:
            # Nothing to resume, or the tool refused it: the next start is a fresh one.
            inst.resume_failed = True
            self._resume_next.discard(inst.id)
            reason += " (resumed start failed: starting fresh)"
        # A run that never became ready failed to start, however long it took to fail (cf.
        # Supervisor's startsecs): a start-up timeout longer than the fast-failure window must
        # not restart for ever at the first back-off.
        failed_start = lived < policy.fast_failure_s or not inst.ready_once
        inst.fast_failures = inst.fast_failures + 1 if failed_start else 1
        if not policy.restart:
            return
        if failed_start and inst.fast_failures >= policy.max_fast_failures:
            inst.fatal_reason = (f"{inst.fast_failures} fast failures in a row "
                                 f"(last: {reason} after {lived:.2f}s)")
            inst.session.fatal(inst.fatal_reason)
            self.bus.emit(InstanceFatal(inst.id, reason=inst.fatal_reason,
                                         failures=inst.fast_failures))
            with self._ready_cond:
                self._ready_cond.notify_all()
            self.dispatcher.fail_unroutable()
            return
        delay = min(policy.backoff_s * policy.backoff_factor ** (inst.fast_failures - 1),
                    policy.backoff_max_s)
        inst.restarts += 1
        inst.session.backoff(f"{reason}; restarting in {delay:.2f}s")
        self.bus.emit(InstanceRestarting(inst.id, delay_s=delay, attempt=inst.restarts,
                                         reason=reason))
        inst.timer = self._loop.call_later(delay, self._spawn, inst)

    # -- prompts ----------------------------------------------------------------------------------

    def submit(self, prompt: str, *, tool: str | None = None, key: str | None = None,
               tags: Iterable[str] = (), to: str | None = None, timeout: float | None = None,
               queue_timeout: float | None = None) -> concurrent.futures.Future[Turn]:
        """Queue a prompt for the first suitable idle instance; the future gets the Turn.

        ``tool``/``tags`` filter instances, ``key`` keeps related prompts on one instance under
        sticky routing, ``to`` names the instance. Raises NoSuchTool if no instance could ever
        take it, QueueFull when the queue is full (back-pressure). The future fails with
        QueueTimeout if nobody was free in time, TurnTimeout if the turn took too long, or the
        error of the last instance that tried it.
        """
        return self.dispatcher.submit(prompt, tool=tool, key=key, tags=tags, to=to,
                                      timeout=timeout, queue_timeout=queue_timeout)

    def send(self, prompt: str, *, tool: str | None = None, key: str | None = None,
             tags: Iterable[str] = (), to: str | None = None,
             timeout: float | None = None) -> Turn:
        """Submit and wait for the turn."""
        future = self.submit(prompt, tool=tool, key=key, tags=tags, to=to, timeout=timeout)
        return future.result()

    def cancel(self, future: concurrent.futures.Future[Turn]) -> bool:
        """Drop a prompt that is still queued (its future is cancelled); True if it was.
        A prompt already in an instance's hands runs to its end."""
        return self._ioloop.run_sync(self.dispatcher.cancel, future)

    def _turn_over(self, inst: Instance) -> None:
        """A draining instance finished its turn (loop thread)."""
        self._retire(inst, "drained")

    # -- control ----------------------------------------------------------------------------------

    def instance(self, iid: str) -> Instance:
        try:
            return self._instances[iid]
        except KeyError:
            raise UnknownInstance(iid, sorted(self._instances)) from None

    def instances(self) -> list[Instance]:
        return list(self._instances.values())

    def answer(self, iid: str, keys: str | Sequence[str]) -> None:
        self.instance(iid).session.answer(keys)

    def interrupt(self, iid: str) -> None:
        self.instance(iid).session.interrupt()

    def scale(self, group_name: str, count: int) -> None:
        """Grow or shrink a group (named as its tool, unless it has a name of its own)."""
        if count < 0:
            raise ValueError("count must be >= 0")

        def go() -> None:
            group = self._groups.get(group_name)
            if group is None:
                raise NoSuchTool(group_name, available=list(self._groups))
            self._scale(group, count)

        self._ioloop.run_sync(go)

    def drain(self, iid: str) -> concurrent.futures.Future[None]:
        """Let the instance finish its turn, take no more, then stop and remove it."""
        inst = self.instance(iid)
        self._ioloop.run_sync(self._drain, inst)
        return inst.retired

    def _drain(self, inst: Instance) -> None:
        if inst.lifecycle is not Lifecycle.ACTIVE:
            return
        inst.lifecycle = Lifecycle.DRAINING
        self.router.forget(inst.id)
        if inst.pending is None:
            self._retire(inst, "drained")

    def _retire(self, inst: Instance, reason: str) -> None:
        if inst.lifecycle is Lifecycle.RETIRED:
            return
        inst.lifecycle = Lifecycle.RETIRED
        inst.expect_exit = True
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None

        def stop() -> None:
            try:
                inst.session.stop()
            finally:
                self._loop.call_soon_threadsafe(self._removed, inst, reason)

        self._workers.submit(stop)

    def _removed(self, inst: Instance, reason: str) -> None:
        inst.session.close()
        self._instances.pop(inst.id, None)
        self._idle.pop(inst.id, None)
        self.router.forget(inst.id)
        self.bus.emit(InstanceRemoved(inst.id, adapter=inst.adapter, reason=reason))
        if not inst.retired.done():
            inst.retired.set_result(None)
        with self._ready_cond:
            self._ready_cond.notify_all()
        self.dispatcher.fail_unroutable()

    def resume_next(self, ids: Iterable[str]) -> None:
        """The next start of each of these instances (by id, made now or later) passes the
        adapter's ``resume`` arguments, once: how a daemon relaunches the fleet of one that
        died. A resumed start that fails before the tool is ready is retried fresh."""
        ids = list(ids)
        self._ioloop.run_sync(self._resume_next.update, ids)

    def restart_instance(self, iid: str, *, wait: bool = True,
                         timeout: float | None = None) -> State:
        """Stop (if running) and start the instance again, by hand; clears FATAL."""
        inst = self.instance(iid)

        def prepare() -> None:
            inst.expect_exit = True
            inst.fast_failures = 0
            inst.fatal_reason = None
            inst.resume_failed = False
            if inst.timer is not None:
                inst.timer.cancel()
                inst.timer = None

        self._ioloop.run_sync(prepare)
        if inst.state in LIVE_STATES:
            inst.session.stop()
        if inst.state is State.BACKOFF:
            inst.session.cancel_backoff("restart by hand")
        self._ioloop.run_sync(self._spawn, inst)
        if wait:
            return inst.session.wait_state(State.IDLE, State.WAITING, State.FATAL,
                                           State.EXITED,
                                           timeout=timeout or inst.group.adapter.startup.timeout_s)
        return inst.state

    # -- views ------------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """One dict per instance: id, adapter, state, pid, turns, restarts, lifecycle, …"""
        return self._ioloop.run_sync(
            lambda: [i.status() for i in sorted(self._instances.values(),
                                                key=lambda i: (i.adapter, i.index))])

    def screen(self, iid: str) -> list[str]:
        """The instance's screen as text lines (what a person attached to it would see)."""
        return self.instance(iid).session.screen_lines()

    def queue_length(self) -> int:
        return len(self.dispatcher)

    def check_health(self) -> dict[str, Any]:
        rows = self.status()
        healthy = [r["id"] for r in rows if r["state"] in ("idle", "busy", "waiting")]
        return {"healthy": len(healthy) == len(rows) and bool(rows), "instances": len(rows),
                "ready": sum(1 for r in rows if r["state"] == "idle"),
                "unhealthy": {r["id"]: r["state"] for r in rows if r["id"] not in healthy},
                "queued": self.queue_length()}

    # -- stop -------------------------------------------------------------------------------------

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every instance within ``timeout`` seconds (polite quit, then signals); queued
        prompts fail with ShuttingDown; no process of the fleet survives."""
        deadline = time.monotonic() + timeout

        def close() -> list[Instance]:
            self._closing = True
            self.dispatcher.close()
            self._to_spawn.clear()  # starts not made yet are not made at all
            for inst in self._instances.values():
                inst.expect_exit = True
                if inst.timer is not None:
                    inst.timer.cancel()
                    inst.timer = None
            return list(self._instances.values())

        if self._closed or not self._ioloop.is_running():
            return
        self._closed = True
        instances = self._ioloop.run_sync(close)
        # Polite quit gets half the budget; the signal ladder has the rest.
        budget = max(0.5, timeout / 2)
        stops = [self._workers.submit(self._stop_quietly, i.session, budget) for i in instances]
        concurrent.futures.wait(stops, timeout=max(0.1, deadline - time.monotonic()) + 10.0)

        def finish() -> None:
            for inst in instances:
                self.dispatcher.abandon(inst)
                inst.lifecycle = Lifecycle.RETIRED
                if not inst.retired.done():
                    inst.retired.set_result(None)

        self._ioloop.run_sync(finish)
        self._workers.shutdown(wait=True)
        if self.hosts is not None:
            self.hosts.close()

    @staticmethod
    def _stop_quietly(session: SessionHandle, budget: float) -> None:
        try:
            session.stop(timeout=budget)
        except (AimtermError, OSError):
            session.kill()

    def __enter__(self) -> Pool:
        try:
            self.start()
        except BaseException:  # a half-started fleet must not outlive the with statement
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _instance_id(group: Group, index: int) -> str:
    return f"{group.name}-{index}"
