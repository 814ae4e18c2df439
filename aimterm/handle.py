"""What the pool may do with one instance's tool: the :class:`SessionHandle` protocol.

The pool, the daemon and every front-end drive a tool only through these methods. A local
:class:`~aimterm.session.Session` implements them over a PTY on this machine; a remote one (an
instance on another machine) implements the same methods over its own transport, and the pool
cannot tell the two apart. Nothing outside the session reaches for its terminal, its loop or
its private state.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from aimterm.events import Event
from aimterm.states import State

if TYPE_CHECKING:
    from aimterm.turn import Turn

OnTurnDone = Callable[["Turn", BaseException | None], None]


@runtime_checkable
class SessionHandle(Protocol):
    """One tool, started and stopped, given turns, answered, interrupted, watched."""

    id: str
    #: The next start passes the adapter's ``resume`` arguments (a tool back in its
    #: conversation after a crash).
    resume: bool
    #: How many times the tool was started (a run's identity: attach ends when it changes).
    starts: int
    turns_done: int
    rows: int
    cols: int

    @property
    def state(self) -> State: ...

    @property
    def pid(self) -> int | None: ...

    # -- life ----------------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float | None = None) -> State:
        """Spawn the tool; with ``wait``, until it is IDLE (or WAITING on a question)."""

    def stop(self, timeout: float | None = None) -> str:
        """Quit politely, then escalate; no process of the tool survives. Says how it ended."""

    def kill(self) -> None:
        """SIGKILL the tool's whole process group now (when a polite stop failed)."""

    def backoff(self, reason: str) -> None:
        """EXITED -> BACKOFF: the pool will start it again after a delay."""

    def fatal(self, reason: str) -> None:
        """-> FATAL: given up on until restarted by hand."""

    def cancel_backoff(self, reason: str) -> None:
        """BACKOFF -> EXITED: a restart by hand overrides the pending back-off."""

    def close(self) -> None:
        """The instance has left the fleet (stopped first): let go of what is held for it."""

    # -- turns ---------------------------------------------------------------------------------

    def start_turn(self, prompt: str, on_done: OnTurnDone) -> Turn:
        """Start a turn; ``on_done(turn, error)`` is called once when it is over for good."""

    def submit(self, prompt: str) -> concurrent.futures.Future[Turn]:
        """Start a turn; the future gets the Turn when it is over for good."""

    def answer(self, keys: str | Sequence[str]) -> None:
        """Answer the question the tool is WAITING on."""

    def interrupt(self) -> None:
        """Send the interrupt keys; the turn in flight ends INTERRUPTED."""

    # -- a person at the keyboard --------------------------------------------------------------

    def attach(self) -> None: ...

    def detach(self) -> State: ...

    def write(self, data: bytes | str) -> None: ...

    def resize(self, rows: int, cols: int) -> None: ...

    def add_output_listener(self, listener: Callable[[bytes, float], None]
                            ) -> Callable[[], None]: ...

    # -- views ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]: ...

    def screen_lines(self) -> list[str]: ...

    def screen_tail(self, n: int = 15) -> list[str]:
        """The last ``n`` non-blank lines of the screen (for an error message)."""

    def render_screen(self) -> bytes: ...

    def flush_transcript(self) -> None: ...

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]: ...

    def wait_state(self, *states: State, timeout: float = 30.0) -> State: ...


#: Makes an instance's handle: ``factory(adapter, instance_id=…, cwd=…, env=…, args=…,
#: transcript=…, transcript_max_bytes=…, bus=…, loop=…)`` — Session's own signature.
SessionFactory = Callable[..., SessionHandle]
