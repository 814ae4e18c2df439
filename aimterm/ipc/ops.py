"""The daemon's ops: what each request on the control socket does.

:class:`DaemonOps` holds one handler per op of the :class:`~aimterm.daemon.Daemon` (which
owns the pool, the store and the server, and hands them over). Each handler checks its
arguments — types, string lengths, list sizes and counts are bounded — and raises an
:class:`~aimterm.errors.AimtermError` whose code is the reply's: ``bad_request`` for a bad
argument, ``unknown_instance`` for an id that is not there, or the runtime's own error.

Plain ops: ``ping``, ``status``, ``send``, ``answer``, ``interrupt``, ``drain``, ``scale``,
``restart``, ``screen``, ``turns``, ``down``, the job runs' ``jobs_run``, ``jobs_cancel``,
``jobs_get`` (in :mod:`aimterm.ipc.jobs`) and the plan runs' ``plans_run``, ``plans_cancel``,
``plans_get`` (in :mod:`aimterm.ipc.plans`). Streaming ops: ``events`` (the store's history,
filtered by kinds and instance, then live) and ``attach`` (a person at a terminal, in
:mod:`aimterm.ipc.attach`).
:class:`~aimterm.ipc.fleet.RemoteFleet` is the same fleet on the client side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aimterm.adapter.schema import NAME_PATTERN
from aimterm.errors import AimtermError, NotReady, ProtocolError, UnknownInstance
from aimterm.events import PromptFinished, PromptQueued, Scaled
from aimterm.fleet import MAX_TURNS, check_kinds, check_limit, status_row
from aimterm.ipc.attach import Attach
from aimterm.ipc.groups import DaemonGroups
from aimterm.ipc.jobs import DaemonJobs
from aimterm.ipc.plans import DaemonPlans
from aimterm.ipc.protocol import MAX_LINE
from aimterm.ipc.server import Op, Stream, StreamOp
from aimterm.pool import Pool
from aimterm.router import NoSuchTool
from aimterm.states import State
from aimterm.store import Store
from aimterm.term.child import trees_usage
from aimterm.transcripts import rendered_lines, transcript_path
from aimterm.turn import Turn
from aimterm.version import __version__

if TYPE_CHECKING:
    from aimterm.daemon import Daemon

__all__ = ["DaemonOps", "MAX_ID", "MAX_KEYS", "MAX_PROMPT", "MAX_SCREEN_LINES", "MAX_TEXT"]

log = logging.getLogger(__name__)

#: Bounds of the arguments.
MAX_ID = 256          # an instance id, a tool, a key, a tag
MAX_TAGS = 64
MAX_KEYS = 64         # items of an answer
MAX_TEXT = 64 * 1024  # one item of an answer
MAX_SCREEN_LINES = 10_000
MAX_COUNT = 256       # instances of one group (what `cluster scale` allows)
MAX_PROMPT = MAX_LINE // 4  # bytes of a prompt as JSON text (escapes included)
#: Events read from the store at a time by a stream.
_BATCH = 500
#: The largest ``seq`` there can be: SQLite's integers are 64-bit.
_MAX_SEQ = 2**63 - 1
#: The most events ``events`` with ``last`` starts from (a view's backlog, not the log).
_MAX_LAST = 10_000
#: How long a follower of ``events`` lets new events gather before it reads them.
_FOLLOW_READ_S = 0.02
#: The most lines ``logs`` returns (a view's worth, not the whole history).
MAX_LOG_LINES = 20_000
#: States whose pid is the process that exited, not one running.
_NOT_RUNNING = frozenset({"exited", "fatal", "backoff"})


def _opt_str(args: Mapping[str, Any], name: str, most: int = MAX_ID) -> str | None:
    value = args.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ProtocolError(f"{name!r} must be a non-empty string")
    if value is not None and len(value) > most:
        raise ProtocolError(f"{name!r} may have at most {most} characters, got {len(value)}")
    return value


def _req_str(args: Mapping[str, Any], name: str, op: str, what: str = "an instance id") -> str:
    value = _opt_str(args, name)
    if value is None:
        raise ProtocolError(f"{op} takes {name!r} ({what})")
    return value


def _opt_number(args: Mapping[str, Any], name: str) -> float | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ProtocolError(f"{name!r} must be a number > 0")
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: no float holds it
        raise ProtocolError(f"{name!r} must be a number > 0 that a float can hold") from None


def _opt_int(args: Mapping[str, Any], name: str, default: int, most: int) -> int:
    value = args.get(name)
    return default if value is None else check_limit(value, name, most)


def _keys(value: Any) -> str | list[str]:
    """An answer: text, or a list of key names and text."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(k, str) for k in items):
        raise ProtocolError("'keys' must be text or a non-empty list of key names and text")
    if len(items) > MAX_KEYS:
        raise ProtocolError(f"'keys' may have at most {MAX_KEYS} items, got {len(items)}")
    if any(len(k) > MAX_TEXT for k in items):
        raise ProtocolError(f"an item of 'keys' may have at most {MAX_TEXT} characters")
    return value if isinstance(value, str) else list(items)


