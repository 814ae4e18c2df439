"""Replay a recording through an adapter's rules: what the detector would decide, and why.

``aimterm adapter explain`` runs a saved asciicast through the same screen, rules and settle
logic a live session uses, on the recording's own clock, and reports every state change with
the rule that fired and the screen text that matched. It also flags spots worth a look:

- ``idle-with-busy-marker``: the session would be IDLE while the screen still shows something
  that usually means busy (a spinner, "esc to interrupt", "Thinking", "Working" …);
- ``turn-never-ended``: a turn started (Enter was typed) and the recording ended before idle;
- ``unknown-screen``: a long stretch of output that no rule recognised;
- ``mismatch``: the live session (its markers in the recording) decided otherwise.

Pure: no processes, no wall clock. Recordings of real CLIs kept under ``tests/fixtures/`` run
through this in the test suite, so an adapter change that breaks detection fails without the
CLI installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aimterm.adapter.detector import MATCH_TAIL, Detector, Verdict
from aimterm.adapter.spec import AdapterSpec
from aimterm.adapter.tracker import Step, TurnTracker, VerifyStep, react, settle_seconds
from aimterm.errors import ConfigError
from aimterm.states import State
from aimterm.term.matcher import TextTail
from aimterm.term.responder import Responder
from aimterm.term.screen import Screen
from aimterm.term.transcript import Recording, read_recording

#: Screen text that usually means "busy" in agent CLIs, whatever the adapter says.
BUSY_HINTS = re.compile(r"esc to (interrupt|cancel)|[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]|\bThinking\b|\bWorking\b",
                        re.IGNORECASE)
_MARKER = re.compile(r"^state (?P<old>\w+)->(?P<new>\w+)(?: \[(?P<rule>[^\]]*)\] "
                     r"(?P<reason>[^:]*))?")
_UNKNOWN_S = 5.0
_STATES = {s.value for s in State}


@dataclass(frozen=True)
class Change:
    t: float
    old: State
    new: State
    reason: str
    rule: str | None = None
    text: str = ""


@dataclass(frozen=True)
class Flag:
    t: float
    kind: str
    detail: str


@dataclass
class Explanation:
    adapter: str
    changes: list[Change] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    answered: list[tuple[float, str, str]] = field(default_factory=list)  # (t, rule, question)
    turns: int = 0
    duration: float = 0.0
    #: The state changes the live session wrote into the recording, when it did (its markers).
    recorded: list[Change] = field(default_factory=list)

    def final_state(self) -> State:
        return self.changes[-1].new if self.changes else State.STARTING

    def states(self) -> list[State]:
        return [c.new for c in self.changes]


class _Replayer:
    """A session's decisions on the recording's clock: the verdicts and settle rules of
    :mod:`aimterm.adapter.tracker`, with its timers fired by :meth:`_advance` when the
    recording's time passes them rather than by a loop."""

    def __init__(self, spec: AdapterSpec, rec: Recording) -> None:
        self.spec = spec
        self.rec = rec
        self.detector = Detector(spec)
        self.screen = Screen(rec.rows, rec.cols, spec.terminal.scrollback)
        self.responder = Responder()
        self.stream = spec.detect == "stream"
        self.text = TextTail(spec.terminal.scrollback or 2000)
        self.state = State.STARTING
        self.out = Explanation(spec.name)
        self.last_output = 0.0
        self.idle_due: float | None = None  # the settle timer
        self.turn: TurnTracker | None = None
        self.turn_open: float | None = None
        self.marks: dict[str, str] = {}
        self.unknown_since: float | None = None
        self.unknown_flagged = False

    # -- the state machine, on the recording's clock ------------------------------------------

    def _set(self, t: float, new: State, reason: str, verdict: Verdict | None = None) -> None:
        if new is self.state:
            return
        self.out.changes.append(Change(t, self.state, new, reason,
                                       verdict.rule_name if verdict else None,
                                       verdict.text if verdict else ""))
        self.state = new
        if new is State.IDLE:
            self._check_idle(t)
            self.turn_open = None
            if self.turn is not None:
                self.turn.settled()
                self.turn = None

    def _view(self) -> tuple[list[str], int, str]:
        if self.stream:
            lines = self.text.tails(MATCH_TAIL)
            return lines, len(lines) - 1, ""
        snap = self.screen.snapshot()
        return snap.lines, snap.cursor[0], snap.title

    def _check_idle(self, t: float) -> None:
        lines, _row, title = self._view()
        while lines and not lines[-1].strip():
            lines = lines[:-1]
        hay = "\n".join(lines[-6:]) + "\n" + title
        m = BUSY_HINTS.search(hay)
        if m:
            self.out.flags.append(Flag(t, "idle-with-busy-marker",
                                       f"idle while {m.group(0)!r} is on screen"))

    def _advance(self, upto: float) -> None:
        """Fire, in time order, the timers a live session would have fired by ``upto``."""
        while True:
            verify = self.turn.verify_due if self.turn is not None else None
            due = min((d for d in (self.idle_due, verify) if d is not None), default=None)
            if due is None or due > upto:
                return
            if verify is not None and verify == due:
                self._verify_fired(due)
            else:
                self._settle_fired(due)

    def _settle_fired(self, at: float) -> None:
        """Still for the settle time: an idle screen ends the turn, if the tool took it."""
        self.idle_due = None
        lines, row, title = self._view()
        verdict = self.detector.evaluate(lines, row, title)
        if verdict.state == "idle" and (self.turn is None or self.turn.settleable):
            self._set(at, State.IDLE, "idle and settled", verdict)

    def _verify_fired(self, at: float) -> None:
        assert self.turn is not None
        # The recording holds output, not the screen at the submit: any output since stands
        # for a screen that moved.
        step = self.turn.verify_fired(at, screen_moved=self.turn.output_at is not None)
        if step is VerifyStep.FAIL:
            self.turn = None  # the turn failed; detection goes on without it
        if step is VerifyStep.ACCEPT or step is VerifyStep.FAIL:
            self.evaluate(at)

    def feed(self, t: float, data: bytes) -> None:
        self._advance(t)
        self.last_output = t
        if self.turn is not None:
            self.turn.output(t)
        for item in self.responder.split(data):
            if isinstance(item, bytes):
                self.screen.feed(item)
        if self.stream:
            self.text.feed(data)
        self.evaluate(t)

    def typed(self, t: float, data: str) -> None:
        self._advance(t)
        if ("\r" in data or "\n" in data) and self.state is State.IDLE:
            # (Keys typed while starting answer dialogs; they are not turns.)
            self.out.turns += 1
            self.turn_open = t
            self.turn = TurnTracker.for_spec(self.spec)
            if self.stream:
                self.text.clear()
            self._set(t, State.BUSY, "turn started")
            self.idle_due = None
            self.turn.keys_out(t)

    def evaluate(self, t: float) -> None:
        lines, row, title = self._view()
        verdict = self.detector.evaluate(lines, row, title)
        if self.state is State.STARTING:
            dialogs = self.detector.find_dialogs(lines, row)
            if dialogs:
                self.idle_due = None
                for found in dialogs:
                    if self.marks.get(found.rule.name) != found.match.group(0):
                        self.marks[found.rule.name] = found.match.group(0)
                        if found.rule.send:
                            self.out.answered.append((t, found.rule.name, found.text))
                        break
                return
        if verdict.state is None:
            self.idle_due = None
            if self.unknown_since is None:
                self.unknown_since = t
            elif t - self.unknown_since > _UNKNOWN_S and not self.unknown_flagged:
                self.unknown_flagged = True
                tail = " | ".join(x for x in lines[-3:] if x)
                self.out.flags.append(Flag(t, "unknown-screen",
                                           f"no rule matched for {t - self.unknown_since:.1f}s;"
                                           f" screen ends: {tail[:120]!r}"))
            return
        self.unknown_since = None
        self.unknown_flagged = False
        step = react(self.state, verdict.state, self.turn)
        if step is Step.BUSY:
            self.idle_due = None
            if self.turn is not None:
                self.turn.busy(t)
            if self.state is not State.STARTING:
                self._set(t, State.BUSY, "busy on screen", verdict)
        elif step is Step.QUESTION:
            self.idle_due = None
            answer = self.detector.find_answer(lines, row)
            if answer is not None:
                found = answer
                if self.marks.get(found.rule.name) != found.match.group(0):
                    self.marks[found.rule.name] = found.match.group(0)
                    self.out.answered.append((t, found.rule.name, found.text))
                if self.state is State.WAITING:
                    if self.turn is not None:
                        self.turn.answered()
                    self._set(t, State.BUSY, "answered by rule", verdict)
            else:
                if self.turn is not None and self.state is not State.WAITING:
                    self.turn.asked()
                self._set(t, State.WAITING, "question no rule answers", verdict)
        elif step is Step.SETTLE:
            # The screen must be still for the settle time after its LAST output (and a timer
            # armed late, after a verify timer, fires no earlier than now).
            settle = settle_seconds(self.spec, self.state is State.STARTING)
            self.idle_due = max(self.last_output + settle, t)
            if settle == 0:
                self._advance(t)
        else:
            self.idle_due = None
            if self.turn is not None and verdict.state == "idle":
                self.turn.idle_seen(t)  # (the next _advance fires it when due)

    def finish(self, end: float) -> Explanation:
        self._advance(float("inf"))
        self.out.duration = end
        if self.turn_open is not None and self.state in (State.BUSY, State.WAITING):
            self.out.flags.append(Flag(end, "turn-never-ended",
                                       f"turn started at {self.turn_open:.2f}s is still "
                                       f"{self.state} when the recording ends"))
        return self.out


