"""Prompt dispatch: the bounded queue, routing, turn timeouts and retries of the fleet.

The :class:`Dispatcher` hands each prompt to an idle instance the
:class:`~aimterm.router.Router` picks, one turn at a time per instance, and keeps its promise
to the caller: a Turn, or an error — QueueFull at once (back-pressure), QueueTimeout if nobody
was free in time, TurnTimeout if the turn took too long (the instance is interrupted and given
back), NoSuchTool as soon as no live instance could ever take it. A prompt whose instance died
mid-turn is retried on another instance.

It runs on the pool's reader loop and sees the fleet the pool keeps (the instances, the idle
ones); the pool tells it when an instance becomes idle or goes away, and it tells the pool when
a draining instance has finished its turn. Nothing here starts or stops a process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import time
from collections.abc import Callable, Iterable, Mapping

from aimterm.errors import (
    AimtermError,
    NoSuchTool,
    NotReady,
    QueueTimeout,
    SessionExited,
    ShuttingDown,
    TurnTimeout,
    UnknownInstance,
)
from aimterm.events import EventBus, TurnRetried
from aimterm.instance import Instance, Lifecycle, Pending, creation_order
from aimterm.router import DispatchQueue, Request, Router, RoutingStrategy
from aimterm.states import State
from aimterm.term.loop import IOLoop
from aimterm.turn import Turn

#: Granularity of turn timeouts (one sweep over the turns in flight this often).
_SWEEP_S = 0.25
_NO_TAGS: frozenset[str] = frozenset()
_ANYONE = Request()  # a prompt for any instance (frozen: shared by all such prompts)


class Dispatcher:
    """The fleet's prompts, from submit to the caller's future. Loop thread, except
    :meth:`submit`, which hands over to the loop."""

    def __init__(self, ioloop: IOLoop, bus: EventBus, router: Router, *,
                 instances: Mapping[str, Instance], idle: Mapping[str, Instance],
                 on_turn_over: Callable[[Instance], None], queue_size: int,
                 queue_timeout_s: float | None, retry_turns: int) -> None:
        self._ioloop = ioloop
        self._loop = ioloop.loop
        self.bus = bus
        self.router = router
        self._instances = instances  # the pool's: read, never changed, here
        self._idle = idle
        self._on_turn_over = on_turn_over  # a draining instance finished its turn
        self.queue_timeout_s = queue_timeout_s
        self.retry_turns = retry_turns
        self._queue: DispatchQueue[Pending] = DispatchQueue(queue_size)
        self._numbers = itertools.count(1)
        self._scheduled = False
        self._expiry: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.closing = False

    def __len__(self) -> int:
        return len(self._queue)

    # -- submit (any thread) -------------------------------------------------------------------

    def submit(self, prompt: str, *, tool: str | None = None, key: str | None = None,
               tags: Iterable[str] = (), to: str | None = None, timeout: float | None = None,
               queue_timeout: float | None = None) -> concurrent.futures.Future[Turn]:
        """See :meth:`aimterm.pool.Pool.submit`."""
        if to is None and tool is None and key is None and not tags:
            route = _ANYONE
        else:
            route_tags = (frozenset(tags) | {f"id:{to}"} if to
                          else frozenset(tags) if tags else _NO_TAGS)
            route = Request(tool=tool, tags=route_tags, key=key)
        limit = queue_timeout if queue_timeout is not None else self.queue_timeout_s
        sticky = self.router.strategy is RoutingStrategy.STICKY

        def put() -> Pending:
            if self.closing:
                raise ShuttingDown("the pool is shutting down")
            if to is not None and to not in self._instances:
                raise UnknownInstance(to, sorted(self._instances))
            if not self.could_serve(route):
                raise NoSuchTool(tool, tags, available=self.live_adapters())
            pending = Pending(next(self._numbers), prompt, route, timeout, self.retry_turns)
            if not len(self._queue) and (route.key is None or not sticky):
                # Nobody waits ahead of it: straight to a ready instance the router picks
                # (a prompt submitted from a turn's callback, a closed loop of work, must
                # not wait a loop pass — nor pay for the queue's bookkeeping).
                ready = [i.ready_candidate() for i in self._ready_now()]
                chosen = self.router.choose(route, ready) if ready else None
                if chosen is not None:
                    self._start_turn(self._instances[chosen.id], pending)
                    return pending
            deadline = time.monotonic() + limit if limit is not None else float("inf")
            self._queue.put(pending, route, deadline)
            self._dispatch()
            return pending

        return self._ioloop.run_sync(put).future

    def could_serve(self, route: Request) -> bool:
        """Whether some live instance could ever take ``route`` (ready now or not)."""
        for inst in self._instances.values():
            if (inst.lifecycle is Lifecycle.ACTIVE and inst.state is not State.FATAL
                    and (route.tool is None or inst.adapter == route.tool)
                    and route.tags <= inst.tags):
                return True
        return False

    def live_adapters(self) -> list[str]:
        return sorted({i.adapter for i in self._instances.values()
                       if i.lifecycle is Lifecycle.ACTIVE and i.state is not State.FATAL})

    # -- dispatch (loop thread) ----------------------------------------------------------------

    def kick(self) -> None:
        """An instance may be free: look at the queue a loop pass from now."""
        if len(self._queue):
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._scheduled = False
        now = time.monotonic()
        for pending in self._queue.expired(now):
            self._reject(pending, QueueTimeout(now - pending.queued_at, tool=pending.route.tool,
                                               tags=pending.route.tags, key=pending.route.key))
        if self.closing or not len(self._queue):
            return
        # Only ready instances can take a prompt now; sticky routing also needs the busy
        # ones, to keep a key's affinity while its instance lives.
        sticky = self.router.strategy is RoutingStrategy.STICKY
        candidates = ([i.candidate() for i in self._instances.values()] if sticky
                      else [i.ready_candidate() for i in self._ready_now()])
        for pending, chosen in self._queue.assign(self.router, candidates):
            self._start_turn(self._instances[chosen.id], pending)
        nxt = self._queue.next_deadline()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if nxt is not None and nxt != float("inf"):
            self._expiry = self._loop.call_later(max(0.0, nxt - time.monotonic()),
                                                 self._schedule)

    def _ready_now(self) -> list[Instance]:
        """The instances that can take a prompt now, in creation order."""
        ready = [i for i in self._idle.values()
                 if i.pending is None and i.session.state is State.IDLE
                 and i.lifecycle is Lifecycle.ACTIVE]
        if len(ready) > 1:
            ready.sort(key=creation_order)
        return ready

    def _start_turn(self, inst: Instance, pending: Pending) -> None:
        def done(turn: Turn, error: BaseException | None) -> None:
            # Called on the loop thread as the session's last step of the turn: the session
            # can take its next prompt right away, so finish ours now, without a loop pass.
            self._turn_done(inst, pending, turn, error)

        try:
            turn = inst.session.start_turn(pending.prompt, done)
        except NotReady:  # it changed state in between: back to the head of the queue
            self._requeue(pending)
            return
        # A retry on another instance counts, as the submit keys sent again do.
        turn.retries += pending.attempts
        pending.attempts += 1
        pending.instance = inst.id
        pending.started_at = time.time()
        inst.pending = pending
        turn.queued_ms = (turn.started_at - pending.queued_at) * 1000
        if pending.timeout is None:  # never wait forever: the adapter's turn timeout applies
            pending.timeout = inst.group.adapter.turn_timeout_s
        pending.due = time.monotonic() + pending.timeout
        self._arm_sweep()

    # -- turn timeouts -------------------------------------------------------------------------

    def _arm_sweep(self) -> None:
        # One coarse timer for every turn's deadline instead of a timer per turn: turn
        # timeouts are seconds to minutes, and a heap entry per turn costs on the hot path.
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        busy = False
        for inst in list(self._instances.values()):
            pending = inst.pending
            if pending is None or pending.due is None:
                continue
            if now >= pending.due:
                pending.due = None
                self._overdue(inst, pending)
            else:
                busy = True
        if busy:
            self._arm_sweep()

    def _overdue(self, inst: Instance, pending: Pending) -> None:
        if not pending.future.done():
            pending.future.set_exception(TurnTimeout(
                f"prompt {pending.number} not done after {pending.timeout:g}s",
                instance=inst.id, adapter=inst.adapter, state=str(inst.state),
                screen_tail=inst.session.screen_tail(12)))
            if inst.state in (State.BUSY, State.WAITING):
                inst.session.interrupt()  # give the instance back to the fleet

    # -- outcomes ------------------------------------------------------------------------------

    def _turn_done(self, inst: Instance, pending: Pending, turn: Turn,
                   error: BaseException | None) -> None:
        if inst.pending is pending:
            inst.pending = None
        pending.due = None
        if error is None:
            try:
                pending.future.set_result(turn)
            except concurrent.futures.InvalidStateError:
                pass  # it timed out (or was cancelled) first: the caller has its answer
        elif (isinstance(error, NotReady) and not self.closing
              and not pending.future.done()):
            # The instance turned the prompt down before typing a key of it (a hosted session
            # whose tool changed state while the prompt was on its way): it never started,
            # so it goes back to the head of the queue as it would have from start_turn.
            pending.attempts -= 1
            self._requeue(pending)
        elif (isinstance(error, SessionExited) and pending.retries_left > 0
              and not self.closing and not pending.future.done()):
            pending.retries_left -= 1
            self.bus.emit(TurnRetried(inst.id, prompt=pending.prompt,
                                      attempt=pending.attempts + 1, reason=str(error.detail)))
            self._requeue(pending)
        else:
            self._reject(pending, error)
        if inst.lifecycle is Lifecycle.DRAINING:
            self._on_turn_over(inst)
        if len(self._queue):
            self._schedule()

    def _requeue(self, pending: Pending) -> None:
        pending.instance = None
        self._queue.put_front(pending, pending.route)
        self._schedule()

    def _reject(self, pending: Pending, error: BaseException) -> None:
        if not pending.future.done():
            if isinstance(error, AimtermError) and error.prompt is None:
                error.prompt = pending.prompt  # so read_any() callers know which one failed
            pending.future.set_exception(error)

    def cancel(self, future: concurrent.futures.Future[Turn]) -> bool:
        """Drop the queued prompt of ``future`` and cancel it (loop thread)."""
        for pending in self._queue.items():
            if pending.future is future:
                self._queue.remove(pending)
                return future.cancel()
        return False

    def fail_unroutable(self) -> None:
        """Queued prompts that no live instance could ever take fail now, not at their timeout."""
        for pending in list(self._queue.items()):
            if not self.could_serve(pending.route):
                self._queue.remove(pending)
                self._reject(pending, NoSuchTool(pending.route.tool, pending.route.tags,
                                                 available=self.live_adapters()))

    def close(self) -> None:
        """The pool is shutting down: every queued prompt fails with ShuttingDown."""
        self.closing = True
        for pending in list(self._queue.items()):
            self._queue.remove(pending)
            self._reject(pending, ShuttingDown("the pool shut down before the prompt ran"))
        for timer in (self._expiry, self._sweeper):
            if timer is not None:
                timer.cancel()

    def abandon(self, inst: Instance) -> None:
        """The pool shut down with a turn in ``inst``'s hands: its caller gets ShuttingDown."""
        if inst.pending is not None:
            self._reject(inst.pending, ShuttingDown("the pool shut down mid-turn"))
            inst.pending = None
