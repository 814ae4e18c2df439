"""The decision machine of a turn, pure and on an injected clock.

A live :class:`~aimterm.session.Session` and the replay of a recording
(:mod:`aimterm.adapter.replay`) both decide from the same inputs — screen verdicts, the times
output arrived, timers firing — what the tool is doing and what to do next. This module holds
those decisions once, so ``aimterm adapter explain`` cannot drift from a live run:

- :func:`react`: what a verdict means in a given session state (go busy, answer or ask, start
  settling, hold);
- :func:`settle_seconds`: how long the screen must be still before an idle verdict counts;
- :class:`TurnTracker`: one turn's phase, with its own edge table (:data:`PHASE_EDGES`): typed,
  submitted, verified (the tool showed it took the prompt, per ``submit.verify``), waiting on a
  question, interrupting, and how it ended. It says when the verify timer is due and, when it
  fires, whether to accept the turn, press the submit keys again, or give up.

Nothing here reads a clock, sleeps, or touches a terminal: callers pass the time (``at``) and
carry out what they are told.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aimterm.adapter.spec import AdapterSpec
from aimterm.errors import InvalidTransition
from aimterm.states import State


class Phase(str, enum.Enum):
    TYPING = "typing"  # the prompt's keys are going out
    SUBMITTED = "submitted"  # the submit keys went out; not yet confirmed
    VERIFIED = "verified"  # the tool took it (busy shown, output, or nothing required)
    WAITING = "waiting"  # a question no rule answers: paused until answered
    INTERRUPTING = "interrupting"  # interrupt keys sent; ends INTERRUPTED once idle
    DONE = "done"
    INTERRUPTED = "interrupted"
    FAILED = "failed"  # the keys could not be written, or the tool never took the prompt
    EXITED = "exited"  # the process died mid-turn

    def __str__(self) -> str:
        return self.value


P = Phase

#: Every allowed edge of a turn. Anything else raises InvalidTransition.
PHASE_EDGES: dict[Phase, frozenset[Phase]] = {
    # Busy may show before the last key is out (a recipe with a pause between keys); a
    # question on screen shows the tool took the prompt as surely as busy does.
    P.TYPING: frozenset({P.SUBMITTED, P.VERIFIED, P.WAITING, P.INTERRUPTING, P.FAILED,
                         P.EXITED}),
    P.SUBMITTED: frozenset({P.VERIFIED, P.WAITING, P.INTERRUPTING, P.FAILED, P.EXITED}),
    P.VERIFIED: frozenset({P.WAITING, P.INTERRUPTING, P.DONE, P.FAILED, P.EXITED}),
    # Answered (back to work, or back to being interrupted), dismissed (idle), interrupted,
    # or it died. Keys go out in every phase, so a write may fail in every one.
    P.WAITING: frozenset({P.VERIFIED, P.INTERRUPTING, P.DONE, P.INTERRUPTED, P.FAILED,
                          P.EXITED}),
    P.INTERRUPTING: frozenset({P.WAITING, P.INTERRUPTED, P.FAILED, P.EXITED}),
    P.DONE: frozenset(),
    P.INTERRUPTED: frozenset(),
    P.FAILED: frozenset(),
    P.EXITED: frozenset(),
}
#: The phases in which the tool has shown it took the prompt: an idle screen may end the turn.
SETTLEABLE = frozenset({P.VERIFIED, P.WAITING, P.INTERRUPTING})
#: The phases a turn ends in.
FINAL = frozenset(p for p, targets in PHASE_EDGES.items() if not targets)


def check_edge(old: Phase, new: Phase) -> None:
    """Raise InvalidTransition unless ``old -> new`` is in :data:`PHASE_EDGES`."""
    if new not in PHASE_EDGES[old]:
        raise InvalidTransition(f"turn {old} -> {new} is not an allowed transition")


class VerifyStep(str, enum.Enum):
    """What to do when the verify timer fires."""

    NOTHING = "nothing"  # verified meanwhile, or the turn is over
    ACCEPT = "accept"  # too quick to show busy, but the screen shows it took the prompt
    RESEND = "resend"  # press the submit keys again; the timer is due again
    FAIL = "fail"  # retries used up


class Step(str, enum.Enum):
    """What a screen verdict means for the session, by :func:`react`."""

    BUSY = "busy"  # busy on screen: mark the turn busy, go BUSY
    QUESTION = "question"  # answer it by rule, or ask (WAITING)
    SETTLE = "settle"  # idle on screen: IDLE once still for the settle time
    HOLD = "hold"  # nothing decided: cancel a settle in progress


#: The session states in which verdicts are acted on at all.
DETECTING = frozenset({State.STARTING, State.IDLE, State.BUSY, State.WAITING})


def react(state: State, verdict: str | None, turn: TurnTracker | None) -> Step:
    """The one table of what a verdict (``"busy"``, ``"waiting"``, ``"idle"`` or None) does
    in ``state``, with ``turn`` the turn in flight (None between turns)."""
    if verdict == "busy":
        return Step.BUSY
    if verdict == "waiting":
        return Step.QUESTION
    if verdict == "idle" and (turn is None or turn.settleable):
        return Step.SETTLE
    return Step.HOLD


def settle_seconds(spec: AdapterSpec, starting: bool) -> float:
    """How long the screen must be still, after its last output, before idle counts."""
    first = spec.startup.settle_ms
    if starting and first is not None:
        return first / 1000.0
    return spec.settle_ms / 1000.0


#: How soon the verify timer fires once a turn shows idle before busy (see
#: :meth:`TurnTracker.idle_seen`).
QUICK_VERIFY_S = 0.5


@dataclass(slots=True)
class TurnTracker:
    """One turn's phase and the times that decide it. Times are the caller's clock."""

    verify: str  # the recipe's submit.verify: "busy", "output" or "none"
    verify_timeout_s: float
    retry: int
    #: A line tool that prints nothing at all after Enter is stuck, not slow to show busy:
    #: pressing Enter again would not help (the turn timeout catches it).
    stream: bool = False
    phase: Phase = Phase.TYPING
    submitted_at: float | None = None
    output_at: float | None = None  # first output after the submit keys
    busy_at: float | None = None
    retries: int = 0
    verify_due: float | None = None  # when the verify timer should fire (None: no timer)
    #: Where an answer takes a WAITING turn back to: VERIFIED, or INTERRUPTING when the
    #: question came up while the tool was being interrupted (the turn still ends
    #: INTERRUPTED).
    resume: Phase = Phase.VERIFIED

    @classmethod
    def for_spec(cls, spec: AdapterSpec) -> TurnTracker:
        recipe = spec.submit
        return cls(recipe.verify, recipe.verify_timeout_ms / 1000.0, recipe.retry,
                   stream=spec.detect == "stream")

    # -- the phase ----------------------------------------------------------------------------

    def _to(self, new: Phase) -> None:
        if new not in PHASE_EDGES[self.phase]:
            check_edge(self.phase, new)  # (raises, with the message)
        self.phase = new
        if new is not P.SUBMITTED:
            self.verify_due = None

    @property
    def settleable(self) -> bool:
        return self.phase in SETTLEABLE

    @property
    def verified(self) -> bool:
        """The tool has shown it took the prompt (or it is past caring)."""
        return self.phase is not P.TYPING and self.phase is not P.SUBMITTED

    @property
    def submitted(self) -> bool:
        return self.submitted_at is not None

    @property
    def over(self) -> bool:
        return self.phase in FINAL

    # -- inputs -------------------------------------------------------------------------------

    def keys_out(self, at: float) -> float | None:
        """The submit keys went out at ``at``. Returns when the verify timer is due, or None
        when no timer is needed (verified already, or nothing to wait for)."""
        self.submitted_at = at
        if self.phase is P.TYPING:
            if self.verify == "none" or (self.verify == "output" and self.output_at is not None):
                self._verified(at)
            else:
                self._to(P.SUBMITTED)
        if self.phase is P.SUBMITTED and not (self.stream and self.verify == "output"):
            self.verify_due = at + self.verify_timeout_s
        return self.verify_due

    def output(self, at: float) -> bool:
        """Output arrived at ``at``. True if it is the first since the submit keys (the
        caller then looks at the screen again: a quick turn may be over already)."""
        if self.submitted_at is None or self.output_at is not None:
            return False
        self.output_at = at
        if self.verify == "output" and not self.over:
            self._verified(at)
        return True

    def busy(self, at: float) -> None:
        """Busy showed on screen — also while the submit keys are still going out."""
        if not self.over:
            self._verified(at)

    def _verified(self, at: float) -> None:
        if self.busy_at is None:
            self.busy_at = at
        if self.phase is P.TYPING or self.phase is P.SUBMITTED:
            self._to(P.VERIFIED)

    def verify_fired(self, at: float, screen_moved: bool) -> VerifyStep:
        """The verify timer fired. ``screen_moved``: the screen changed since the submit keys
        apart from the input line, and the input line no longer holds the prompt (only asked
        for when output arrived)."""
        if self.phase is not P.SUBMITTED:
            return VerifyStep.NOTHING
        if self.output_at is not None and screen_moved:
            self._to(P.VERIFIED)  # too quick to catch busy on screen, but it visibly ran
            return VerifyStep.ACCEPT
        if self.retries >= self.retry:
            return VerifyStep.FAIL
        self.retries += 1
        self.verify_due = at + self.verify_timeout_s
        return VerifyStep.RESEND

    def idle_seen(self, at: float) -> bool:
        """Idle showed on screen, after output, while the submit keys are unconfirmed: the
        turn may have run too quickly for busy to be seen (a zero-think tool). The verify
        timer is brought forward to :data:`QUICK_VERIFY_S` from now — it then accepts a
        turn the screen shows ran — rather than the whole ``verify_timeout_ms``; a tool
        still about to show busy has that long to. True if the timer moved."""
        if self.phase is not P.SUBMITTED or self.output_at is None or self.verify_due is None:
            return False
        due = at + min(QUICK_VERIFY_S, self.verify_timeout_s)
        if due >= self.verify_due:
            return False
        self.verify_due = due
        return True

    def asked(self) -> None:
        """A question no rule answers is on screen."""
        if self.over or self.phase is P.WAITING:
            return
        self.resume = P.INTERRUPTING if self.phase is P.INTERRUPTING else P.VERIFIED
        self._to(P.WAITING)

    def answered(self) -> None:
        if self.phase is P.WAITING:
            self._to(self.resume)

    def interrupt(self) -> None:
        if not self.over and self.phase is not P.INTERRUPTING:
            self._to(P.INTERRUPTING)

    def settled(self) -> Phase:
        """Idle and still: the turn is over, DONE or INTERRUPTED."""
        interrupted = self.phase is P.INTERRUPTING or (self.phase is P.WAITING
                                                       and self.resume is P.INTERRUPTING)
        self._to(P.INTERRUPTED if interrupted else P.DONE)
        return self.phase

    def failed(self) -> None:
        if not self.over:
            self._to(P.FAILED)

    def exited(self) -> None:
        if not self.over:
            self._to(P.EXITED)


def phase_edges() -> list[tuple[Phase, Phase]]:
    return [(a, b) for a, targets in PHASE_EDGES.items()
            for b in sorted(targets, key=list(Phase).index)]
