"""The one interface of a fleet, whether it runs in this process or behind the daemon's socket.

:class:`Fleet` is what jobs, plans and front-ends are written against: prompts (``submit``,
``send``, ``map``), control of one instance (``answer``, ``interrupt``, ``drain``, ``restart``)
or of a group (``scale``), and views (``status``, ``screen``, ``turns``, ``events``). Two
implementations, with the same return types:

- :class:`~aimterm.cluster.ClusterManager`, the fleet of this process (a pool of PTYs);
- :class:`~aimterm.ipc.fleet.RemoteFleet`, the fleet of a daemon, over its control socket.

Turns come back as :class:`~aimterm.turn.Turn` (the remote side rebuilds one from the wire
with :func:`turn_from_dict`); history as :class:`TurnRecord` and event dicts, each in the
form the daemon's store keeps them (``docs/events.md`` lists every event kind and its fields).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aimterm.errors import ProtocolError
from aimterm.events import QuestionAnswered, event_classes
from aimterm.states import State
from aimterm.turn import Turn, TurnStatus

__all__ = ["MAX_KINDS", "MAX_TURNS", "STATUS_FIELDS", "Fleet", "TurnRecord", "check_kinds",
           "check_limit", "status_row", "turn_from_dict"]

#: The fields of one instance in :meth:`Fleet.status`, on both sides.
STATUS_FIELDS = ("id", "adapter", "group", "env_digest", "state", "pid", "turns", "restarts",
                 "lifecycle", "tags", "cwd", "fatal_reason", "question", "resumed",
                 "turn_started_at", "host")

#: Bounds of the arguments of ``events`` and ``turns``, on both sides.
MAX_KINDS = 64
MAX_TURNS = 1000


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One turn handed to an instance, as the history keeps it. ``status`` is ``running``
    while in flight; ``started`` and ``finished`` are wall-clock seconds; ``reply`` is there
    once the prompt's caller has it."""

    id: int
    instance: str
    prompt: str
    status: str
    reply: str | None
    error: str | None
    started: float
    finished: float | None
    #: ``record`` (the tool's own record of the conversation), ``screen``, or None when the
    #: turn has not finished (or was kept before the store knew).
    reply_source: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None


@runtime_checkable
class Fleet(Protocol):
    """A fleet of tool instances, driven as one (in-process or through the daemon)."""

    # -- prompts -------------------------------------------------------------------------------

    def submit(self, prompt: str, *, tool: str | None = None, key: str | None = None,
               tags: Iterable[str] = (), to: str | None = None,
               timeout: float | None = None) -> concurrent.futures.Future[Turn]:
        """Queue a prompt for a free instance (of ``tool``, with ``tags``, or instance ``to``;
        ``key`` keeps related prompts on one instance); the future gets its Turn."""
        ...

    def send(self, prompt: str, *, tool: str | None = None, key: str | None = None,
             tags: Iterable[str] = (), to: str | None = None,
             timeout: float | None = None) -> Turn:
        """:meth:`submit` and wait for the turn."""
        ...

    def map(self, prompts: Iterable[str], *, tool: str | None = None,
            timeout: float | None = None) -> list[Turn]:
        """Every prompt in parallel; turns in prompt order; the first failure is raised once
        all are over."""
        ...

    # -- control -------------------------------------------------------------------------------

    def answer(self, instance_id: str, keys: str | Sequence[str]) -> None:
        """Answer the question the instance is WAITING on: text, or key names and text."""
        ...

    def interrupt(self, instance_id: str) -> None:
        """Send the adapter's interrupt keys: the turn in flight ends ``interrupted``."""
        ...

    def drain(self, instance_id: str) -> concurrent.futures.Future[None]:
        """The instance finishes its turn, takes no more, and is removed; the future is done
        once it is gone."""
        ...

    def scale(self, tool: str, count: int) -> None:
        """Run ``count`` instances of ``tool`` (idle ones stop first when scaling down)."""
        ...

    def restart(self, instance_id: str) -> State:
        """Stop and start the instance (also clears FATAL); the state it settled in."""
        ...

    # -- views ---------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """One dict per instance with the keys of :data:`STATUS_FIELDS`."""
        ...

    def screen(self, instance_id: str) -> list[str]:
        """The instance's screen as text lines (what a person attached would see)."""
        ...

    def turns(self, instance_id: str | None = None, *, limit: int = 20) -> list[TurnRecord]:
        """The last ``limit`` turns (of one instance), newest first."""
        ...

    def events(self, *, kinds: Sequence[str] = (), instance_id: str | None = None,
               since: int = 0, follow: bool = False) -> Generator[dict[str, Any], None, None]:
        """Events with ``seq > since`` (of these kinds, of this instance), oldest first, each
        a dict as in ``docs/events.md`` with its ``seq``; with ``follow``, then the new ones as
        they happen, until the fleet stops (or the caller stops iterating). A bad filter (an
        unknown kind or instance) raises at the call, or over the socket at the first item."""
        ...


