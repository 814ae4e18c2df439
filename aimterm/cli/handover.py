"""Hand the local terminal to an instance, and take it back whole.

One hand-over, used by ``aimterm attach`` (an instance of a daemon, over the socket) and by the
in-process attach of ``aimterm adapter record``: the terminal goes to raw mode, keystrokes go
to the instance until the detach key, its output comes to the terminal, window size changes
are passed on, and on every way out — the detach key, the instance's end, an error, SIGTERM,
SIGHUP or SIGINT — the terminal is given back as it was: the modes a tool may have left on are
turned off (bracketed paste, hidden cursor, mouse reporting, the alternate screen) and the
saved termios settings are restored.

Standard library only: ``aimterm attach`` is a daemon client and must stay light.
"""

from __future__ import annotations

import os
import re
import select
import signal
import termios
import threading
import tty
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

__all__ = ["DETACH_KEY", "RESET_MODES", "LEAVE_ALTERNATE", "Handover", "detach_byte",
           "window_size"]

DETACH_KEY = b"\x1d"  # Ctrl-]

#: Named detach keys (``ctrl-X``) → the byte the terminal sends for them.
_CTRL_SPECIAL = {"@": 0x00, "[": 0x1B, "\\": 0x1C, "]": 0x1D, "^": 0x1E, "_": 0x1F, "?": 0x7F}

#: Leave the alternate screen (and restore the cursor saved when it was entered).
LEAVE_ALTERNATE = b"\x1b[?1049l"
#: Bracketed paste off, cursor shown, mouse reporting off (X10/normal, button-event,
#: any-event, SGR encoding). Each is harmless when the mode was not on.
RESET_MODES = b"\x1b[?2004l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l"

#: DEC private mode sets and resets, e.g. ``ESC [ ? 1049 h`` or ``ESC [ ? 1049 ; 2004 l``.
_PRIVATE_MODE = re.compile(rb"\x1b\[\?([0-9;]*)([hl])")
#: The alternate screen, however a tool asks for it.
_ALTERNATE = {b"1049", b"1047", b"47"}
#: Signals that end a hand-over (the terminal is restored before the caller decides more).
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def detach_byte(text: str) -> bytes:
    """``ctrl-]`` / ``ctrl-a`` / ``^]`` / a single character → the byte it sends.

    Raises :class:`ValueError` for anything else."""
    spec = text.strip()
    lower = spec.lower()
    for prefix in ("ctrl-", "ctrl+", "c-", "^"):
        if lower.startswith(prefix) and len(spec) == len(prefix) + 1:
            char = spec[-1]
            if char in _CTRL_SPECIAL:
                return bytes([_CTRL_SPECIAL[char]])
            if char.isalpha() and char.isascii():
                return bytes([ord(char.lower()) - ord("a") + 1])
            break
    else:
        if len(spec) == 1 and spec.isascii():
            return spec.encode("ascii")
    raise ValueError(f"expected ctrl-<letter or one of @[\\]^_?>, got {text!r}")


