"""The cluster daemon: a pool of instances, its durable history, and the control socket.

:class:`Daemon` owns a :class:`~aimterm.pool.Pool` (the fleet of the cluster file), a
:class:`~aimterm.store.Store` (``<state_dir>/aimterm.db``) and a
:class:`~aimterm.ipc.server.ControlServer` on ``<state_dir>/control.sock`` (or the file's
``socket``). Ops: ``ping``, ``status``, ``send``, ``scale``, ``restart``, ``down`` and the
streaming ops ``events`` and ``attach``.

What it writes down, and why:

- every pool event goes to the store's append-only log (and to the followers of ``events``);
  instance rows are upserted on every state change;
- every turn handed to an instance is a row of ``turns`` (opened on ``turn_started``, closed
  on ``turn_finished`` or when the process exits mid-turn);
- every prompt the daemon accepts is a ``prompt_queued`` event, and its outcome a
  ``prompt_finished`` event.

After a crash (``SIGKILL``, power loss) the next daemon on the same state dir marks the turns
left open as failed (a ``turn_failed`` event each), reports every accepted prompt without an
outcome (``prompt_lost``), and kills the instances the dead daemon left behind (recognised by
the ``AIMTERM_CLUSTER`` variable in their environment). Nothing is dropped silently.

Run it in the foreground with ``python -m aimterm.daemon --config FILE`` (what
``aimterm cluster up --detach`` starts in a new session).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from types import FrameType
from typing import Any

from aimterm.config import ClusterConfig, resolve_config
from aimterm.errors import AimtermError, NotReady, ProtocolError
from aimterm.events import (
    Event,
    InstanceAdded,
    InstanceGaveUp,
    InstanceRemoved,
    InstanceRestarting,
    ProcessExited,
    StateChanged,
    TurnFinished,
    TurnStarted,
)
from aimterm.handle import SessionHandle
from aimterm.ipc.server import ControlServer, Stream
from aimterm.pool import GroupSpec, Pool, RestartPolicy
from aimterm.router import NoSuchTool
from aimterm.session import Turn
from aimterm.states import LIVE_STATES, State
from aimterm.store import Store
from aimterm.term.loop import IOLoop
from aimterm.version import __version__

__all__ = ["CLUSTER_ENV", "Daemon", "main"]

log = logging.getLogger(__name__)

#: Set in every instance's environment to the daemon's state dir: how the next daemon tells
#: the instances a crashed one left behind from unrelated processes.
CLUSTER_ENV = "AIMTERM_CLUSTER"

_INSTANCE_EVENTS = (StateChanged, InstanceAdded, InstanceRestarting, InstanceGaveUp)
#: Turns whose reply may still arrive through the pool future (bounded bookkeeping).
_RECENT_TURNS = 1024
#: How often instance transcripts are flushed to their files.
_FLUSH_S = 0.25


def _opt_str(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ProtocolError(f"{name!r} must be a non-empty string")
    return value


def _opt_number(args: dict[str, Any], name: str) -> float | None:
    value = args.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ProtocolError(f"{name!r} must be a number > 0")
    return float(value)


class Daemon:
    """One cluster: ``start()`` it, ``stop()`` it, or ``run_forever()`` until a signal or
    the ``down`` op. Raises :class:`~aimterm.errors.AlreadyRunning` from ``start()`` when a
    daemon already serves the state dir."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.started_at = 0.0
        self._io = IOLoop.shared()
        self._stop_requested = threading.Event()
        self._stopped = False
        self._closed = False  # stopped: nothing more is recorded
        self._signals = 0
        self._followers: set[asyncio.Queue[None]] = set()  # wake-ups of `events --follow`
        self._open_turns: dict[str, tuple[int, int]] = {}  # instance -> (turn number, turn id)
        self._recent_turns: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._pids: dict[str, int] = {}
        self._down_waiters: list[asyncio.Future[None]] = []
        self._writers: dict[str, Stream] = {}  # instance -> the stream attached to type into it
        self._unsubscribe: Callable[[], None] | None = None
        self.pool: Pool | None = None
        self.store: Store | None = None
        self.server: ControlServer | None = None
        self.recovered: dict[str, Any] = {}

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (AlreadyRunning if a daemon serves it), recover from a crash of
        the previous daemon, and start the fleet (without waiting for it to be ready)."""
        cfg = self.config
        cfg.ensure_state_dir()
        marker = {CLUSTER_ENV: str(cfg.state_dir)}
        groups = [GroupSpec(g.adapter, count=g.count, cwd=g.cwd, env={**g.env, **marker},
                            tags=g.tags, stagger_ms=g.stagger_ms,
                            resume=g.resume == "always",
                            transcript_dir=cfg.transcript_dir,
                            transcript_max_bytes=int(cfg.log_max_mb * 1024 * 1024))
                  for g in cfg.instances]
        restart = RestartPolicy(backoff_s=cfg.restart.backoff_s,
                                backoff_max_s=cfg.restart.backoff_max_s,
                                fast_failure_s=cfg.restart.fast_failure_s,
                                max_fast_failures=cfg.restart.max_fast_failures)
        # Adapters load here: a bad one fails before anything else happens.
        pool = Pool(groups, routing=cfg.routing, queue_size=cfg.queue_size,
                    queue_timeout_s=cfg.queue_timeout_s, restart=restart, loop=self._io)
        server = ControlServer(
            cfg.socket_path,
            {"ping": self._op_ping, "status": self._op_status, "send": self._op_send,
             "scale": self._op_scale, "restart": self._op_restart, "down": self._op_down},
            streaming={"events": self._op_events, "attach": self._op_attach}, loop=self._io)
        store = Store(cfg.db_path)
        try:
            # The socket first: with a live daemon on this state dir, its in-flight turns are
            # not ours to fail.
            server.start()
        except BaseException:
            store.close()
            pool.shutdown()
            raise
        self.pool, self.store, self.server = pool, store, server
        self.started_at = time.monotonic()
        self._recover()
        self._unsubscribe = pool.bus.subscribe(self._on_event)
        pool.start(wait=False)
        self._io.call_soon(self._flush_transcripts)
        log.info("aimterm daemon %d serving %s", os.getpid(), cfg.socket_path)

    def request_stop(self) -> None:
        """Ask ``run_forever()`` to stop gracefully (thread- and signal-safe)."""
        self._stop_requested.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every instance (polite quit, then signals), then the server; close the store."""
        if self._stopped or self.pool is None:
            return
        self._stopped = True
        self._io.run_sync(self._record, {"kind": "daemon_stopping", "instance": None,
                                         "pid": os.getpid()})
        self.pool.shutdown(timeout)

        def finish() -> int:
            # (Queued after the pool's last callbacks: their outcomes are recorded by now.)
            self._record({"kind": "daemon_stopped", "instance": None, "pid": os.getpid()})
            self._closed = True
            self._wake_followers()  # they send what is left, see _closed, and end
            for waiter in self._down_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            return len(self._followers) + len(self._down_waiters)

        if self._io.run_sync(finish):
            time.sleep(0.2)  # let the `down` replies and stream ends go out
        assert self.server is not None and self.store is not None
        self.server.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.store.close()
        log.info("aimterm daemon %d stopped", os.getpid())

    def run_forever(self, on_tick: Callable[[Daemon], None] | None = None,
                    tick_s: float = 0.5) -> int:
        """Start, serve until SIGTERM/SIGINT or ``down``, stop gracefully; return 0. A second
        signal while stopping kills the instances' process groups and exits at once."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stop_requested.wait(tick_s):
                if on_tick is not None:
                    on_tick(self)
            return 0
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal %d: stopping gracefully (again to force)", signum)
            self._stop_requested.set()
            return
        # Forced: no locks, no loop; the instances lead their own process groups.
        for pid in list(self._pids.values()):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(128 + signum)

    def _flush_transcripts(self) -> None:
        """Every _FLUSH_S on the loop: transcripts reach their files (``aimterm logs -f``)."""
        if self._stopped or self.pool is None:
            return
        for inst in self.pool.instances():
            inst.session.flush_transcript()
        self._io.loop.call_later(_FLUSH_S, self._flush_transcripts)

    def _flush_transcript(self, iid: str) -> None:
        assert self.pool is not None
        try:
            self.pool.instance(iid).session.flush_transcript()
        except AimtermError:
            pass

    # -- crash recovery ----------------------------------------------------------------------

    def _recover(self) -> None:
        store = self.store
        assert store is not None
        rows = store.instances()
        orphans = self._kill_orphans(rows)
        lives = store.events(kinds=["daemon_started", "daemon_stopped"])
        crashed = bool(lives) and lives[-1]["kind"] == "daemon_started"
        starts = [e for e in lives if e["kind"] == "daemon_started"]
        since = starts[-1]["seq"] if starts else 0
        failed = store.fail_inflight("daemon restarted: the turn was in flight when the "
                                     "previous daemon died")
        done = {e.get("request") for e in store.events(since=since, kinds=["prompt_finished"])}
        lost = [e for e in store.events(since=since, kinds=["prompt_queued"])
                if e["seq"] not in done]
        for row in rows:
            store.upsert_instance(id=row["id"], state="exited", pid=None)
        resumed, fresh = self._resumers(rows) if crashed else ([], {})
        assert self.pool is not None
        self.pool.resume_next(resumed)
        self.recovered = {"crashed": crashed, "turns_failed": len(failed),
                          "prompts_lost": len(lost), "orphans_killed": len(orphans),
                          "resumed": resumed, "not_resumed": fresh}
        self._record({"kind": "daemon_started", "instance": None, "pid": os.getpid(),
                      "version": __version__, "config": self.config.source,
                      "recovered": self.recovered})
        for row in failed:
            self._record({"kind": "turn_failed", "instance": row["instance"],
                          "turn_id": row["id"], "prompt": row["prompt"], "error": row["error"]})
        for event in lost:
            self._record({"kind": "prompt_finished", "instance": None, "request": event["seq"],
                          "prompt": event.get("prompt"), "status": "lost",
                          "error": "the daemon died before the prompt finished"})

    def _resumers(self, rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
        """Which instances of the dead daemon start again with their adapter's resume
        arguments, and why the others do not.

        The fleet comes back in its conversations, once (a resume that fails starts fresh).
        But the tools resume per folder ("the most recent conversation here"): of several
        instances of one adapter in one folder, only the one whose turn came last would find
        its own conversation, and the others would all continue that same one. So that one
        resumes, the others start fresh; give instances their own cwd (a worktree each) and
        every one of them resumes.
        """
        assert self.store is not None
        allowed = {g.adapter for g in self.config.instances if g.resume != "never"}
        folders: dict[tuple[str, str | None], list[str]] = {}
        fresh: dict[str, str] = {}
        for row in rows:
            if row.get("state") == "removed":
                continue
            if row.get("adapter") not in allowed:
                fresh[row["id"]] = "resume: never"
                continue
            folders.setdefault((row["adapter"], row.get("cwd")), []).append(row["id"])
        resumed = []
        for (adapter, cwd), ids in folders.items():
            if len(ids) == 1:
                resumed += ids
                continue
            last = {iid: (t[0]["id"] if (t := self.store.turns(iid, limit=1)) else -1)
                    for iid in ids}
            winner = max(ids, key=lambda iid: last[iid])
            if last[winner] < 0:
                for iid in ids:
                    fresh[iid] = "no turn to continue"
                continue
            resumed.append(winner)
            where = cwd or "the daemon's folder"
            for iid in ids:
                if iid != winner:
                    fresh[iid] = (f"shares {where} with {winner}, whose turn came last "
                                  f"({adapter} resumes the latest conversation of a folder)")
        return sorted(resumed), fresh

    def _kill_orphans(self, rows: list[dict[str, Any]]) -> list[int]:
        """Kill what a crashed daemon of this state dir left behind: every process whose
        environment carries our marker (instances, and children that outlived an instance),
        with its process group. Returns the pids found."""
        mark = f"{CLUSTER_ENV}={self.config.state_dir}".encode()
        owners = {row["pid"]: row["id"] for row in rows if isinstance(row.get("pid"), int)}
        mine = {os.getpid(), os.getpgrp()}
        found = []
        try:
            entries = [int(name) for name in os.listdir("/proc") if name.isdigit()]
        except OSError:  # no procfs: nothing to find
            return []
        for pid in entries:
            if pid in mine:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if mark not in fh.read().split(b"\0"):
                        continue
                pgid = os.getpgid(pid)
            except OSError:
                continue  # gone, or not ours to read
            if pgid not in mine:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            found.append(pid)
            self._record({"kind": "orphan_killed", "instance": owners.get(pgid), "pid": pid,
                          "pgid": pgid})
        return found

    # -- events (mostly on the loop thread) --------------------------------------------------

    def _record(self, data: dict[str, Any]) -> None:
        """Append to the store and hand to the followers of ``events``."""
        if self._closed or self.store is None:
            return
        data.pop("mono", None)
        data.setdefault("ts", time.time())
        data["seq"] = self.store.append_event(data)
        if self._followers:
            self._io.call_soon(self._wake_followers)

    def _wake_followers(self) -> None:
        for queue in self._followers:
            queue.put_nowait(None)

    def _on_event(self, event: Event) -> None:
        store = self.store
        if store is None or self._closed:
            return
        data = event.to_dict()
        iid = event.instance
        if isinstance(event, StateChanged):
            # What led to a state (a finished turn, a question, a ready prompt) is on disk
            # before anyone hears of the state; output in between is flushed every _FLUSH_S.
            self._flush_transcript(iid)
        if isinstance(event, TurnStarted):
            turn_id = store.turn_started(iid, event.prompt)
            self._open_turns[iid] = (event.turn, turn_id)
            data["turn_id"] = turn_id
        elif isinstance(event, TurnFinished):
            opened = self._open_turns.get(iid)
            if opened is not None and opened[0] == event.turn:
                del self._open_turns[iid]
                store.turn_finished(opened[1], event.status, error=event.error)
                data["turn_id"] = opened[1]
                self._recent_turns[(iid, event.turn)] = opened[1]
                while len(self._recent_turns) > _RECENT_TURNS:
                    self._recent_turns.popitem(last=False)
        elif isinstance(event, ProcessExited):
            opened = self._open_turns.pop(iid, None)
            if opened is not None:
                how = (f"killed by signal {event.signal}" if event.signal is not None
                       else f"exit code {event.returncode}")
                store.turn_finished(opened[1], "failed", error=f"process exited ({how})")
        self._record(data)
        if isinstance(event, _INSTANCE_EVENTS):
            self._save_instance(iid)
        elif isinstance(event, InstanceRemoved):
            self._pids.pop(iid, None)
            store.upsert_instance(id=iid, state="removed", pid=None)

    def _save_instance(self, iid: str) -> None:
        assert self.pool is not None and self.store is not None
        try:
            inst = self.pool.instance(iid)
        except AimtermError:
            return
        pid = inst.session.pid
        if pid:
            self._pids[iid] = pid
        self.store.upsert_instance(id=iid, adapter=inst.adapter, state=inst.state.value,
                                   pid=pid, cwd=inst.cwd, tags=sorted(inst.group.tags),
                                   restarts=inst.restarts, turns=inst.session.turns_done,
                                   resume=inst.resumed)

    # -- ops (loop thread) -------------------------------------------------------------------

    async def _op_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True, "pid": os.getpid()}

    async def _op_status(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.pool is not None
        rows = self.pool.status()
        instances = [{"id": r["id"], "adapter": r["adapter"], "state": r["state"],
                      "pid": r["pid"], "turns": r["turns"], "restarts": r["restarts"],
                      "lifecycle": r["lifecycle"], "tags": r["tags"], "cwd": r["cwd"],
                      "fatal_reason": r["fatal_reason"], "question": r.get("question"),
                      "resumed": r["resumed"]}
                     for r in rows]
        settling = {"starting", "backoff"}
        return {
            "daemon": {"pid": os.getpid(), "uptime_s": round(time.monotonic() - self.started_at, 3),
                       "version": __version__, "state_dir": str(self.config.state_dir),
                       "socket": str(self.config.socket_path), "config": self.config.source,
                       "recovered": self.recovered},
            "instances": instances,
            "queued": self.pool.queue_length(),
            "ready": not any(r["state"] in settling for r in instances),
        }

    async def _op_send(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.pool is not None
        prompt = args.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ProtocolError("'prompt' must be a non-empty string")
        tool, to, key = _opt_str(args, "tool"), _opt_str(args, "to"), _opt_str(args, "key")
        timeout = _opt_number(args, "timeout")
        tags = args.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ProtocolError("'tags' must be a list of strings")
        queued = {"kind": "prompt_queued", "instance": to, "prompt": prompt, "tool": tool,
                  "to": to, "key": key, "tags": tags}
        self._record(queued)
        request = queued.get("seq", 0)
        try:
            future = self.pool.submit(prompt, tool=tool, key=key, tags=tags, to=to,
                                      timeout=timeout)
        except AimtermError as exc:
            self._record({"kind": "prompt_finished", "instance": to, "request": request,
                          "status": "rejected", "error": str(exc), "code": exc.code})
            raise
        future.add_done_callback(
            lambda f: self._io.call_soon(self._prompt_done, request, f))
        if args.get("no_wait"):
            return {"queued": request}
        # Shielded: a client that goes away does not take the prompt with it.
        turn = await asyncio.shield(asyncio.wrap_future(future))
        data = turn.to_dict()
        data["request"] = request
        data["turn_id"] = self._recent_turns.get((turn.instance, turn.number))
        return data

    def _prompt_done(self, request: int, future: concurrent.futures.Future[Turn]) -> None:
        store = self.store
        if store is None or self._closed:
            return
        if future.cancelled():
            self._record({"kind": "prompt_finished", "instance": None, "request": request,
                          "status": "cancelled"})
            return
        error = future.exception()
        if error is not None:
            code = error.code if isinstance(error, AimtermError) else "internal"
            self._record({"kind": "prompt_finished", "instance": getattr(error, "instance", None),
                          "request": request, "status": "failed", "code": code,
                          "error": str(error).splitlines()[0]})
            return
        turn = future.result()
        turn_id = self._recent_turns.get((turn.instance, turn.number))
        if turn_id is not None:
            # The turn row was closed on turn_finished; the reply comes with the Turn.
            store.turn_finished(turn_id, turn.status.value, reply=turn.reply, error=turn.error)
        self._record({"kind": "prompt_finished", "instance": turn.instance, "request": request,
                      "status": turn.status.value, "turn_id": turn_id})

    async def _op_scale(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.pool is not None
        tool = _opt_str(args, "tool")
        count = args.get("count")
        if tool is None or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ProtocolError("scale takes 'tool' (a string) and 'count' (an integer >= 0)")
        try:
            self.pool.scale(tool, count)
        except NoSuchTool:
            # A tool the cluster file did not list: a new group (its adapter must exist).
            marker = {CLUSTER_ENV: str(self.config.state_dir)}
            await asyncio.to_thread(self.pool.add_group, GroupSpec(tool, count=count, env=marker))
        self._record({"kind": "scaled", "instance": None, "tool": tool, "count": count})
        return {"tool": tool, "count": count}

    async def _op_restart(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.pool is not None
        iid = _opt_str(args, "id")
        if iid is None:
            raise ProtocolError("restart takes 'id' (an instance id)")
        self.pool.instance(iid)  # UnknownInstance before any work
        state = await asyncio.to_thread(self.pool.restart_instance, iid, wait=True)
        return {"id": iid, "state": state.value}

    async def _op_down(self, args: dict[str, Any]) -> dict[str, Any]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._down_waiters.append(waiter)
        self.request_stop()
        await waiter
        return {"stopped": True, "pid": os.getpid()}

    async def _op_events(self, args: dict[str, Any], stream: Stream) -> None:
        assert self.store is not None
        since = args.get("since", 0)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ProtocolError("'since' must be an integer >= 0")
        follow = bool(args.get("follow", False))
        # The queue only wakes the follower up; what to send is read back from the store,
        # so events recorded on any thread go out once each, in ``seq`` order.
        queue: asyncio.Queue[None] = asyncio.Queue()
        if follow:
            self._followers.add(queue)  # before reading the past: nothing falls in between
        try:
            last = since
            while True:
                for event in self.store.events(since=last):
                    await stream.send(event)
                    last = event["seq"]
                if not follow or self._closed:
                    return
                await queue.get()
                while not queue.empty():
                    queue.get_nowait()
        finally:
            self._followers.discard(queue)


    async def _op_attach(self, args: dict[str, Any], stream: Stream) -> None:
        """A person at an instance's terminal: its screen, then its output as it comes.

        Args: ``id``; ``read_only`` (watch only: any number at once); ``size``
        ``[rows, cols]`` (a writer's window, applied before the screen is drawn). Items:
        ``{"screen", "rows", "cols", "state"}`` first, then ``{"output"}`` (base64), an
        ``{"error"}`` for refused input, and ``{"exited"}`` last if the instance goes away.
        Input messages: ``{"data"}`` (base64 keystrokes), ``{"resize": [rows, cols]}``,
        ``{"detach": true}`` (ends the stream). A writer holds the instance ATTACHED, so
        automation routes around it, until the stream ends in any way."""
        assert self.pool is not None
        iid = _opt_str(args, "id")
        if iid is None:
            raise ProtocolError("attach takes 'id' (an instance id)")
        read_only = bool(args.get("read_only", False))
        size = _size(args.get("size")) if args.get("size") is not None else None
        session = self.pool.instance(iid).session
        run = session.starts  # the run attached to: a restart ends the attachment
        if not _running(session):
            raise NotReady("the instance is not running", instance=iid,
                           state=session.state.value)
        if not read_only:
            holder = self._writers.get(iid)
            if holder is not None:
                raise NotReady("another client is attached to type into this instance "
                               "(attach with read_only to watch)", instance=iid,
                               state=session.state.value)
            if session.state is State.ATTACHED:
                raise NotReady("the instance is already attached", instance=iid,
                               state=session.state.value)
        chunks: asyncio.Queue[bytes] = asyncio.Queue()  # unbounded: nothing is dropped
        # Listener, state and screen in one step of the loop: no output falls in between.
        remove = session.add_output_listener(lambda data, _at: chunks.put_nowait(data))
        feeder: asyncio.Task[None] | None = None
        held = False
        try:
            if not read_only:
                self._writers[iid] = stream
                session.attach()
                held = True
                if size is not None:
                    session.resize(*size)
            await stream.send({"screen": _b64(session.render_screen()), "rows": session.rows,
                               "cols": session.cols, "state": session.state.value})
            done = asyncio.Event()
            feeder = asyncio.get_running_loop().create_task(
                self._attach_inputs(session, stream, read_only, done))
            while not done.is_set():
                try:
                    first = await asyncio.wait_for(chunks.get(), 0.25)
                except asyncio.TimeoutError:
                    first = None
                if first is not None:
                    data = [first]
                    while not chunks.empty():
                        data.append(chunks.get_nowait())
                    await stream.send({"output": _b64(b"".join(data))})
                    continue
                if feeder.done():
                    feeder.result()  # its failure (a gone client) ends the stream too
                    return
                if self._closed or session.starts != run or not _running(session):
                    await stream.send({"exited": session.state.value})
                    return
            if not chunks.empty():  # the client asked to leave: what came before goes out
                data = []
                while not chunks.empty():
                    data.append(chunks.get_nowait())
                await stream.send({"output": _b64(b"".join(data))})
        finally:
            remove()
            if feeder is not None and not feeder.done():
                feeder.cancel()
            if self._writers.get(iid) is stream:
                del self._writers[iid]
            if held and session.state is State.ATTACHED and session.starts == run:
                try:
                    session.detach()
                except AimtermError:
                    log.warning("detaching %s failed", iid, exc_info=True)

    @staticmethod
    async def _attach_inputs(session: SessionHandle, stream: Stream, read_only: bool,
                             done: asyncio.Event) -> None:
        while True:
            msg = await stream.inputs.get()
            if msg.get("detach"):
                done.set()
                return
            if "data" in msg:
                if read_only:
                    await stream.send({"error": {"code": "read_only", "message":
                                                 "attached read-only: input is not sent"}})
                    continue
                try:
                    data = base64.b64decode(msg["data"], validate=True)
                except (binascii.Error, TypeError, ValueError):
                    await stream.send({"error": {"code": "bad_request",
                                                 "message": "'data' must be base64"}})
                    continue
                try:
                    session.write(data)
                except AimtermError as exc:
                    await stream.send({"error": {"code": exc.code, "message": str(exc)}})
            elif "resize" in msg:
                if read_only:
                    continue
                try:
                    session.resize(*_size(msg["resize"]))
                except ProtocolError as exc:
                    await stream.send({"error": {"code": exc.code, "message": str(exc)}})


def _running(session: SessionHandle) -> bool:
    return session.state in LIVE_STATES and session.state is not State.STOPPING


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _size(value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10000
                       for v in value)):
        raise ProtocolError("a size must be [rows, cols], two integers > 0")
    return value[0], value[1]


# -- python -m aimterm.daemon -----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aimterm.daemon",
                                     description="Run an aimterm cluster in the foreground.")
    parser.add_argument("-c", "--config", help="cluster file (default: the embedded one)")
    parser.add_argument("--state-dir", help="state dir (overrides the file's state_dir)")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        daemon = Daemon(resolve_config(ns.config, ns.state_dir))
        return daemon.run_forever()
    except AimtermError as exc:
        print(f"aimterm: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