def status_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A pool status row cut to :data:`STATUS_FIELDS`."""
    return {name: row.get(name) for name in STATUS_FIELDS}


def turn_from_dict(data: Mapping[str, Any]) -> Turn:
    """A :class:`Turn` from its :meth:`Turn.to_dict` form (a reply of the daemon's ``send``).

    The monotonic times of the other process are not ours: they are rebuilt on this clock, as
    if the turn had just ended, so that the timings (``submit_to_busy_ms``, ``busy_to_idle_ms``,
    ``total_ms``) read as they did there."""
    instance = str(data["instance"])
    timings = data.get("timings_ms") or {}
    turn = Turn(number=int(data["turn"]), prompt=str(data["prompt"]), instance=instance,
                adapter=str(data["adapter"]), status=TurnStatus(data["status"]),
                reply=str(data.get("reply") or ""), question=data.get("question"),
                answered=[QuestionAnswered(instance, rule=str(a["rule"]),
                                           question=str(a["question"]), keys=str(a["keys"]))
                          for a in data.get("answered") or ()],
                metrics=dict(data.get("metrics") or {}), retries=int(data.get("retries") or 0),
                error=data.get("error"), queued_ms=timings.get("queued"),
                reply_lines_dropped=int(data.get("reply_lines_dropped") or 0),
                reply_source=str(data.get("reply_source") or "screen"),
                tokens={str(k): int(v) for k, v in (data.get("tokens") or {}).items()},
                cost_usd=data.get("cost_usd"))
    total, to_busy, to_idle = (timings.get(k) for k in ("total", "submit_to_busy",
                                                         "busy_to_idle"))
    now = time.monotonic()
    if total is not None:
        turn.idle_at = now
        turn.started_at = now - total / 1000
        if to_idle is not None:
            turn.busy_at = now - to_idle / 1000
            if to_busy is not None:
                turn.submitted_at = turn.busy_at - to_busy / 1000
    else:
        turn.started_at = now
    return turn


def check_kinds(kinds: Any) -> list[str]:
    """``kinds`` as a list of known event kinds; :class:`ProtocolError` (``bad_request``) for
    anything else, naming the kinds there are."""
    if isinstance(kinds, str):
        kinds = [kinds]
    if not isinstance(kinds, (list, tuple)):
        raise ProtocolError("'kinds' must be a list of event kinds")
    if len(kinds) > MAX_KINDS:
        raise ProtocolError(f"'kinds' may name at most {MAX_KINDS} kinds, got {len(kinds)}")
    known = event_classes()
    for kind in kinds:
        if not isinstance(kind, str) or kind not in known:
            raise ProtocolError(f"unknown event kind {kind!r} (kinds: {', '.join(known)})")
    return list(kinds)


def check_limit(value: Any, name: str, most: int) -> int:
    """An integer count in ``1..most``, or :class:`ProtocolError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ProtocolError(f"{name!r} must be an integer from 1 to {most}, got {value!r}")
    return value
