"""Hand the local terminal to a session running in this process, until a detach key.

Used by ``aimterm adapter record`` (interactive). The terminal goes to raw mode, the session's
current screen is redrawn (tools do not redraw just because someone looked), keystrokes go to
the tool, its output comes back, window resizes are passed on, and the terminal is restored on
every way out. The session is ATTACHED meanwhile, so automation keeps its hands off.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import termios
import tty
from types import FrameType

from aimterm.session import Session
from aimterm.states import State

DETACH_KEY = b"\x1d"  # Ctrl-]


def attach_local(session: Session, detach_key: bytes = DETACH_KEY, *, hold: bool = True) -> str:
    """Wire stdin/stdout to ``session``; returns ``"detached"`` or ``"exited"``.

    ``hold`` puts the session in ATTACHED (automation pauses); without it detection keeps
    running, which is what a recording made by hand wants."""
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    if not os.isatty(in_fd):
        raise OSError("attach needs a terminal on stdin")
    saved = termios.tcgetattr(in_fd)
    rfd, wfd = os.pipe()  # wakes the select loop on resize and on exit

    def on_output(data: bytes, _at: float) -> None:
        try:
            os.write(out_fd, data)
        except OSError:
            pass

    def on_winch(_sig: int, _frame: FrameType | None) -> None:
        os.write(wfd, b"w")

    def resize() -> None:
        size = os.get_terminal_size(out_fd)
        session.resize(size.lines, size.columns)

    old_winch = signal.signal(signal.SIGWINCH, on_winch)
    remove = session.add_output_listener(on_output)
    if hold:
        session.attach()
    how = "detached"
    try:
        tty.setraw(in_fd)
        resize()
        os.write(out_fd, session.render_screen())
        while True:
            if session.state in (State.EXITED, State.FATAL, State.BACKOFF):
                how = "exited"
                break
            ready, _, _ = select.select([in_fd, rfd], [], [], 0.2)
            if rfd in ready:
                os.read(rfd, 64)
                resize()
            if in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data:
                    break
                if detach_key in data:
                    before = data.split(detach_key, 1)[0]
                    if before:
                        session.write(before)
                    break
                session.write(data)
    finally:
        termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        remove()
        signal.signal(signal.SIGWINCH, old_winch)
        os.close(rfd)
        os.close(wfd)
        os.write(out_fd, b"\r\n")
        if session.state is State.ATTACHED:
            session.detach()
    return how
