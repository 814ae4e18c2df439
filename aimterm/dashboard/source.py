"""Where the dashboard's data comes from: the :class:`Source` protocol and its two sources.

:class:`LiveSource` is a daemon over its socket (the asyncio client, so the dashboard's
event loop never blocks on it); :class:`RecordedSource` is fed by hand — status rows,
events, screens — for tests and for showing the dashboard without a fleet.

A connect returns a :class:`Snapshot`: the daemon's status, the newest events of its life up
to that status (at most :data:`HISTORY`: enough for the event panel and the recent metrics,
not a replay of a long-lived daemon's whole log), and the ``seq`` to follow from — the one
the status was taken at, so nothing that happens after it is missed and the status is never
older than the history under it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aimterm.dashboard.model import number
from aimterm.errors import (
    ConnectionLost,
    DaemonNotRunning,
    NotReady,
    ProtocolError,
    UnknownInstance,
)
from aimterm.ipc.client import AsyncControlClient

__all__ = ["HISTORY", "LiveSource", "RecordedSource", "Snapshot", "Source"]

#: The most past events a connect reads.
HISTORY = 5000


@dataclass
class Snapshot:
    status: dict[str, Any]
    history: list[dict[str, Any]]
    since: int


class Source(Protocol):
    """What the dashboard needs of a daemon. Every method may raise an
    :class:`~aimterm.errors.AimtermError` (DaemonNotRunning, ConnectionLost, …)."""

    #: Where it is, for messages (a socket path).
    where: str

    async def connect(self) -> Snapshot: ...

    def follow(self, since: int) -> AsyncGenerator[dict[str, Any], None]:
        """Events with ``seq > since`` as they happen; ends when the daemon stops."""
        ...

    async def screen(self, instance: str) -> dict[str, Any]:
        """The ``screen`` op's reply: ``{id, state, rows, cols, lines}``."""
        ...

    async def answer(self, instance: str, keys: list[str]) -> dict[str, Any]: ...

    async def logs(self, instance: str, lines: int | None = None) -> list[str]:
        """The instance's terminal as text (the ``logs`` op): its last ``lines``."""
        ...

    async def usage(self) -> dict[str, Any]:
        """The ``usage`` op's reply: ``{at, instances: {id: {cpu_s, rss_bytes, processes}}}``."""
        ...

    async def plan(self, run_id: str) -> dict[str, Any]:
        """The ``plans_get`` op's reply: ``{run, steps, running, result, failure}``."""
        ...

    async def send(self, prompt: str, *, to: str | None = None,
                   tool: str | None = None) -> dict[str, Any]:
        """Queue a prompt (``no_wait``): the reply is ``{queued: request}``; what comes of
        it arrives as events."""
        ...

    async def close(self) -> None: ...