class DaemonOps:
    """The op table of one daemon. Every handler runs on the loop thread."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.followers: set[asyncio.Queue[None]] = set()  # wake-ups of `events --follow`
        self._down_waiters: list[asyncio.Future[None]] = []
        self._restarts: dict[str, asyncio.Future[State]] = {}  # instance -> its restart
        self._attach = Attach(daemon)
        self.jobs = DaemonJobs(daemon)
        self.plans = DaemonPlans(daemon)
        self.groups = DaemonGroups(daemon)

    def plain(self) -> dict[str, Op]:
        return {"ping": self.ping, "status": self.status, "send": self.send,
                "answer": self.answer, "interrupt": self.interrupt, "drain": self.drain,
                "scale": self.scale, "restart": self.restart, "screen": self.screen,
                "turns": self.turns, "logs": self.logs, "usage": self.usage,
                "down": self.down,
                **self.jobs.ops(),
                **self.plans.ops()}

    def streaming(self) -> dict[str, StreamOp]:
        return {"events": self.events, "attach": self._attach, **self.groups.streaming()}

    @property
    def pool(self) -> Pool:
        assert self.daemon.pool is not None
        return self.daemon.pool

    @property
    def store(self) -> Store:
        assert self.daemon.store is not None
        return self.daemon.store

    # -- called by the daemon ------------------------------------------------------------------

    def wake_followers(self) -> None:
        for queue in self.followers:
            queue.put_nowait(None)

    def release(self) -> int:
        """The daemon has stopped: followers send what is left and end, ``down`` replies.
        Returns how many replies and streams are still to go out."""
        self.wake_followers()
        for waiter in self._down_waiters:
            if not waiter.done():
                waiter.set_result(None)
        return len(self.followers) + len(self._down_waiters)

    def _check_known(self, iid: str) -> None:
        """UnknownInstance unless ``iid`` is in the fleet or ever was (its history stays)."""
        live = {inst.id for inst in self.pool.instances()}
        if iid not in live and iid not in {row["id"] for row in self.store.instances()}:
            raise UnknownInstance(iid, sorted(live))

    # -- views ---------------------------------------------------------------------------------

    async def ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid()}

    async def status(self, args: dict[str, Any]) -> dict[str, Any]:
        daemon, cfg = self.daemon, self.daemon.config
        seq = self.store.last_seq()  # before the rows: what happens after is in the events
        instances = [status_row(r) for r in self.pool.status()]
        settling = {"starting", "backoff"}
        return {
            "daemon": {"pid": os.getpid(),
                       "uptime_s": round(time.monotonic() - daemon.started_at, 3),
                       "version": __version__, "state_dir": str(cfg.state_dir),
                       "socket": str(cfg.socket_path), "config": cfg.source,
                       "recovered": daemon.recovered},
            "instances": instances,
            "queued": self.pool.queue_length(),
            "ready": daemon.started and not any(r["state"] in settling for r in instances),
            "seq": seq,
        }

    async def screen(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{id, lines?}``: the instance's screen as text (the last ``lines`` of it)."""
        iid = _req_str(args, "id", "screen")
        lines = _opt_int(args, "lines", MAX_SCREEN_LINES, MAX_SCREEN_LINES)
        session = self.pool.instance(iid).session
        text = self.pool.screen(iid)
        return {"id": iid, "state": session.state.value, "rows": session.rows,
                "cols": session.cols, "lines": text[-lines:]}

    async def usage(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{}``: each live instance's process tree now — ``cpu_s`` (cumulative), ``rss_bytes``,
        ``processes`` — and ``at`` (Unix time): two readings give a CPU share."""
        pids = {r["id"]: r["pid"] for r in self.pool.status()
                if isinstance(r.get("pid"), int) and r.get("state") not in _NOT_RUNNING}
        at = time.time()
        # Reading /proc for a hundred process trees: not on the loop.
        got = await asyncio.to_thread(trees_usage, set(pids.values()))
        return {"at": round(at, 3), "instances": {iid: got[pid] for iid, pid in pids.items()
                                                  if got.get(pid) is not None}}

    async def logs(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{id, lines?, previous?}``: the instance's terminal as ``aimterm logs`` renders
        it — what scrolled by, then its screen — its last ``lines`` (default and at most
        :data:`MAX_LOG_LINES`); ``previous`` N: the run N restarts ago (at most 3)."""
        iid = _req_str(args, "id", "logs")
        self._check_known(iid)
        lines = _opt_int(args, "lines", MAX_LOG_LINES, MAX_LOG_LINES)
        previous = args.get("previous", 0)
        if isinstance(previous, bool) or not isinstance(previous, int) or not 0 <= previous <= 3:
            raise ProtocolError("'previous' must be an integer from 0 to 3")
        path = transcript_path(self.daemon.config.transcript_dir, iid, previous)
        # Rendering a long transcript takes a while: not on the loop.
        text = await asyncio.to_thread(rendered_lines, path, lines)
        return {"id": iid, "previous": previous, "path": str(path), "lines": text}

    async def turns(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{id?, limit?}``: the last turns (of one instance), newest first, from the store."""
        iid = _opt_str(args, "id")
        limit = _opt_int(args, "limit", 20, MAX_TURNS)
        if iid is not None:
            self._check_known(iid)
        return {"turns": self.store.turns(iid, limit=limit)}

    async def events(self, args: dict[str, Any], stream: Stream) -> None:
        """``{since?, last?, follow?, kinds?, instance?}``: events with ``seq > since`` of these
        kinds and this instance, oldest first (only the newest ``last`` of them, if given);
        with ``follow``, then live ones until the daemon stops."""
        since = args.get("since", 0)
        if (isinstance(since, bool) or not isinstance(since, int)
                or not 0 <= since <= _MAX_SEQ):
            raise ProtocolError(f"'since' must be an integer from 0 to {_MAX_SEQ}")
        kinds = check_kinds(args.get("kinds") or [])
        instance = _opt_str(args, "instance")
        if instance is not None:
            self._check_known(instance)
        if args.get("last") is not None:
            last_n = _opt_int(args, "last", _MAX_LAST, _MAX_LAST)
            since = max(since, self.store.seq_before_last(last_n, kinds=kinds,
                                                          instance=instance))
        follow = bool(args.get("follow", False))
        # The queue only wakes the follower up; what to send is read back from the store,
        # so events recorded on any thread go out once each, in ``seq`` order.
        queue: asyncio.Queue[None] = asyncio.Queue()
        if follow:
            self.followers.add(queue)  # before reading the past: nothing falls in between
        try:
            last = since
            while True:
                while True:
                    batch = self.store.event_texts(since=last, limit=_BATCH, kinds=kinds,
                                                   instance=instance)
                    if batch:
                        # As stored: decoding each event to encode it again was most of
                        # what a follower cost the daemon.
                        await stream.send_encoded([text for _, text in batch])
                        last = batch[-1][0]
                    if len(batch) < _BATCH:
                        break
                if not follow or self.daemon.closed:
                    return
                await queue.get()
                # A busy fleet records thousands of events a second: a follower reads them
                # back in batches, at most 1/_FOLLOW_READ_S times a second, not one by one.
                await asyncio.sleep(_FOLLOW_READ_S)
                while not queue.empty():
                    queue.get_nowait()
        finally:
            self.followers.discard(queue)

    # -- prompts -------------------------------------------------------------------------------

    async def send(self, args: dict[str, Any]) -> dict[str, Any]:
        prompt = args.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ProtocolError("'prompt' must be a non-empty string")
        size = len(json.dumps(prompt, ensure_ascii=False).encode("utf-8"))
        if size > MAX_PROMPT:
            # The line limit alone is not enough: the prompt's event, and a reply or a turn
            # that quotes it, must each still fit in one line.
            raise ProtocolError(f"'prompt' may have at most {MAX_PROMPT} bytes as JSON, "
                                f"got {size}")
        tool, to, key = _opt_str(args, "tool"), _opt_str(args, "to"), _opt_str(args, "key")
        timeout = _opt_number(args, "timeout")
        tags = args.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= MAX_ID
                                                 for t in tags):
            raise ProtocolError(f"'tags' must be a list of strings of at most {MAX_ID} "
                                "characters")
        if len(tags) > MAX_TAGS:
            raise ProtocolError(f"'tags' may have at most {MAX_TAGS} items, got {len(tags)}")
        request = self.daemon.record(PromptQueued(to, prompt=prompt, tool=tool, to=to, key=key,
                                                  tags=tags))
        try:
            future = self.pool.submit(prompt, tool=tool, key=key, tags=tags, to=to,
                                      timeout=timeout)
        except AimtermError as exc:
            self.daemon.record(PromptFinished(to, request=request, status="rejected",
                                              error=str(exc), code=exc.code))
            raise
        io = self.daemon.io
        future.add_done_callback(lambda f: io.call_soon(self._prompt_done, request, f))
        if args.get("no_wait"):
            return {"queued": request}
        try:
            turn = await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            # The client went away or cancelled (protocol.md: a disconnect cancels its
            # requests): a prompt still queued is dropped; one already in a tool's hands
            # finishes, as its turn cannot be taken back half-typed.
            self.pool.cancel(future)
            raise
        data = turn.to_dict()
        data["request"] = request
        data["turn_id"] = self.daemon.turn_id(turn.instance, turn.number)
        return data

    def _prompt_done(self, request: int, future: concurrent.futures.Future[Turn]) -> None:
        daemon = self.daemon
        if daemon.store is None or daemon.closed:
            return
        if future.cancelled():
            daemon.record(PromptFinished(None, request=request, status="cancelled"))
            return
        error = future.exception()
        if error is not None:
            code = error.code if isinstance(error, AimtermError) else "internal"
            daemon.record(PromptFinished(getattr(error, "instance", None), request=request,
                                         status="failed", code=code,
                                         error=str(error).splitlines()[0]))
            return
        turn = future.result()
        turn_id = daemon.turn_id(turn.instance, turn.number)
        if turn_id is not None:
            # The turn row was closed on turn_finished; the reply comes with the Turn.
            daemon.store.turn_finished(turn_id, turn.status.value, reply=turn.reply,
                                       error=turn.error, reply_source=turn.reply_source,
                                       tokens=turn.tokens, cost_usd=turn.cost_usd)
        daemon.record(PromptFinished(turn.instance, request=request, status=turn.status.value,
                                     turn_id=turn_id, tokens=dict(turn.tokens) or None,
                                     cost_usd=turn.cost_usd))

    # -- control -------------------------------------------------------------------------------

    async def answer(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{id, keys}``: answer the question the instance is WAITING on (``not_ready`` if
        it is not waiting)."""
        iid = _req_str(args, "id", "answer")
        keys = _keys(args.get("keys"))
        self.pool.answer(iid, keys)
        return {"id": iid, "state": self.pool.instance(iid).state.value}

    async def interrupt(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{id}``: send the adapter's interrupt keys; the turn in flight ends interrupted."""
        iid = _req_str(args, "id", "interrupt")
        state = self.pool.instance(iid).state
        if state not in (State.BUSY, State.WAITING):
            # Interrupt keys at an idle prompt are typed into it, or quit the tool.
            raise NotReady("no turn to interrupt", instance=iid, state=state.value)
        self.pool.interrupt(iid)
        return {"id": iid, "state": self.pool.instance(iid).state.value}

    async def drain(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{id, wait?}``: the instance finishes its turn, takes no more and is removed;
        with ``wait``, the reply comes once it is gone."""
        iid = _req_str(args, "id", "drain")
        retired = self.pool.drain(iid)
        if args.get("wait"):
            await asyncio.shield(asyncio.wrap_future(retired))
        return {"id": iid, "drained": retired.done()}

    async def scale(self, args: dict[str, Any]) -> dict[str, Any]:
        tool = _opt_str(args, "tool")
        count = args.get("count")
        if (tool is None or isinstance(count, bool) or not isinstance(count, int)
                or not 0 <= count <= MAX_COUNT):
            raise ProtocolError(f"scale takes 'tool' (a string) and 'count' (an integer from 0 "
                                f"to {MAX_COUNT})")
        if not re.fullmatch(NAME_PATTERN, tool):
            # (A path would make the daemon parse any file it can read.)
            raise ProtocolError(f"scale takes an adapter name ({NAME_PATTERN}), not a path: "
                                f"{tool[:80]!r}")
        try:
            self.pool.scale(tool, count)
        except NoSuchTool:
            # A tool the cluster file did not list: a new group (its adapter must exist).
            await asyncio.to_thread(self.pool.add_group, self.daemon.group_spec(tool, count))
        self.daemon.record(Scaled(None, tool=tool, count=count))
        return {"tool": tool, "count": count}

    async def restart(self, args: dict[str, Any]) -> dict[str, Any]:
        iid = _req_str(args, "id", "restart")
        self.pool.instance(iid)  # UnknownInstance before any work
        # One restart of an instance at a time: a cancelled one goes on in its thread, and a
        # second beside it would fight it over the process (both stop it, both spawn it).
        running = self._restarts.get(iid)
        if running is None:
            running = asyncio.ensure_future(
                asyncio.to_thread(self.pool.restart_instance, iid, wait=True))
            self._restarts[iid] = running
            running.add_done_callback(lambda done: self._restart_over(iid, done))
        state = await asyncio.shield(running)
        return {"id": iid, "state": state.value}

    def _restart_over(self, iid: str, done: asyncio.Future[State]) -> None:
        if self._restarts.get(iid) is done:
            del self._restarts[iid]
        if not done.cancelled():
            done.exception()  # retrieved: its callers may all have been cancelled

    async def down(self, args: dict[str, Any]) -> dict[str, Any]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._down_waiters.append(waiter)
        self.daemon.request_stop()
        await waiter
        return {"stopped": True, "pid": os.getpid()}
