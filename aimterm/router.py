"""Routing policy: which instance takes the next prompt, and the bounded queue of prompts waiting.

This module owns the decision, not the doing. The pool describes each instance as a plain
:class:`Candidate`; :class:`Router` picks one for a :class:`Request` (round robin, least busy, or
sticky by key), and :class:`DispatchQueue` holds prompts nobody can take yet, with back-pressure
and deadlines. Nothing here starts a process, takes a lock or reads a clock: callers pass ``now``
and serialize access, so every rule is testable with plain data.

Its errors are :class:`NoSuchTool` (no instance could ever take the request), :class:`NobodyFree`
(some could, none can now), :class:`QueueFull` and :class:`QueueTimeout`. They live in the one
error tree, :mod:`aimterm.errors`, and are re-exported here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aimterm.errors import NobodyFree, NoSuchTool, QueueFull, QueueTimeout

__all__ = [
    "Candidate",
    "DispatchQueue",
    "NoSuchTool",
    "NobodyFree",
    "QueueFull",
    "QueueTimeout",
    "Request",
    "Router",
    "RoutingStrategy",
]

T = TypeVar("T")


# ------------------------------------------------------------------------------------ plain data


class RoutingStrategy(str, enum.Enum):
    ROUND_ROBIN = "round_robin"
    LEAST_BUSY = "least_busy"
    STICKY = "sticky"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Candidate:
    """What the pool tells the router about one instance, right now."""

    id: str
    adapter: str
    tags: frozenset[str] = frozenset()
    ready: bool = True      # IDLE and not draining/attached: may take a turn now
    alive: bool = True      # process live (a dead one can't hold sticky affinity)
    in_flight: int = 0      # 0 or 1: one turn at a time per instance
    queued: int = 0         # prompts already assigned to it and waiting

    @property
    def load(self) -> int:
        return self.in_flight + self.queued


@dataclass(frozen=True)
class Request:
    """What a prompt needs from the instance that runs it."""

    tool: str | None = None             # restrict to this adapter
    tags: frozenset[str] = frozenset()  # candidate must have all of these
    key: str | None = None              # sticky affinity key (conversation, file)

    def matches(self, candidate: Candidate) -> bool:
        if self.tool is not None and candidate.adapter != self.tool:
            return False
        return self.tags <= candidate.tags


def _usable(candidate: Candidate) -> bool:
    # `ready` should imply `alive`; a snapshot taken mid-exit may say otherwise, and a dead
    # process must never be handed a prompt.
    return candidate.ready and candidate.alive


# ---------------------------------------------------------------------------------------- router


@dataclass
class _Rotation:
    """Turn-taking state for one filter group (one ``(tool, tags)`` pair).

    Fairness is counted, not positional: each member has a count of prompts it was given, and
    the ready member with the lowest count goes next (ties: least recently chosen, then list
    order). A member skipped while busy keeps its low count and so gets its turn back once it
    is ready, instead of the skip shifting the rotation onto its neighbour.
    """

    served: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    low: int = 0  # every count is at least this (so record() can skip its sweep)

    def admit(self, ids: Iterable[str]) -> None:
        # A newcomer starts level with the least-served member: it is owed nothing for the
        # prompts handed out before it existed, so it must not take a burst of them now.
        served = self.served
        floor = None
        for ident in ids:
            if ident not in served:
                if floor is None:
                    floor = min(served.values(), default=self.low)
                served[ident] = floor

    def rank(self, candidate: Candidate, index: int) -> tuple[int, int, int]:
        return (self.served.get(candidate.id, 0), self.last.get(candidate.id, -1), index)

    def record(self, ident: str, tick: int, group_size: int) -> None:
        self.served[ident] = self.served.get(ident, 0) + 1
        self.last[ident] = tick
        # Bound the debt: a member that was unavailable for a long time (attached by a person,
        # restarting) may catch up by at most one round, not monopolise the group afterwards.
        floor = self.served[ident] - max(group_size, 1)
        if floor <= self.low:
            return
        for other, count in self.served.items():
            if count < floor:
                self.served[other] = floor
        self.low = floor

    def drop(self, ident: str) -> None:
        self.served.pop(ident, None)
        self.last.pop(ident, None)


def _parse_strategy(strategy: RoutingStrategy | str) -> RoutingStrategy:
    if isinstance(strategy, RoutingStrategy):
        return strategy
    # Accept the spellings people type on a command line: "least-busy", "Least_Busy".
    text = str(strategy).strip().lower().replace("-", "_")
    try:
        return RoutingStrategy(text)
    except ValueError:
        valid = ", ".join(s.value for s in RoutingStrategy)
        raise ValueError(f"unknown routing strategy {strategy!r}; expected one of: {valid}") from None


class Router:
    """Chooses an instance for each request. Holds rotation and affinity state; not thread-safe
    (the pool calls it under its own lock)."""

    def __init__(self, strategy: RoutingStrategy | str = "round_robin") -> None:
        self._strategy = _parse_strategy(strategy)
        self._groups: dict[tuple[str | None, frozenset[str]], _Rotation] = {}
        self._affinity: dict[str, str] = {}
        # One clock for all groups; only its order matters (least recently chosen first).
        self._tick = 0

    @property
    def strategy(self) -> RoutingStrategy:
        return self._strategy

    # -- queries ---------------------------------------------------------------------------

    def has_match(self, request: Request, candidates: Sequence[Candidate]) -> bool:
        """True if any candidate, ready or not, passes the request's tool and tag filter."""
        return any(request.matches(c) for c in candidates)

    def affinity(self, key: str) -> str | None:
        """The instance id the sticky ``key`` is bound to, if any."""
        return self._affinity.get(key)

    # -- choosing --------------------------------------------------------------------------

    def choose(self, request: Request, candidates: Sequence[Candidate]) -> Candidate | None:
        """The candidate that should take ``request`` now, or None if nobody suitable is ready.

        Under ``sticky`` a None can also mean "the key's instance is alive but busy": the
        caller should queue for it rather than send the prompt elsewhere. A key moves to a new
        instance when its holder is dead, gone from ``candidates``, or no longer passes the
        request's filter (the same key asked of another tool cannot be served there).
        """
        matching = [c for c in candidates if request.matches(c)]
        if self._strategy is RoutingStrategy.STICKY and request.key is not None:
            return self._choose_sticky(request, request.key, candidates, matching)
        return self._pick(request, matching)

    def require(self, request: Request, candidates: Sequence[Candidate]) -> Candidate:
        """Like :meth:`choose`, but raise instead of returning None.

        Raises :class:`NoSuchTool` if nothing matches at all, :class:`NobodyFree` if matches
        exist but none is ready (or the sticky holder is busy).
        """
        chosen = self.choose(request, candidates)
        if chosen is not None:
            return chosen
        matching = [c for c in candidates if request.matches(c)]
        if not matching:
            raise NoSuchTool(request.tool, request.tags, available=(c.adapter for c in candidates))
        holder = None
        if self._strategy is RoutingStrategy.STICKY and request.key is not None:
            bound = self._affinity.get(request.key)
            # Name the holder only when it is what we wait for, not a stale or unrelated one.
            holder = bound if any(c.id == bound for c in matching) else None
        raise NobodyFree(request.tool, request.tags, matching=len(matching), key=request.key,
                         holder=holder)

    def _choose_sticky(self, request: Request, key: str, candidates: Sequence[Candidate],
                       matching: list[Candidate]) -> Candidate | None:
        holder_id = self._affinity.get(key)
        if holder_id is not None:
            holder = next((c for c in candidates if c.id == holder_id), None)
            if holder is not None and holder.alive and request.matches(holder):
                # The affinity holds while the instance lives: wait for it rather than lose
                # the conversation's context on another instance.
                if not _usable(holder):
                    return None
                self._record(self._group(request, matching), holder, len(matching))
                return holder
            if holder is None or not holder.alive:
                # A dead or removed instance can't hold a key; forget it even if nobody is
                # free to take it over yet, so affinity() never names a corpse.
                del self._affinity[key]
        chosen = self._pick(request, matching)
        if chosen is not None:
            self._affinity[key] = chosen.id
        return chosen

    def _pick(self, request: Request, matching: list[Candidate]) -> Candidate | None:
        ready = [(i, c) for i, c in enumerate(matching) if _usable(c)]
        if not ready:
            return None
        group = self._group(request, matching)
        if len(ready) == 1:
            chosen = ready[0][1]
        elif self._strategy is RoutingStrategy.ROUND_ROBIN:
            _, chosen = min(ready, key=lambda ic: group.rank(ic[1], ic[0]))
        else:
            # least_busy, and sticky without an affinity: load first, rotation breaks ties.
            _, chosen = min(ready, key=lambda ic: (ic[1].load, *group.rank(ic[1], ic[0])))
        self._record(group, chosen, len(matching))
        return chosen

    def _group(self, request: Request, matching: list[Candidate]) -> _Rotation:
        group_key = (request.tool, request.tags)
        group = self._groups.get(group_key)
        if group is None:
            group = self._groups[group_key] = _Rotation()
        group.admit(c.id for c in matching)
        return group

    def _record(self, group: _Rotation, chosen: Candidate, group_size: int) -> None:
        self._tick += 1
        group.record(chosen.id, self._tick, group_size)

    # -- housekeeping ----------------------------------------------------------------------

    def forget(self, instance_id: str) -> None:
        """Drop every trace of a removed instance: its sticky keys and its rotation counts."""
        for key in [k for k, v in self._affinity.items() if v == instance_id]:
            del self._affinity[key]
        for group in self._groups.values():
            group.drop(instance_id)

    def release(self, key: str) -> None:
        """Drop one sticky key (its conversation ended), so the map does not grow forever."""
        self._affinity.pop(key, None)


