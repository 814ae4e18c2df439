"""A turn: one prompt, what came of it, and the bookkeeping of the one in flight.

:class:`Turn` is what callers get back (reply, status, timings, the questions answered on the
way). :class:`TurnRun` is the session's loop-side record of the turn in flight: its
:class:`~aimterm.adapter.tracker.TurnTracker` (the phase), its verify timer, the screens it is
compared against, and the futures and callback its outcome is delivered through.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aimterm.adapter.tracker import TurnTracker
from aimterm.events import QuestionAnswered
from aimterm.records.base import TurnQuery
from aimterm.term.screen import Snapshot

__all__ = ["Turn", "TurnRun", "TurnStatus"]


class TurnStatus(str, enum.Enum):
    RUNNING = "running"
    DONE = "done"
    WAITING = "waiting"  # the tool asked something no rule answers: answer(), then wait_turn()
    INTERRUPTED = "interrupted"
    TIMEOUT = "timeout"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class Turn:
    """One prompt and what came of it. Times are ``time.monotonic()`` seconds."""

    number: int
    prompt: str
    instance: str
    adapter: str
    status: TurnStatus = TurnStatus.RUNNING
    reply: str = ""
    question: str | None = None
    answered: list[QuestionAnswered] = field(default_factory=list)
    metrics: dict[str, dict[str, str]] = field(default_factory=dict)
    started_at: float = 0.0
    queued_ms: float | None = None  # time the prompt waited for a free instance (pool)
    submitted_at: float | None = None
    busy_at: float | None = None
    idle_at: float | None = None
    last_output_at: float | None = None
    #: Times the prompt was tried again: the submit keys re-sent, or the whole prompt on
    #: another instance after its instance died.
    retries: int = 0
    error: str | None = None
    #: Lines of the reply that the scrollback bound (``terminal.scrollback``) dropped before
    #: the turn ended: the reply is its last part only.
    reply_lines_dropped: int = 0
    #: Where the reply came from: ``record`` (the tool's own record of the conversation, as
    #: the model wrote it), ``screen`` (cut from the terminal), or ``none``.
    reply_source: str = "screen"
    #: The turn's tokens by kind (``input``, ``output``, ...), where the record gives them.
    tokens: dict[str, int] = field(default_factory=dict)
    #: The turn's cost in US dollars, where the record gives it.
    cost_usd: float | None = None

    @property
    def reply_truncated(self) -> bool:
        return self.reply_lines_dropped > 0

    @property
    def submit_to_busy_ms(self) -> float | None:
        if self.submitted_at is None or self.busy_at is None:
            return None
        return max(0.0, (self.busy_at - self.submitted_at) * 1000)

    @property
    def busy_to_idle_ms(self) -> float | None:
        if self.busy_at is None or self.idle_at is None:
            return None
        return (self.idle_at - self.busy_at) * 1000

    @property
    def total_ms(self) -> float | None:
        if self.idle_at is None:
            return None
        return (self.idle_at - self.started_at) * 1000

    @property
    def ok(self) -> bool:
        return self.status is TurnStatus.DONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": self.number, "instance": self.instance, "adapter": self.adapter,
            "prompt": self.prompt, "status": self.status.value, "reply": self.reply,
            "question": self.question,
            "answered": [{"rule": a.rule, "question": a.question, "keys": a.keys}
                         for a in self.answered],
            "metrics": self.metrics, "retries": self.retries, "error": self.error,
            "reply_truncated": self.reply_truncated,
            "reply_lines_dropped": self.reply_lines_dropped,
            "reply_source": self.reply_source, "tokens": self.tokens, "cost_usd": self.cost_usd,
            "timings_ms": {"queued": self.queued_ms, "submit_to_busy": self.submit_to_busy_ms,
                           "busy_to_idle": self.busy_to_idle_ms, "total": self.total_ms},
        }


class TurnRun:
    """Loop-side bookkeeping of the turn in flight."""

    __slots__ = ("turn", "loop", "tracker", "_phase", "_outcome", "_final", "on_done",
                 "resolved", "error", "verify_timer", "before", "at_submit", "record_query",
                 "echo")

    def __init__(self, turn: Turn, loop: asyncio.AbstractEventLoop,
                 tracker: TurnTracker) -> None:
        self.turn = turn
        self.loop = loop
        #: The turn's phase and what it takes to move it on — the same decisions replay makes.
        self.tracker = tracker
        # The current phase of the turn (until a question, the idle prompt, or an exit): an
        # outcome, and a future made only for a caller that waits on it (the pool never does).
        self._phase: asyncio.Future[str] | None = None
        self._outcome: tuple[str, BaseException | None] | None = None
        self._final: concurrent.futures.Future[Turn] | None = None
        #: Called on the loop thread, once, when the turn is over for good: (turn, error).
        self.on_done: Callable[[Turn, BaseException | None], None] | None = None
        self.resolved = False
        self.error: BaseException | None = None
        self.verify_timer: asyncio.TimerHandle | None = None
        self.before: Snapshot | None = None  # the screen before typing
        self.at_submit: Snapshot | None = None  # the screen when the submit keys went out
        self.record_query: TurnQuery | None = None  # the turn, as asked of the tool's record
        #: While typing waits for the tool to draw (``after_echo``): the wait and its test.
        self.echo: tuple[asyncio.Future[None], Callable[[], bool]] | None = None

    def sync(self) -> None:
        """Mirror onto the turn and its timer what the tracker decided."""
        self.turn.busy_at = self.tracker.busy_at
        if self.tracker.verify_due is None and self.verify_timer is not None:
            self.verify_timer.cancel()
            self.verify_timer = None

    @property
    def future(self) -> asyncio.Future[str]:
        """The phase as a future (loop thread), made on first use."""
        if self._phase is None:
            self._phase = self.loop.create_future()
            if self._outcome is not None:
                value, error = self._outcome
                if error is not None:
                    self._phase.set_exception(error)
                else:
                    self._phase.set_result(value)
        return self._phase

    def phase_done(self) -> bool:
        return self._outcome is not None

    def end_phase(self, value: str, error: BaseException | None = None) -> None:
        """The phase ended (``waiting``, ``idle``, ``exited``, or failed with ``error``);
        only the first outcome counts."""
        if self._outcome is not None:
            return
        self._outcome = (value, error)
        phase = self._phase
        if phase is not None and not phase.done():
            if error is not None:
                phase.set_exception(error)
            else:
                phase.set_result(value)

    def renew(self) -> None:
        """A new phase (the question was answered: the turn goes on)."""
        self._phase = None
        self._outcome = None

    @property
    def final(self) -> concurrent.futures.Future[Turn]:
        """Resolved only when the turn is over for good (a WAITING pause does not count).
        Made on first use: the pool listens with ``on_done`` and needs no future."""
        if self._final is None:
            self._final = concurrent.futures.Future()
            if self.resolved:
                if self.error is not None:
                    self._final.set_exception(self.error)
                else:
                    self._final.set_result(self.turn)
        return self._final

    def resolve(self, error: BaseException | None = None) -> None:
        if self.resolved:
            return
        self.resolved = True
        self.error = error
        if self._final is not None and not self._final.done():
            if error is not None:
                self._final.set_exception(error)
            else:
                self._final.set_result(self.turn)
        if self.on_done is not None:
            self.on_done(self.turn, error)
