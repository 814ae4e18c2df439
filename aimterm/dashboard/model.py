"""The dashboard's view of the fleet, built from the daemon's status rows and its events.

Pure: no Textual, no socket, no clock of its own (the time is handed in). A
:class:`FleetView` is thrown away and rebuilt on every (re)connect, so it never holds
anything the daemon could not give again. What each state means to a person is data: the
two tables :data:`GROUP_OF_STATE` (which attention group) and :data:`STATE_COLOUR`.
"""

from __future__ import annotations

import enum
import os
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aimterm.dashboard.metrics import Metrics
from aimterm.states import State

__all__ = ["GROUP_OF_STATE", "STATE_COLOUR", "EventFilter", "FleetView", "Group",
           "InstanceView", "event_colour", "event_summary", "format_duration",
           "number"]

#: Events the view keeps for the event panel (older ones still count towards the fleet).
MAX_EVENTS = 2000


class Group(enum.Enum):
    """What an instance needs from a person, most urgent first (the order of the fleet table)."""

    NEEDS_ANSWER = "needs an answer"
    FAILED = "failed"
    WORKING = "working"
    IDLE = "idle"

    @property
    def rank(self) -> int:
        return list(Group).index(self)


#: Which group each state falls in: the one place that decides what needs attention.
GROUP_OF_STATE: dict[State, Group] = {
    State.WAITING: Group.NEEDS_ANSWER,
    State.FATAL: Group.FAILED,
    State.EXITED: Group.FAILED,
    State.BACKOFF: Group.FAILED,   # it crashed; the pool is about to start it again
    State.BUSY: Group.WORKING,
    State.ATTACHED: Group.WORKING,  # a person has it
    State.STARTING: Group.WORKING,
    State.STOPPING: Group.WORKING,
    State.IDLE: Group.IDLE,
}

#: The colour a state is drawn in (Rich colour names).
STATE_COLOUR: dict[State, str] = {
    State.IDLE: "green",
    State.BUSY: "yellow",
    State.WAITING: "magenta",
    State.ATTACHED: "blue",
    State.FATAL: "red",
    State.EXITED: "red",
    State.BACKOFF: "red",
    State.STARTING: "cyan",
    State.STOPPING: "cyan",
}