# ---------------------------------------------------------------------------------------- queue


_NEVER = float("inf")


@dataclass
class _Entry(Generic[T]):
    item: T
    request: Request
    deadline: float


class DispatchQueue(Generic[T]):
    """Bounded FIFO of prompts waiting for an instance. Items are opaque to the queue.

    Pure bookkeeping: the caller decides when to call :meth:`expired` and :meth:`assign`
    (typically whenever an instance turns ready, and on a timer at :meth:`next_deadline`).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"DispatchQueue maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._entries: list[_Entry[T]] = []
        self._timed = 0  # entries with a finite deadline: without any, nothing can expire

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, item: T, request: Request, deadline: float) -> None:
        """Append ``item``; raise :class:`QueueFull` rather than grow past ``maxsize``."""
        if len(self._entries) >= self.maxsize:
            raise QueueFull(self.maxsize)
        self._entries.append(_Entry(item, request, deadline))
        if deadline != _NEVER:
            self._timed += 1

    def put_front(self, item: T, request: Request, deadline: float = float("inf")) -> None:
        """Put ``item`` at the head, past ``maxsize``: a prompt coming back for a retry was
        already admitted once and must not be refused or sent to the back."""
        self._entries.insert(0, _Entry(item, request, deadline))
        if deadline != _NEVER:
            self._timed += 1

    def items(self) -> list[T]:
        """The waiting items, oldest first."""
        return [e.item for e in self._entries]

    def expired(self, now: float) -> list[T]:
        """Pop and return, in FIFO order, every item whose deadline is at or before ``now``."""
        if not self._timed:
            return []
        gone = [e.item for e in self._entries if e.deadline <= now]
        if gone:
            self._set([e for e in self._entries if e.deadline > now])
        return gone

    def next_deadline(self) -> float | None:
        """The earliest deadline in the queue: when the caller should next call :meth:`expired`."""
        if not self._timed:
            return _NEVER if self._entries else None
        return min((e.deadline for e in self._entries), default=None)

    def remove(self, item: T) -> bool:
        """Take ``item`` out (cancelled by its caller). Returns False if it was not queued."""
        # Identity first: opaque items may compare equal without being the same prompt.
        for match in (lambda e: e.item is item, lambda e: e.item == item):
            for index, entry in enumerate(self._entries):
                if match(entry):
                    del self._entries[index]
                    if entry.deadline != _NEVER:
                        self._timed -= 1
                    return True
        return False

    def assign(self, router: Router, candidates: Sequence[Candidate]) -> list[tuple[T, Candidate]]:
        """Hand waiting items to ready candidates, oldest first; return what was assigned.

        A candidate given an item is marked busy for the rest of the pass, so no instance gets
        two. An item nobody can take now (its tool is all busy, or its sticky instance is) keeps
        its place and does not block the items behind it.
        """
        pool = list(candidates)
        assigned: list[tuple[T, Candidate]] = []
        kept: list[_Entry[T]] = []
        for entry in self._entries:
            if not any(_usable(c) for c in pool):
                kept.append(entry)  # everyone is taken: the rest keep their places
                continue
            chosen = router.choose(entry.request, pool)
            if chosen is None:
                kept.append(entry)
                continue
            assigned.append((entry.item, chosen))
            # Replace rather than drop it: a sticky item for this instance must see it as
            # alive-but-busy and wait, not treat it as gone and move its key elsewhere.
            busy = Candidate(chosen.id, chosen.adapter, chosen.tags, ready=False,
                             alive=chosen.alive, in_flight=1, queued=chosen.queued)
            pool = [busy if c is chosen else c for c in pool]
        if assigned:
            self._set(kept)
        return assigned

    def _set(self, entries: list[_Entry[T]]) -> None:
        self._entries = entries
        self._timed = sum(1 for e in entries if e.deadline != _NEVER)
