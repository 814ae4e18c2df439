"""Session states and the one table of allowed edges between them.

States are data: an enum, a table, and :func:`check_transition`, which the one guarded
setter in :mod:`aimterm.session` calls before it emits a :class:`~aimterm.events.StateChanged`.
"""

from __future__ import annotations

import enum


class State(str, enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    WAITING = "waiting"
    ATTACHED = "attached"
    STOPPING = "stopping"
    EXITED = "exited"
    BACKOFF = "backoff"
    FATAL = "fatal"

    def __str__(self) -> str:
        return self.value


S = State

#: Every allowed edge. Anything not listed raises :class:`aimterm.errors.InvalidTransition`.
TRANSITIONS: dict[State, frozenset[State]] = {
    # Start-up: ready, a dialog nobody answers, a person takes over, or it dies.
    S.STARTING: frozenset({S.IDLE, S.BUSY, S.WAITING, S.ATTACHED, S.STOPPING, S.EXITED}),
    # Idle: a turn starts (or the tool starts work on its own), it asks, or goes away.
    S.IDLE: frozenset({S.BUSY, S.WAITING, S.ATTACHED, S.STOPPING, S.EXITED}),
    # Busy: done (after settle), a question no rule answers, hand-over, stop, crash.
    S.BUSY: frozenset({S.IDLE, S.WAITING, S.ATTACHED, S.STOPPING, S.EXITED}),
    # Waiting: answered (back to work), dismissed (idle), hand-over, stop, crash.
    S.WAITING: frozenset({S.BUSY, S.IDLE, S.ATTACHED, S.STOPPING, S.EXITED}),
    # Attached: on detach the instance returns in the state its screen shows.
    S.ATTACHED: frozenset({S.IDLE, S.BUSY, S.WAITING, S.STOPPING, S.EXITED}),
    S.STOPPING: frozenset({S.EXITED}),
    # Exited: restart now, back off first, or give up.
    S.EXITED: frozenset({S.STARTING, S.BACKOFF, S.FATAL}),
    S.BACKOFF: frozenset({S.STARTING, S.FATAL, S.EXITED}),
    # Fatal is final until someone asks for a restart by hand.
    S.FATAL: frozenset({S.STARTING}),
}

#: States in which the process is (or may be) alive.
LIVE_STATES = frozenset({S.STARTING, S.IDLE, S.BUSY, S.WAITING, S.ATTACHED, S.STOPPING})
#: States in which automation may hand the instance a new turn.
READY_STATES = frozenset({S.IDLE})


def can_transition(old: State, new: State) -> bool:
    return new in TRANSITIONS[old]


def all_edges() -> list[tuple[State, State]]:
    return [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets, key=list(State).index)]