class LiveSource:
    """A daemon, through :class:`~aimterm.ipc.client.AsyncControlClient`."""

    def __init__(self, socket_path: str, timeout: float = 10.0) -> None:
        self.where = socket_path
        self.timeout = timeout
        self._client: AsyncControlClient | None = None

    async def connect(self) -> Snapshot:
        await self.close()
        client = AsyncControlClient(self.where, timeout=self.timeout)
        await client.connect()
        self._client = client
        status = await client.call("status")
        seq = number(status.get("seq"))
        # The history of this daemon's life only: it starts at its daemon_started (the
        # store keeps every earlier daemon's too, which says nothing about the fleet now).
        starts = [e async for e in client.stream("events", since=0, last=1,
                                                 kinds=["daemon_started"])]
        start = max(0, number(starts[-1].get("seq")) - 1) if starts else 0
        history = [e async for e in client.stream("events", since=start, last=HISTORY)
                   if number(e.get("seq")) <= seq]
        return Snapshot(status, history, seq)

    async def follow(self, since: int) -> AsyncGenerator[dict[str, Any], None]:
        stream = self._live().open_stream("events", {"since": since, "follow": True})
        try:
            async for event in stream:
                yield event
        finally:
            await stream.aclose()  # cancels it on the daemon when the dashboard stops first

    async def screen(self, instance: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._live().call("screen", id=instance)
        return result

    async def answer(self, instance: str, keys: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = await self._live().call("answer", id=instance, keys=keys)
        return result

    async def plan(self, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._live().call("plans_get", run_id=run_id)
        return result

    async def usage(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._live().call("usage")
        return result

    async def logs(self, instance: str, lines: int | None = None) -> list[str]:
        args: dict[str, Any] = {"id": instance}
        if lines is not None:
            args["lines"] = lines
        result = await self._live().request("logs", args)
        return [str(line) for line in result.get("lines") or []]

    async def send(self, prompt: str, *, to: str | None = None,
                   tool: str | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"prompt": prompt, "no_wait": True}
        if to is not None:
            args["to"] = to
        if tool is not None:
            args["tool"] = tool
        result: dict[str, Any] = await self._live().request("send", args)
        return result

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _live(self) -> AsyncControlClient:
        if self._client is None:
            raise ConnectionLost(f"not connected to {self.where}")
        return self._client


_DROP = object()


@dataclass
class RecordedSource:
    """A daemon played by hand. ``push`` an event to deliver it live (it joins the history
    too, as the store would keep it); ``drop`` makes the daemon go away and ``revive``
    brings it back; ``answers`` and ``sent`` record what the dashboard asked for."""

    status: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    screens: dict[str, list[str]] = field(default_factory=dict)
    #: What ``logs`` returns, by instance; what ``usage`` returns.
    logs_of: dict[str, list[str]] = field(default_factory=dict)
    usage_reply: dict[str, Any] = field(default_factory=lambda: {"at": 0.0, "instances": {}})
    #: ``plans_get`` replies by run id.
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    available: bool = True
    where: str = "/recorded/control.sock"
    answers: list[tuple[str, list[str]]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    screen_calls: list[str] = field(default_factory=list)
    connects: int = 0
    _queue: asyncio.Queue[object] | None = None

    @classmethod
    def of(cls, instances: Iterable[Mapping[str, Any]], **kw: Any) -> RecordedSource:
        status = {"daemon": {"pid": 4242, "version": "0.1.0"},
                  "instances": [dict(r) for r in instances], "queued": 0, "ready": True}
        return cls(status, **kw)

    @property
    def last_seq(self) -> int:
        return max((number(e.get("seq")) for e in self.history), default=0)

    def push(self, event: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(event)
        data.setdefault("seq", self.last_seq + 1)
        self.history.append(data)
        if self._queue is not None:
            self._queue.put_nowait(data)
        return data

    def set_state(self, instance: str, new: str, ts: float = 0.0, **extra: Any) -> None:
        """A state change: pushed as an event, and kept in the status rows for a reconnect."""
        for row in self.status["instances"]:
            if row["id"] == instance:
                old = row["state"]
                row["state"] = new
                row.update(extra)
                break
        else:
            raise KeyError(instance)
        self.push({"kind": "state_changed", "instance": instance, "ts": ts, "old": old,
                   "new": new, "reason": "recorded", "rule": None, "text": None})

    def drop(self) -> None:
        self.available = False
        if self._queue is not None:
            self._queue.put_nowait(_DROP)

    def revive(self) -> None:
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise DaemonNotRunning(self.where, "no socket")

    async def connect(self) -> Snapshot:
        self._check()
        self.connects += 1
        self._queue = asyncio.Queue()
        history = [dict(e) for e in self.history]
        return Snapshot(_copy(self.status), history, self.last_seq)

    async def follow(self, since: int) -> AsyncGenerator[dict[str, Any], None]:
        queue = self._queue
        if queue is None:
            raise ConnectionLost(f"not connected to {self.where}")
        while True:
            item = await queue.get()
            if item is _DROP:
                raise ConnectionLost(f"the server closed the connection ({self.where})")
            assert isinstance(item, dict)
            if number(item.get("seq")) > since:
                yield item

    async def screen(self, instance: str) -> dict[str, Any]:
        self._check()
        row = self._row(instance)
        self.screen_calls.append(instance)
        return {"id": instance, "state": row["state"], "rows": 24, "cols": 80,
                "lines": list(self.screens.get(instance, []))}

    async def answer(self, instance: str, keys: list[str]) -> dict[str, Any]:
        self._check()
        row = self._row(instance)
        if row["state"] != "waiting":
            raise NotReady("no question is pending", instance=instance, state=row["state"])
        self.answers.append((instance, list(keys)))
        return {"id": instance, "state": "busy"}

    async def usage(self) -> dict[str, Any]:
        self._check()
        return dict(self.usage_reply)

    async def logs(self, instance: str, lines: int | None = None) -> list[str]:
        self._check()
        self._row(instance)
        text = list(self.logs_of.get(instance, []))
        return text[-lines:] if lines else text

    async def plan(self, run_id: str) -> dict[str, Any]:
        self._check()
        if run_id not in self.plans:
            raise ProtocolError(f"no plan run {run_id!r} in the store")
        return dict(self.plans[run_id])

    async def send(self, prompt: str, *, to: str | None = None,
                   tool: str | None = None) -> dict[str, Any]:
        self._check()
        if to is not None:
            self._row(to)
        self.sent.append({"prompt": prompt, "to": to, "tool": tool})
        return {"queued": len(self.sent)}

    async def close(self) -> None:
        self._queue = None

    def _row(self, instance: str) -> dict[str, Any]:
        for row in self.status["instances"]:
            if row["id"] == instance:
                return dict(row)
        raise UnknownInstance(instance, [r["id"] for r in self.status["instances"]])


def _copy(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    out["instances"] = [dict(r) for r in status.get("instances") or []]
    return out