def number(value: Any, default: int = 0) -> int:
    """An integer field of the daemon's, or ``default`` for one missing or malformed (a view
    must not fall over on one odd field)."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**63:
        return int(value)
    return default


def _state(value: Any) -> State:
    try:
        return State(value)
    except ValueError:
        return State.EXITED  # a state newer than this client: show it as needing a look


@dataclass
class InstanceView:
    """One instance as the dashboard shows it."""

    id: str
    tool: str
    state: State = State.STARTING
    cwd: str | None = None
    #: The git branch checked out in ``cwd`` (a plan step's worktree: its step's branch).
    branch: str | None = None
    restarts: int = 0
    turns: int = 0
    question: str | None = None
    fatal_reason: str | None = None
    tags: list[str] = field(default_factory=list)
    #: Wall-clock start of the turn in progress (from its ``turn_started``), None between turns.
    turn_started: float | None = None
    #: Its process tree's CPU share since the previous reading (100 = one core) and memory.
    cpu_percent: float | None = None
    rss_bytes: int | None = None

    def usage_text(self) -> tuple[str, str]:
        """(CPU, memory) as the table shows them; "-" before a reading."""
        cpu = "-" if self.cpu_percent is None else f"{self.cpu_percent:.0f}%"
        return cpu, "-" if self.rss_bytes is None else format_bytes(self.rss_bytes)

    @property
    def group(self) -> Group:
        return GROUP_OF_STATE[self.state]

    @property
    def colour(self) -> str:
        return STATE_COLOUR[self.state]

    def turn_time(self, now: float) -> str:
        if self.turn_started is None or self.state not in (State.BUSY, State.WAITING,
                                                           State.ATTACHED):
            return "-"
        return format_duration(now - self.turn_started)


def format_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class FleetView:
    """The fleet as last heard of: instances by id, the daemon's own row, recent events."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.instances: dict[str, InstanceView] = {}
        self.daemon: dict[str, Any] = {}
        self.queued = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self.last_seq = 0
        #: Every run heard of, and the plan runs (those with step events), oldest first.
        self.runs: set[str] = set()
        self.plan_runs: list[str] = []
        self.metrics = Metrics()
        self._usage: dict[str, tuple[float, float]] = {}  # id -> (at, cpu_s) last read

    @classmethod
    def build(cls, status: Mapping[str, Any], history: Iterable[Mapping[str, Any]] = (),
              max_events: int = MAX_EVENTS) -> FleetView:
        """The view after ``history`` (events, oldest first), then ``status`` on top: the
        status was taken after the history was read, so it is the truth for what both say.
        (It goes first too, so that a history that begins after an instance was added still
        gives that instance its turn's start.)"""
        view = cls(max_events)
        view.load_status(status)
        for event in history:
            view.apply(event)
        view.load_status(status)
        return view

    def take_usage(self, reply: Mapping[str, Any]) -> None:
        """A reading of the daemon's ``usage`` op: memory as it is, CPU as the share of the
        time since this instance's previous reading (the first gives none yet)."""
        at = reply.get("at")
        readings = reply.get("instances")
        if not isinstance(at, (int, float)) or not isinstance(readings, Mapping):
            return
        for iid, view in self.instances.items():
            got = readings.get(iid)
            if not isinstance(got, Mapping):
                view.cpu_percent = view.rss_bytes = None
                self._usage.pop(iid, None)
                continue
            cpu_s = got.get("cpu_s")
            view.rss_bytes = number(got.get("rss_bytes"))
            before = self._usage.get(iid)
            if isinstance(cpu_s, (int, float)):
                self._usage[iid] = (float(at), float(cpu_s))
                if before is not None and at > before[0] and cpu_s >= before[1]:
                    view.cpu_percent = 100.0 * (cpu_s - before[1]) / (at - before[0])

    def load_status(self, status: Mapping[str, Any]) -> None:
        self.daemon = dict(status.get("daemon") or {})
        self.queued = number(status.get("queued"))
        rows = list(status.get("instances") or [])
        known = {str(r["id"]) for r in rows}
        for gone in set(self.instances) - known:
            del self.instances[gone]
        for row in rows:
            iid = str(row["id"])
            view = self.instances.get(iid)
            if view is None:
                view = self.instances[iid] = InstanceView(iid, str(row.get("adapter") or "?"))
            view.tool = str(row.get("adapter") or view.tool)
            view.state = _state(row.get("state"))
            if row.get("cwd") != view.cwd or view.branch is None:
                view.cwd = row.get("cwd")
                view.branch = git_branch(view.cwd) if isinstance(view.cwd, str) else None
            view.restarts = number(row.get("restarts"))
            view.turns = number(row.get("turns"))
            view.question = row.get("question") if view.state is State.WAITING else None
            view.fatal_reason = row.get("fatal_reason")
            view.tags = list(row.get("tags") or [])
            started = row.get("turn_started_at")
            if isinstance(started, (int, float)) and not isinstance(started, bool):
                view.turn_started = float(started)  # (a daemon that says so: the truth)
            if view.state not in (State.BUSY, State.WAITING, State.ATTACHED):
                view.turn_started = None

    # -- events ------------------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Take one event into the view; False if it was seen already."""
        data = dict(event)
        seq = data.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                return False  # seen already (a replay that overlaps what was read)
            self.last_seq = seq
        self.events.append(data)
        run = data.get("run_id")
        if isinstance(run, str):
            self.runs.add(run)
            if str(data.get("kind")).startswith("step_") and run not in self.plan_runs:
                self.plan_runs.append(run)
        iid = data.get("instance")
        kind = data.get("kind")
        self.metrics.take(str(kind), data, self.tool_of(data))
        if isinstance(iid, str):
            self._apply_to(iid, str(kind), data)
        return True

    def _apply_to(self, iid: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "instance_added":
            self.instances[iid] = InstanceView(iid, str(data.get("adapter") or "?"))
            return
        if kind == "instance_removed":
            self.instances.pop(iid, None)
            return
        view = self.instances.get(iid)
        if view is None:
            return  # a task or prompt event about an instance gone since
        if kind == "state_changed":
            view.state = _state(data.get("new"))
            if view.state is not State.WAITING:
                view.question = None
            if view.state not in (State.BUSY, State.WAITING, State.ATTACHED):
                view.turn_started = None
        elif kind == "question_pending":
            view.question = data.get("question")
        elif kind == "question_answered":
            view.question = None
        elif kind == "turn_started":
            ts = data.get("ts")
            view.turn_started = float(ts) if isinstance(ts, (int, float)) else None
            view.turns = max(view.turns, number(data.get("turn")))
        elif kind == "turn_finished" and data.get("status") != "waiting":
            view.turn_started = None  # a turn stopped on a question goes on after the answer
        elif kind == "instance_restarting":
            view.restarts = max(view.restarts, number(data.get("attempt")))
        elif kind == "instance_fatal":
            view.fatal_reason = data.get("reason")

    # -- what the panels show ----------------------------------------------------------------

    def grouped(self) -> list[tuple[Group, list[InstanceView]]]:
        """The instances by group, most urgent group first; non-empty groups only."""
        by_group: dict[Group, list[InstanceView]] = {}
        for view in sorted(self.instances.values(), key=lambda v: v.id):
            by_group.setdefault(view.group, []).append(view)
        return [(g, by_group[g]) for g in Group if g in by_group]

    def ordered(self) -> list[InstanceView]:
        return [view for _, views in self.grouped() for view in views]

    def tool_of(self, event: Mapping[str, Any]) -> str | None:
        for key in ("tool_id", "adapter", "tool"):
            value = event.get(key)
            if isinstance(value, str):
                return value
        iid = event.get("instance")
        view = self.instances.get(iid) if isinstance(iid, str) else None
        return view.tool if view is not None else None

    def tools(self) -> list[str]:
        return sorted({v.tool for v in self.instances.values()})

    def filtered(self, flt: EventFilter) -> list[dict[str, Any]]:
        return [e for e in self.events if flt.matches(e, self.tool_of(e))]

    def counts(self) -> dict[Group, int]:
        out = {g: 0 for g in Group}
        for view in self.instances.values():
            out[view.group] += 1
        return out


@dataclass(frozen=True)
class EventFilter:
    """Which events the event panel shows: every field set must match (None: any)."""

    instance: str | None = None
    tool: str | None = None
    run: str | None = None
    kinds: frozenset[str] = frozenset()

    FIELDS = ("instance", "tool", "run", "kind")

    @classmethod
    def parse(cls, text: str) -> EventFilter:
        """``instance:demo-1 tool:demo run:ID kind:turn_started,turn_finished`` (``=``
        works too); a bare word is an instance id. Raises ValueError on an unknown field."""
        values: dict[str, str] = {}
        kinds: set[str] = set()
        for word in text.split():
            name, sep, value = word.replace("=", ":", 1).partition(":")
            if not sep:
                name, value = "instance", word
            if name not in cls.FIELDS:
                raise ValueError(f"unknown filter field {name!r} (fields: "
                                 f"{', '.join(cls.FIELDS)})")
            if not value:
                raise ValueError(f"filter field {name!r} needs a value")
            if name == "kind":
                kinds.update(k for k in value.split(",") if k)
            else:
                values[name] = value
        return cls(instance=values.get("instance"), tool=values.get("tool"),
                   run=values.get("run"), kinds=frozenset(kinds))

    def matches(self, event: Mapping[str, Any], tool: str | None) -> bool:
        if self.instance is not None and event.get("instance") != self.instance:
            return False
        if self.tool is not None and tool != self.tool:
            return False
        if self.run is not None and event.get("run_id") != self.run:
            return False
        return not self.kinds or event.get("kind") in self.kinds

    def describe(self) -> str:
        parts = [f"{n}:{v}" for n, v in (("instance", self.instance), ("tool", self.tool),
                                         ("run", self.run)) if v is not None]
        if self.kinds:
            parts.append("kind:" + ",".join(sorted(self.kinds)))
        return " ".join(parts)

    def __bool__(self) -> bool:
        return bool(self.describe())


# -- one event as a line -------------------------------------------------------------------------

#: Kinds whose colour does not depend on their fields.
_KIND_COLOUR = {
    "question_pending": "magenta", "question_answered": "magenta",
    "turn_started": "yellow", "task_started": "yellow", "run_started": "yellow",
    "prompt_queued": "cyan", "scaled": "cyan", "instance_added": "cyan",
    "instance_removed": "cyan",
    "process_exited": "red", "instance_restarting": "red", "instance_fatal": "red",
    "turn_retried": "red", "turn_failed": "red", "orphan_killed": "red",
    "task_failed": "red", "merge_conflict_detected": "red",
    "task_completed": "green", "step_merged": "green",
    "daemon_started": "blue", "daemon_stopping": "blue", "daemon_stopped": "blue",
}
#: Statuses of turns, prompts, runs and steps that are a success.
_GOOD = {"done", "succeeded", "merged", "ok"}
_RUNNING = {"running", "pending", "ready", "merging", "queued"}


def event_colour(event: Mapping[str, Any]) -> str:
    kind = event.get("kind")
    if kind == "state_changed":
        return STATE_COLOUR[_state(event.get("new"))]
    if kind in ("turn_finished", "prompt_finished", "run_finished", "step_changed"):
        status = event.get("state") if kind == "step_changed" else event.get("status")
        if status in _GOOD:
            return "green"
        if status in _RUNNING or status == "waiting":
            return "yellow" if status != "waiting" else "magenta"
        return "red"
    return _KIND_COLOUR.get(str(kind), "white")


_SKIP = {"seq", "ts", "kind", "instance", "mono"}


def event_summary(event: Mapping[str, Any], *, width: int = 200) -> str:
    """``HH:MM:SS kind instance key=value …`` in one line, cut to ``width``."""
    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("ts") or 0)))
    if event.get("kind") == "state_changed":
        detail = f"{event.get('old')} → {event.get('new')}  {event.get('reason') or ''}"
    else:
        detail = " ".join(f"{k}={_short(v)}" for k, v in event.items()
                          if k not in _SKIP and v not in (None, "", [], {}))
    who = event.get("instance") or "-"
    line = f"{stamp} {event.get('kind', '?'):<19} {who:<12} {detail}".rstrip()
    return line if len(line) <= width else line[:width - 1] + "…"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.replace("\n", "⏎")
    return text if len(text) <= 60 else text[:59] + "…"