def explain(spec: AdapterSpec, rec: Recording) -> Explanation:
    """Replay ``rec`` through ``spec``'s rules; see the module docstring."""
    rp = _Replayer(spec, rec)
    end = 0.0
    for t, code, data in rec.events:
        end = max(end, t)
        if code == "o":
            rp.feed(t, data.encode("utf-8"))
        elif code == "i":
            rp.typed(t, data)
        elif code == "r":
            cols, _, rows = data.partition("x")
            if cols.isdigit() and rows.isdigit():
                rp.screen.resize(int(rows), int(cols))
        elif code == "m":
            m = _MARKER.match(data)
            if m and m.group("old") in _STATES and m.group("new") in _STATES:
                rule = m.group("rule")
                rp.out.recorded.append(Change(t, State(m.group("old")), State(m.group("new")),
                                              m.group("reason") or "",
                                              None if rule in (None, "-") else rule))
    out = rp.finish(end)
    _compare(out, [(c.t, c.new) for c in out.recorded])
    out.flags.sort(key=lambda f: f.t)
    return out


def _compare(out: Explanation, live: list[tuple[float, str]]) -> None:
    """Flag where the replay's sequence of states differs from what the live run recorded."""
    if not live:
        return
    ours = [s for s in out.states() if s in ("idle", "busy", "waiting")]
    theirs = [s for _t, s in live if s in ("idle", "busy", "waiting")]
    if ours != theirs:
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                     min(len(ours), len(theirs)))
        when = live[min(first, len(live) - 1)][0]
        out.flags.append(Flag(when, "mismatch",
                              f"replay says {' '.join(ours[first:first + 4]) or '(nothing)'}; "
                              f"the live run said {' '.join(theirs[first:first + 4]) or '(nothing)'}"))


def explain_file(spec: AdapterSpec, path: str) -> Explanation:
    """:func:`explain` a recording file; a broken file is a ConfigError naming path:line."""
    try:
        rec = read_recording(path)
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from None
    return explain(spec, rec)
