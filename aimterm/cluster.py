"""The Python API people reach for: a cluster of tool instances behind one object.

:class:`ClusterManager` wraps a :class:`~aimterm.pool.Pool` with the calls scripts use —
``send`` (blocking), ``submit`` (a future), ``map``, ``read_any``, async variants — and
:func:`launch_cluster` starts one in a line. It is the in-process :class:`~aimterm.fleet.Fleet`:
the same calls work on a daemon's fleet through :class:`~aimterm.ipc.fleet.RemoteFleet`. For
``turns`` and ``events`` it keeps a bounded history in memory (the daemon keeps its own in
the store). :class:`ToolProcessPool` keeps the request-id style API (``send_prompt`` /
``read_response``) of the project's original plan.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import queue
import threading
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any

from aimterm.adapter.spec import AdapterSpec
from aimterm.errors import NotReady, ProtocolError, UnknownInstance
from aimterm.events import Event, ProcessExited, Scaled, TurnFinished, TurnStarted
from aimterm.fleet import MAX_TURNS, TurnRecord, check_kinds, check_limit, status_row
from aimterm.pool import GroupSpec, Pool, RestartPolicy, SetupHook
from aimterm.router import NoSuchTool, RoutingStrategy
from aimterm.states import State
from aimterm.turn import Turn

__all__ = ["ClusterManager", "RoutingStrategy", "ToolProcessPool", "launch_cluster"]

#: How much history a ClusterManager keeps for ``events`` and ``turns``.
EVENTS_KEPT = 10_000
TURNS_KEPT = 1_000


class _History:
    """The recent events (numbered like the store's ``seq``) and turns of one pool, fed by
    its bus on the loop thread and read from any thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (seq, event, turn id of a turn event): the store's seq, and the turn_id the daemon
        # adds to turn_started / turn_finished
        self._events: collections.deque[tuple[int, Event, int | None]] = collections.deque(
            maxlen=EVENTS_KEPT)
        self._seq = 0
        self._closed = False
        self._ids = itertools.count(1)
        # record id -> (the instance's turn number, the record as the store has it)
        self._turns: collections.OrderedDict[int, tuple[int, dict[str, Any]]] = (
            collections.OrderedDict())
        self._open: dict[str, tuple[int, int]] = {}  # instance -> (turn number, record id)
        self._by_number: dict[tuple[str, int], int] = {}  # (instance, number) -> record id
        self.known: set[str] = set()  # every instance id seen

    def on_event(self, event: Event) -> None:
        with self._cond:
            self._seq += 1
            turn_id = None
            if event.instance is not None:
                self.known.add(event.instance)
            if isinstance(event, TurnStarted):
                turn_id = self._turn_started(event)
            elif isinstance(event, TurnFinished):
                opened = self._open.get(event.instance)
                if opened is not None and opened[0] == event.turn:
                    del self._open[event.instance]
                    turn_id = opened[1]
                    self._finish(turn_id, event.status, event.error, event.ts)
            elif isinstance(event, ProcessExited):
                opened = self._open.pop(event.instance, None)
                if opened is not None:
                    # As the daemon words it: the turn's row closes with the process.
                    how = (f"killed by signal {event.signal}" if event.signal is not None
                           else f"exit code {event.returncode}")
                    self._finish(opened[1], "failed", f"process exited ({how})", event.ts)
            self._events.append((self._seq, event, turn_id))
            self._cond.notify_all()

    def _turn_started(self, event: TurnStarted) -> int:
        record_id = next(self._ids)
        self._turns[record_id] = (event.turn, {
            "id": record_id, "instance": event.instance, "prompt": event.prompt,
            "status": "running", "reply": None, "error": None, "started": event.ts,
            "finished": None})
        self._open[event.instance] = (event.turn, record_id)
        self._by_number[(event.instance, event.turn)] = record_id
        while len(self._turns) > TURNS_KEPT:
            _gone, (number, row) = self._turns.popitem(last=False)
            self._by_number.pop((row["instance"], number), None)
        return record_id

    def _finish(self, record_id: int, status: str, error: str | None, at: float) -> None:
        entry = self._turns.get(record_id)
        if entry is not None:
            entry[1].update(status=status, error=error, finished=at)

    def turn_done(self, turn: Turn) -> None:
        """The prompt's caller has the Turn: its reply goes into the record (as the daemon
        writes a reply once the prompt is over)."""
        with self._cond:
            record_id = self._by_number.get((turn.instance, turn.number))
            entry = self._turns.get(record_id) if record_id is not None else None
            if entry is not None:
                entry[1].update(status=turn.status.value, reply=turn.reply, error=turn.error,
                                reply_source=turn.reply_source, tokens=dict(turn.tokens),
                                cost_usd=turn.cost_usd)

    def turns(self, instance_id: str | None, limit: int) -> list[TurnRecord]:
        with self._cond:
            rows = [r for _n, r in reversed(self._turns.values())
                    if instance_id is None or r["instance"] == instance_id]
            return [TurnRecord(**r) for r in rows[:limit]]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def events(self, kinds: Sequence[str], instance_id: str | None, since: int,
               follow: bool) -> Generator[dict[str, Any], None, None]:
        wanted = frozenset(kinds)
        last = since
        while True:
            with self._cond:
                # seqs in the deque run without a gap up to self._seq: skip to the first one
                # after ``last`` instead of comparing every one
                skip = max(0, len(self._events) - (self._seq - last))
                batch = list(itertools.islice(self._events, skip, None))
                if not batch:
                    if not follow or self._closed:
                        return
                    self._cond.wait()
                    continue
            for seq, event, turn_id in batch:
                last = seq
                if (wanted and event.kind not in wanted) or (
                        instance_id is not None and event.instance != instance_id):
                    continue
                data = event.to_dict()
                data.pop("mono", None)  # as in the store: another process's clock means nothing
                if turn_id is not None:
                    data["turn_id"] = turn_id
                data["seq"] = seq
                yield data


class ClusterManager:
    """Several instances of one or more tools, driven as one.

    ``tools`` is an adapter name (with ``count``), or a mapping ``{adapter: count}``, or a list
    of :class:`~aimterm.pool.GroupSpec` for full control (cwd, env, tags, stagger, setup hook).
    ``hosts``: session host processes the instances run in (None: one per core; 0, the
    default: all on this process's reader loop) — see docs/architecture.md.
    """

    def __init__(self, tools: str | AdapterSpec | Mapping[str, int] | Sequence[GroupSpec],
                 count: int = 3, *, routing: RoutingStrategy | str = "round_robin",
                 cwd: str | None = None, env: Mapping[str, str] | None = None,
                 setup: SetupHook | None = None, stagger_ms: int = 0,
                 queue_size: int = 1000, queue_timeout_s: float | None = None,
                 restart: RestartPolicy | None = None, retry_turns: int = 1,
                 hosts: int | None = 0) -> None:
        groups: list[GroupSpec]
        common: dict[str, Any] = {"cwd": cwd, "env": dict(env or {}), "setup": setup,
                                  "stagger_ms": stagger_ms}
        if isinstance(tools, (str, AdapterSpec)):
            groups = [GroupSpec(tools, count=count, **common)]
        elif isinstance(tools, Mapping):
            groups = [GroupSpec(name, count=n, **common) for name, n in tools.items()]
        else:
            groups = list(tools)
        self.pool = Pool(groups, routing=routing, queue_size=queue_size,
                         queue_timeout_s=queue_timeout_s, restart=restart,
                         retry_turns=retry_turns, hosts=hosts)
        self._done: queue.Queue[concurrent.futures.Future[Turn]] = queue.Queue()
        self._history = _History()
        self.pool.bus.subscribe(self._history.on_event)

    # -- life cycle --------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float | None = None) -> ClusterManager:
        self.pool.start(wait=wait, timeout=timeout)
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        try:
            self.pool.shutdown(timeout)
        finally:
            self._history.close()  # followers of events() end

    def __enter__(self) -> ClusterManager:
        if not self.pool.started:
            self.pool.__enter__()  # (which shuts a half-started fleet down if start fails)
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- prompts -----------------------------------------------------------------------------

    def submit(self, prompt: str, key: str | None = None, *, tool: str | None = None,
               tags: Iterable[str] = (), to: str | None = None, timeout: float | None = None
               ) -> concurrent.futures.Future[Turn]:
        """Queue a prompt; the future resolves to its :class:`~aimterm.session.Turn`, and
        :meth:`read_any` sees it when it finishes."""
        future = self._submit(prompt, tool=tool, key=key, tags=tags, to=to, timeout=timeout)
        future.add_done_callback(self._done.put)
        return future

    def _submit(self, prompt: str, **kwargs: Any) -> concurrent.futures.Future[Turn]:
        future = self.pool.submit(prompt, **kwargs)
        future.add_done_callback(self._record_reply)
        return future

    def _record_reply(self, future: concurrent.futures.Future[Turn]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._history.turn_done(future.result())

    def broadcast(self, prompt: str, *, tool: str | None = None,
                  timeout: float | None = None) -> dict[str, concurrent.futures.Future[Turn]]:
        """The same prompt to every active instance (of ``tool``): instance id -> future."""
        ids = [r["id"] for r in self.pool.status()
               if r["lifecycle"] == "active" and (tool is None or r["adapter"] == tool)]
        return {iid: self.submit(prompt, to=iid, timeout=timeout) for iid in ids}

    def send(self, prompt: str, *, tool: str | None = None, key: str | None = None,
             tags: Iterable[str] = (), to: str | None = None,
             timeout: float | None = None) -> Turn:
        """Route a prompt to a free instance (or instance ``to``) and wait for its turn."""
        return self._submit(prompt, tool=tool, key=key, tags=tags, to=to,
                            timeout=timeout).result()

    def send_to(self, instance_id: str, prompt: str, *, timeout: float | None = None) -> Turn:
        """Send to one named instance (waits for it to be free)."""
        return self._submit(prompt, to=instance_id, timeout=timeout).result()

    def map(self, prompts: Iterable[str], *, tool: str | None = None,
            timeout: float | None = None) -> list[Turn]:
        """Run every prompt across the cluster in parallel; turns come back in prompt order.
        Waits for all of them, then raises the first failure (its ``.prompt`` says which);
        use :meth:`submit` to handle failures one by one."""
        futures = [self._submit(p, tool=tool, timeout=timeout) for p in prompts]
        concurrent.futures.wait(futures)
        return [f.result() for f in futures]

    def read_any(self, timeout: float | None = None) -> Turn:
        """The next turn to finish among those started with :meth:`submit`, in finishing order.
        Raises the prompt's error if it failed, ``TimeoutError`` if none finishes in time."""
        try:
            future = self._done.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no submitted prompt finished in time") from None
        return future.result()

    async def asubmit(self, prompt: str, key: str | None = None, *, tool: str | None = None,
                      timeout: float | None = None) -> Turn:
        return await asyncio.wrap_future(self.submit(prompt, key, tool=tool, timeout=timeout))

    async def asend(self, prompt: str, *, tool: str | None = None, key: str | None = None,
                    timeout: float | None = None) -> Turn:
        future = self._submit(prompt, tool=tool, key=key, timeout=timeout)
        return await asyncio.wrap_future(future)

    async def amap(self, prompts: Iterable[str], *, tool: str | None = None,
                   timeout: float | None = None) -> list[Turn]:
        futures = [asyncio.wrap_future(self._submit(p, tool=tool, timeout=timeout))
                   for p in prompts]
        return list(await asyncio.gather(*futures))

    # -- control and views -------------------------------------------------------------------

    def answer(self, instance_id: str, keys: str | Sequence[str]) -> None:
        """Answer the question the instance is WAITING on: text, or key names and text."""
        self.pool.answer(instance_id, keys)

    def interrupt(self, instance_id: str) -> None:
        """Send the adapter's interrupt keys: the turn in flight ends ``interrupted``
        (NotReady when the instance is neither busy nor waiting)."""
        state = self.pool.instance(instance_id).state
        if state not in (State.BUSY, State.WAITING):
            # Interrupt keys at an idle prompt are typed into it, or quit the tool.
            raise NotReady("no turn to interrupt", instance=instance_id, state=state.value)
        self.pool.interrupt(instance_id)

    def scale(self, tool: str, count: int) -> None:
        """Run ``count`` instances of ``tool`` (idle ones stop first when scaling down); a
        tool the cluster does not run yet becomes a new group (its adapter must exist)."""
        try:
            self.pool.scale(tool, count)
        except NoSuchTool:
            self.pool.add_group(GroupSpec(tool, count=count))
        self.pool.bus.emit(Scaled(None, tool=tool, count=count))

    def restart(self, instance_id: str) -> State:
        return self.pool.restart_instance(instance_id)

    def drain(self, instance_id: str) -> concurrent.futures.Future[None]:
        return self.pool.drain(instance_id)

    def get_status(self) -> list[dict[str, Any]]:
        """Each instance's id, adapter, state, pid, turns done and restarts (and more)."""
        return self.pool.status()

    def status(self) -> list[dict[str, Any]]:
        """Each instance with the fields of :data:`~aimterm.fleet.STATUS_FIELDS` (what a
        daemon's fleet reports too; :meth:`get_status` has more)."""
        return [status_row(r) for r in self.pool.status()]

    def screen(self, instance_id: str) -> list[str]:
        """The instance's screen as text lines."""
        return self.pool.screen(instance_id)

    def turns(self, instance_id: str | None = None, *, limit: int = 20) -> list[TurnRecord]:
        """The last ``limit`` turns (of one instance), newest first (of the last
        :data:`TURNS_KEPT`)."""
        limit = check_limit(limit, "limit", MAX_TURNS)
        if instance_id is not None:
            self._check_known(instance_id)
        return self._history.turns(instance_id, limit)

    def events(self, *, kinds: Sequence[str] = (), instance_id: str | None = None,
               since: int = 0, follow: bool = False) -> Generator[dict[str, Any], None, None]:
        """Events with ``seq > since`` (of the last :data:`EVENTS_KEPT`), filtered by kinds
        and instance; with ``follow``, then live ones until :meth:`shutdown`."""
        wanted = check_kinds(kinds)
        if instance_id is not None:
            self._check_known(instance_id)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ProtocolError("'since' must be an integer >= 0")
        return self._history.events(wanted, instance_id, since, follow)

    def _check_known(self, instance_id: str) -> None:
        live = {inst.id for inst in self.pool.instances()}
        if instance_id not in live and instance_id not in self._history.known:
            raise UnknownInstance(instance_id, sorted(live))

    def subscribe(self, listener: Any) -> Any:
        """Receive every event of the fleet (state changes, answers, restarts, retries)."""
        return self.pool.bus.subscribe(listener)


def launch_cluster(tool_id: str | AdapterSpec, count: int = 3,
                   routing: RoutingStrategy | str = "round_robin", **kwargs: Any
                   ) -> ClusterManager:
    """Start ``count`` instances of ``tool_id`` and return the running cluster (a context
    manager that shuts it down)."""
    return ClusterManager(tool_id, count, routing=routing, **kwargs).start()


class ToolProcessPool:
    """Request-id style API over a pool of one tool: ``send_prompt`` returns an id,
    ``read_response`` collects the turn."""

    def __init__(self, tool_id: str | AdapterSpec, count: int = 3, *,
                 routing: RoutingStrategy | str = "round_robin", **kwargs: Any) -> None:
        self.cluster = ClusterManager(tool_id, count, routing=routing, **kwargs).start()
        self._ids = itertools.count(1)
        self._futures: dict[str, concurrent.futures.Future[Turn]] = {}
        self._finished: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()

    def send_prompt(self, prompt: str, instance_id: str | None = None,
                    key: str | None = None) -> str:
        """Queue a prompt (on one instance, if named); returns a request id."""
        future = (self.cluster._submit(prompt, to=instance_id) if instance_id
                  else self.cluster._submit(prompt, key=key))
        rid = f"req-{next(self._ids)}"
        with self._lock:
            self._futures[rid] = future
        future.add_done_callback(lambda _f: self._finished.put(rid))
        return rid

    def read_response(self, request_id: str | None = None,
                      timeout: float | None = None) -> Turn:
        """The turn of ``request_id``, or of whichever request finishes next."""
        if request_id is None:
            while True:
                try:
                    rid = self._finished.get(timeout=timeout)
                except queue.Empty:
                    raise TimeoutError("no response in time") from None
                with self._lock:
                    future = self._futures.pop(rid, None)
                if future is not None:
                    return future.result()
        with self._lock:
            future = self._futures.get(request_id)
        if future is None:
            raise KeyError(f"unknown or already read request id {request_id!r}")
        try:
            turn = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"no response to {request_id} in time") from None
        with self._lock:
            self._futures.pop(request_id, None)
        return turn

    def get_status(self) -> list[dict[str, Any]]:
        return self.cluster.get_status()

    def check_health(self) -> dict[str, Any]:
        return self.cluster.pool.check_health()

    def restart_instance(self, instance_id: str) -> State:
        return self.cluster.restart(instance_id)

    def shutdown(self, timeout: float = 10.0) -> None:
        self.cluster.shutdown(timeout)

    def __enter__(self) -> ToolProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

