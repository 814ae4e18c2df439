"""The cluster daemon: a pool of instances, its durable history, and the control socket.

:class:`Daemon` owns a :class:`~aimterm.pool.Pool` (the fleet of the cluster file), a
:class:`~aimterm.store.Store` (``<state_dir>/aimterm.db``) and a
:class:`~aimterm.ipc.server.ControlServer` on ``<state_dir>/control.sock`` (or the file's
``socket``). What each op does is :mod:`aimterm.ipc.ops`; this module is the daemon's life:
start, crash recovery, what is written down, and stop.

What it writes down, and why:

- every pool event goes to the store's append-only log (and to the followers of ``events``);
  instance rows are upserted on every state change;
- every turn handed to an instance is a row of ``turns`` (opened on ``turn_started``, closed
  on ``turn_finished`` or when the process exits mid-turn);
- every prompt the daemon accepts is a ``prompt_queued`` event, and its outcome a
  ``prompt_finished`` event.

Its own events are typed like the pool's (:class:`~aimterm.events.FleetEvent` and below; see
``docs/events.md``) and go to the store by the same path.

After a crash (``SIGKILL``, power loss) the next daemon on the same state dir marks the turns
left open as failed (a ``turn_failed`` event each), reports every accepted prompt without an
outcome (``prompt_lost``), and kills the instances the dead daemon left behind (recognised by
the ``AIMTERM_CLUSTER`` variable in their environment). Nothing is dropped silently.

Run it in the foreground with ``python -m aimterm.daemon --config FILE`` (what
``aimterm cluster up --detach`` starts in a new session).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

from aimterm.config import ClusterConfig, resolve_config
from aimterm.errors import AimtermError
from aimterm.events import (
    DaemonStarted,
    DaemonStopped,
    DaemonStopping,
    Event,
    InstanceAdded,
    InstanceFatal,
    InstanceRemoved,
    InstanceRestarting,
    OrphanKilled,
    ProcessExited,
    PromptFinished,
    StateChanged,
    TurnFailed,
    TurnFinished,
    TurnStarted,
)
from aimterm.ipc.ops import DaemonOps
from aimterm.ipc.server import ControlServer
from aimterm.pool import GroupSpec, Pool, RestartPolicy
from aimterm.store import Store
from aimterm.term.loop import IOLoop
from aimterm.version import __version__

__all__ = ["CLUSTER_ENV", "Daemon", "main"]

log = logging.getLogger(__name__)

#: Set in every instance's environment to the daemon's state dir: how the next daemon tells
#: the instances a crashed one left behind from unrelated processes.
CLUSTER_ENV = "AIMTERM_CLUSTER"

_INSTANCE_EVENTS = (StateChanged, InstanceAdded, InstanceRestarting, InstanceFatal)
#: Turns whose reply may still arrive through the pool future (bounded bookkeeping).
_RECENT_TURNS = 1024
#: How often instance transcripts are flushed to their files.
_FLUSH_S = 0.25


class Daemon:
    """One cluster: ``start()`` it, ``stop()`` it, or ``run_forever()`` until a signal or
    the ``down`` op. Raises :class:`~aimterm.errors.AlreadyRunning` from ``start()`` when a
    daemon already serves the state dir."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.started_at = 0.0
        self.io = IOLoop.shared()
        self.closed = False  # stopped: nothing more is recorded
        self.ops = DaemonOps(self)
        self._stop_requested = threading.Event()
        self._stopped = False
        self._signals = 0
        self._open_turns: dict[str, tuple[int, int]] = {}  # instance -> (turn number, turn id)
        self._recent_turns: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._pids: dict[str, int] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self.pool: Pool | None = None
        self.store: Store | None = None
        self.server: ControlServer | None = None
        self.recovered: dict[str, Any] = {}
        #: Set once the fleet has been started: until then it is not ready, however it looks.
        self.started = False

    def group_spec(self, adapter: str, count: int, *, cwd: str | None = None,
                   env: Mapping[str, str] | None = None, tags: Sequence[str] = (),
                   stagger_ms: int = 0, resume: bool = False) -> GroupSpec:
        """A group of this cluster: its instances write their transcripts to the state dir —
        also a group added later by ``scale``. (The cluster's marker in their environment is
        the pool's: see :meth:`start`.)"""
        cfg = self.config
        return GroupSpec(adapter, count=count, cwd=cwd, env=dict(env or {}),
                         tags=tags, stagger_ms=stagger_ms, resume=resume,
                         transcript_dir=cfg.transcript_dir,
                         transcript_max_bytes=int(cfg.log_max_mb * 1024 * 1024))

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket (AlreadyRunning if a daemon serves it), recover from a crash of
        the previous daemon, and start the fleet (without waiting for it to be ready)."""
        cfg = self.config
        cfg.ensure_state_dir()
        groups = [self.group_spec(g.adapter, g.count, cwd=g.cwd, env=g.env, tags=g.tags,
                                  stagger_ms=g.stagger_ms, resume=g.resume == "always")
                  for g in cfg.instances]
        restart = RestartPolicy(backoff_s=cfg.restart.backoff_s,
                                backoff_max_s=cfg.restart.backoff_max_s,
                                fast_failure_s=cfg.restart.fast_failure_s,
                                max_fast_failures=cfg.restart.max_fast_failures)
        # Adapters load here: a bad one fails before anything else happens.
        pool = Pool(groups, routing=cfg.routing, queue_size=cfg.queue_size,
                    queue_timeout_s=cfg.queue_timeout_s, restart=restart, loop=self.io,
                    max_instances=cfg.max_instances, env=self.instance_env, hosts=cfg.hosts)
        server = ControlServer(cfg.socket_path, self.ops.plain(),
                               streaming=self.ops.streaming(), loop=self.io)
        store = Store(cfg.db_path)
        # In place before the socket serves: a request may come the moment it is bound.
        self.pool, self.store, self.server = pool, store, server
        try:
            # The socket first: with a live daemon on this state dir, its in-flight turns are
            # not ours to fail.
            server.start()
        except BaseException:
            self.pool = self.store = self.server = None
            store.close()
            pool.shutdown()
            raise
        self.started_at = time.monotonic()
        self._recover()
        self._unsubscribe = pool.bus.subscribe(self._on_event)
        pool.start(wait=False)
        self.started = True
        self.io.call_soon(self._flush_transcripts)
        log.info("aimterm daemon %d serving %s", os.getpid(), cfg.socket_path)

    def request_stop(self) -> None:
        """Ask ``run_forever()`` to stop gracefully (thread- and signal-safe)."""
        self._stop_requested.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every instance (polite quit, then signals), then the server; close the store."""
        if self._stopped or self.pool is None:
            return
        self._stopped = True
        self.io.run_sync(self.record, DaemonStopping(None, pid=os.getpid()))
        self.ops.jobs.shutdown(timeout)  # runs end (cancelled) while the fleet still answers
        self.ops.plans.shutdown(timeout)
        self.pool.shutdown(timeout)

        def finish() -> int:
            # (Queued after the pool's last callbacks: their outcomes are recorded by now.)
            self.record(DaemonStopped(None, pid=os.getpid()))
            self.closed = True
            return self.ops.release()  # followers send what is left, see closed, and end

        if self.io.run_sync(finish):
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
        self.io.loop.call_later(_FLUSH_S, self._flush_transcripts)

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
        self.record(DaemonStarted(None, pid=os.getpid(), version=__version__,
                                  config=self.config.source, recovered=self.recovered))
        for row in failed:
            self.record(TurnFailed(row["instance"], turn_id=row["id"], prompt=row["prompt"],
                                   error=row["error"]))
        for event in lost:
            self.record(PromptFinished(None, request=event["seq"], prompt=event.get("prompt"),
                                       status="lost",
                                       error="the daemon died before the prompt finished"))

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
        assert self.store is not None and self.pool is not None
        allowed = {g.adapter for g in self.config.instances if g.resume != "never"}
        # Only what this fleet runs: an instance a `scale` added to the dead daemon is not in
        # the cluster file, so it does not come back, and cannot take a folder's resume.
        fleet = self.pool.planned()
        folders: dict[tuple[str, str | None], list[str]] = {}
        fresh: dict[str, str] = {}
        for row in rows:
            spec = fleet.get(row["id"])
            if row.get("state") == "removed" or spec is None:
                continue
            if row.get("adapter") not in allowed:
                fresh[row["id"]] = "resume: never"
                continue
            if not spec.resume:
                fresh[row["id"]] = f"the {spec.name} adapter has no resume arguments"
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
            self.record(OrphanKilled(owners.get(pgid), pid=pid, pgid=pgid))
        return found

    # -- events (mostly on the loop thread) --------------------------------------------------

    @property
    def instance_env(self) -> dict[str, str]:
        """What every instance's environment carries (see :data:`CLUSTER_ENV`)."""
        return {CLUSTER_ENV: str(self.config.state_dir)}

    def turn_id(self, instance: str, number: int) -> int | None:
        """The store's id of an instance's recent turn (by its number), if known."""
        return self._recent_turns.get((instance, number))

    def record(self, event: Event | dict[str, Any]) -> int:
        """Append to the store and wake the followers of ``events``; the event's ``seq``
        (0 once the daemon is stopped: nothing more is written)."""
        if self.closed or self.store is None:
            return 0
        data = event.to_dict() if isinstance(event, Event) else event
        data.pop("mono", None)  # another process's monotonic clock means nothing
        data.setdefault("ts", time.time())
        seq = data["seq"] = self.store.append_event(data)
        if self.ops.followers:
            self.io.call_soon(self.ops.wake_followers)
        return seq

    def _on_event(self, event: Event) -> None:
        store = self.store
        if store is None or self.closed:
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
        self.record(data)
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
