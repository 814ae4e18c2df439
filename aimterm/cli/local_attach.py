"""Hand the local terminal to a session running in this process, until a detach key.

Used by ``aimterm adapter record`` (interactive). The terminal hand-over of
:mod:`aimterm.cli.handover`: raw mode, the session's current screen redrawn (tools do not
redraw just because someone looked), keystrokes to the tool, its output back, window resizes
passed on, and the terminal restored on every way out. The session is ATTACHED meanwhile, so
automation keeps its hands off.
"""

from __future__ import annotations

import os
import sys

from aimterm.cli.handover import DETACH_KEY, Handover, window_size
from aimterm.events import Event
from aimterm.session import Session
from aimterm.states import State

__all__ = ["DETACH_KEY", "attach_local"]

#: States in which the tool is gone: the hand-over ends.
_GONE = (State.EXITED, State.FATAL, State.BACKOFF)


def attach_local(session: Session, detach_key: bytes = DETACH_KEY, *, hold: bool = True) -> str:
    """Wire stdin/stdout to ``session``; returns ``"detached"`` or ``"exited"``.

    ``hold`` puts the session in ATTACHED (automation pauses); without it detection keeps
    running, which is what a recording made by hand wants."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    if not os.isatty(in_fd):
        raise OSError("attach needs a terminal on stdin")
    hand = Handover(in_fd, out_fd, detach_key=detach_key, send=session.write,
                    resize=session.resize)

    def on_event(_event: Event) -> None:
        if session.state in _GONE:
            hand.end()

    try:
        with hand:
            remove = session.add_output_listener(lambda data, _at: hand.write(data))
            unsubscribe = session.subscribe(on_event)
            try:
                if hold:
                    session.attach()
                size = window_size(out_fd)
                if size is not None:
                    session.resize(*size)
                hand.write(session.render_screen())
                how = "ended" if session.state in _GONE else hand.pump()
            finally:
                unsubscribe()
                remove()
    finally:
        if session.state is State.ATTACHED:
            session.detach()
    return "exited" if how == "ended" else "detached"