def window_size(fd: int) -> tuple[int, int] | None:
    """``(rows, cols)`` of the terminal on ``fd``, or None if it has none."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return (size.lines, size.columns) if size.lines > 0 and size.columns > 0 else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:  # the terminal went away (hang-up): nothing left to draw on
            return
        view = view[n:]


class Handover:
    """The local terminal, handed to one instance for the span of a ``with`` block.

    Entering saves the termios settings of ``in_fd``, puts it in raw mode and installs the
    signal handlers (SIGWINCH, and SIGTERM/SIGHUP/SIGINT, which end :meth:`pump`); leaving
    turns the tool's modes off, restores termios and the previous handlers. Output goes
    through :meth:`write` (from any one thread), which also notes whether the tool put the
    terminal on the alternate screen.

    ``send`` gets the keystrokes (None: they are dropped, e.g. a read-only watcher); ``resize``
    gets ``(rows, cols)`` when the window changes."""

    def __init__(self, in_fd: int, out_fd: int, *, detach_key: bytes = DETACH_KEY,
                 send: Callable[[bytes], None] | None = None,
                 resize: Callable[[int, int], None] | None = None) -> None:
        if not detach_key:
            raise ValueError("the detach key is empty")
        self.in_fd, self.out_fd = in_fd, out_fd
        self.detach_key = detach_key
        self._send, self._resize = send, resize
        #: The signal that ended :meth:`pump`, if one did.
        self.signal: int | None = None
        self._alternate = False
        self._tail = b""
        self._saved: list[Any] | None = None
        self._old_handlers: dict[int, object] = {}
        self._rfd = self._wfd = -1
        # Guards the wake pipe against a late wake from another thread once it is closed (its
        # number may already belong to another file). Re-entrant: signal handlers wake too, on
        # the main thread, which may hold it.
        self._pipe_lock = threading.RLock()
        self._out_lock = threading.Lock()
        self._closed = False

    # -- the terminal's modes --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Draw ``data`` on the terminal; once the hand-over is over, nothing more is drawn
        (late output would turn the tool's modes back on)."""
        with self._out_lock:
            if self._closed:
                return
            self._track(data)
            _write_all(self.out_fd, data)

    def _track(self, data: bytes) -> None:
        # A mode sequence may be split across two writes: look at the end of the previous one
        # too. Applying a sequence twice is harmless, as only the last set/reset counts.
        seen = self._tail + data
        for match in _PRIVATE_MODE.finditer(seen):
            if _ALTERNATE.intersection(match.group(1).split(b";")):
                self._alternate = match.group(2) == b"h"
        self._tail = seen[-16:]

    def restore_bytes(self) -> bytes:
        """What leaving writes: the tool's modes off, then a new line.

        ``?1049l`` is sent only when the tool's output put the terminal on the alternate
        screen: on the main screen it still restores the saved cursor (xterm, VTE), which puts
        the cursor at the top left when nothing was saved."""
        return (LEAVE_ALTERNATE if self._alternate else b"") + RESET_MODES + b"\r\n"

    # -- entering and leaving --------------------------------------------------------------

    def __enter__(self) -> Handover:
        self._saved = termios.tcgetattr(self.in_fd)
        self._closed, self._alternate, self._tail, self.signal = False, False, b"", None
        self._rfd, self._wfd = os.pipe()  # wakes the pump: resize, end, signal
        os.set_blocking(self._wfd, False)
        try:
            if threading.current_thread() is threading.main_thread():
                self._old_handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH,
                                                                    self._on_winch)
                for sig in _ENDING_SIGNALS:
                    self._old_handlers[sig] = signal.signal(sig, self._on_ending_signal)
            tty.setraw(self.in_fd)
        except BaseException:
            self._leave()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._leave()

    def _leave(self) -> None:
        with self._out_lock:
            self._closed = True
            _write_all(self.out_fd, self.restore_bytes())
        if self._saved is not None:
            try:
                termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self._saved)
            except termios.error:  # the terminal hung up
                pass
            self._saved = None
        for sig, old in self._old_handlers.items():
            # (None: the handler was not set from Python; the default is the best guess.)
            signal.signal(sig, signal.SIG_DFL if old is None else old)  # type: ignore[arg-type]
        self._old_handlers.clear()
        with self._pipe_lock:
            for fd in (self._rfd, self._wfd):
                if fd >= 0:
                    os.close(fd)
            self._rfd = self._wfd = -1

    # -- waking the pump (signal handlers and other threads only write one byte) ------------

    def _wake(self, why: bytes) -> None:
        with self._pipe_lock:
            if self._wfd < 0:  # the hand-over is over
                return
            try:
                os.write(self._wfd, why)
            except OSError:  # full: a wake is pending anyway
                pass

    def _on_winch(self, _sig: int, _frame: FrameType | None) -> None:
        self._wake(b"w")

    def _on_ending_signal(self, sig: int, _frame: FrameType | None) -> None:
        self.signal = sig
        self._wake(b"s")

    def end(self) -> None:
        """Stop :meth:`pump` (it returns ``"ended"``); callable from any thread."""
        self._wake(b"e")

    # -- the byte pump ---------------------------------------------------------------------

    def pump(self) -> str:
        """Keystrokes to ``send`` until one of: the detach key (``"detached"``), end of input
        (``"eof"``), :meth:`end` (``"ended"``) or an ending signal (``"signal"``, the number
        in :attr:`signal`). What was typed before the detach key is still sent."""
        if self._saved is None:
            raise RuntimeError("Handover.pump() outside its with block")
        while True:
            ready, _, _ = select.select([self.in_fd, self._rfd], [], [])
            if self._rfd in ready:
                wakes = os.read(self._rfd, 64)
                if b"s" in wakes:
                    return "signal"
                if b"e" in wakes:
                    return "ended"
                size = window_size(self.out_fd)
                if size is not None and self._resize is not None:
                    self._resize(*size)
            if self.in_fd in ready:
                try:
                    data = os.read(self.in_fd, 4096)
                except OSError:  # EIO: the terminal hung up
                    return "eof"
                if not data:
                    return "eof"
                leave = self.detach_key in data
                if leave:
                    data = data.split(self.detach_key, 1)[0]
                if data and self._send is not None:
                    self._send(data)
                if leave:
                    return "detached"