def git_branch(path: str, most_up: int = 64) -> str | None:
    """The branch checked out in the git work tree holding ``path`` (a short commit id when
    detached), read from the files, not by running git: a view does this for every
    instance. None outside a work tree, or when it cannot tell."""
    here = os.path.abspath(path)
    for _ in range(most_up):
        dot = os.path.join(here, ".git")
        try:
            if os.path.isfile(dot):  # a linked worktree: "gitdir: <its admin folder>"
                with open(dot, encoding="utf-8", errors="replace") as f:
                    first = f.read(4096).strip()
                if not first.startswith("gitdir:"):
                    return None
                admin = os.path.join(here, first[len("gitdir:"):].strip())
            elif os.path.isdir(dot):
                admin = dot
            else:
                parent = os.path.dirname(here)
                if parent == here:
                    return None
                here = parent
                continue
            with open(os.path.join(admin, "HEAD"), encoding="utf-8", errors="replace") as f:
                head = f.read(4096).strip()
        except OSError:
            return None
        if head.startswith("ref: refs/heads/"):
            return head[len("ref: refs/heads/"):] or None
        return head[:10] or None
    return None


def format_bytes(n: int) -> str:
    """1536 -> "1.5K", 85 MiB -> "85M": a column's width."""
    value, unit = float(n), "B"
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            break
        value /= 1024
    return f"{value:.0f}{unit}" if unit == "B" or value >= 10 else f"{value:.1f}{unit}"
