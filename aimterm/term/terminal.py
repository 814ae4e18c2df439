"""A terminal: one PTY child wired to its screen, query answers, transcript and listeners.

Bytes from the child arrive on the reader loop and fan out, in order, to the transcript, the
responder (which answers queries against the screen as it was at the query), the screen, and
the output listeners. For line-oriented tools the screen may be fed lazily (``lazy_screen``):
bytes are queued and rendered only when someone looks, which keeps pyte off the hot path.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from aimterm.term.child import PtyChild
from aimterm.term.loop import IOLoop
from aimterm.term.responder import Osc, Query, Responder
from aimterm.term.screen import Screen, Snapshot
from aimterm.term.transcript import TranscriptWriter
from aimterm.version import __version__

OutputListener = Callable[[bytes, float], None]
ExitListener = Callable[[int | None, int | None], None]


#: A lazy screen (stream adapters) holds the bytes it has not drawn yet; past _LAZY_MAX it
#: keeps the last _LAZY_KEEP of them, so a long-running line tool costs bounded memory.
_LAZY_MAX = 128 * 1024
_LAZY_KEEP = 32 * 1024

#: Environment strings by their text, one copy for every terminal: each instance's environment
#: is a fresh copy of nearly the same variables (4 KB apiece).
_ENV_TEXT: dict[str, str] = {}


def _shared(text: str) -> str:
    if len(_ENV_TEXT) >= 4096:
        _ENV_TEXT.clear()
    return _ENV_TEXT.setdefault(text, text)


class Terminal:
    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | None = None, rows: int = 40, cols: int = 120,
                 scrollback: int = 2000, transcript: str | os.PathLike[str] | None = None,
                 lazy_screen: bool = False, answer_queries: bool = True,
                 transcript_max_bytes: int | None = None,
                 loop: IOLoop | None = None) -> None:
        self.argv = list(argv)
        self.env = {_shared(k): _shared(v) for k, v in (os.environ if env is None else env).items()}
        self.cwd = cwd
        self.rows, self.cols = rows, cols
        self.loop = loop or IOLoop.shared()
        self.screen = Screen(rows, cols, scrollback)
        self._responder = Responder(__version__)
        self._answer_queries = answer_queries
        self._lazy = lazy_screen
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._output_listeners: list[OutputListener] = []
        self._exit_listeners: list[ExitListener] = []
        self._transcript_path = transcript
        self._transcript_max = transcript_max_bytes
        self.transcript: TranscriptWriter | None = None
        self.child: PtyChild | None = None
        self.osc: dict[str, str] = {}
        self.last_output_at = 0.0
        self.bytes_in = 0
        self.queries_answered = 0

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._transcript_path is not None:
            self.transcript = TranscriptWriter(
                self._transcript_path, rows=self.rows, cols=self.cols,
                env={"TERM": self.env.get("TERM", "xterm-256color")},
                command=" ".join(self.argv), max_bytes=self._transcript_max)
        try:
            self.child = PtyChild.spawn(self.argv, env=self.env, cwd=self.cwd, rows=self.rows,
                                        cols=self.cols, on_data=self._on_data,
                                        on_exit=self._on_exit, loop=self.loop)
        except BaseException:
            if self.transcript is not None:
                self.transcript.close()
            raise

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.alive

    def add_output_listener(self, cb: OutputListener) -> Callable[[], None]:
        self._output_listeners = [*self._output_listeners, cb]
        return lambda: self._remove(cb)

    def _remove(self, cb: OutputListener) -> None:
        self._output_listeners = [x for x in self._output_listeners if x is not cb]

    def add_exit_listener(self, cb: ExitListener) -> None:
        self._exit_listeners = [*self._exit_listeners, cb]

    # -- loop thread ----------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        now = time.monotonic()
        self.last_output_at = now
        self.bytes_in += len(data)
        if self.transcript is not None:
            self.transcript.output(data, now)
        items = self._responder.split(data)
        replies: list[bytes] = []
        with self._lock:
            for item in items:
                if isinstance(item, bytes):
                    if self._lazy:
                        self._pending.append(item)
                        self._pending_bytes += len(item)
                        if self._pending_bytes > _LAZY_MAX:
                            self._trim_pending()
                    else:
                        self.screen.feed(item)
                elif isinstance(item, Query):
                    self._flush_pending()
                    if self._answer_queries:
                        replies.append(self._responder.answer(
                            item, cursor=self.screen.cursor, rows=self.screen.rows,
                            cols=self.screen.cols, modes=self.screen.private_modes))
                elif isinstance(item, Osc):
                    self.osc[item.code] = item.payload
        for reply in replies:
            if reply and self.child is not None and self.child.alive:
                try:
                    self.child.write(reply, timeout=1.0)
                    self.queries_answered += 1
                except (BrokenPipeError, TimeoutError):
                    pass
        for cb in self._output_listeners:
            cb(data, now)

    def _flush_pending(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self.screen.feed(data)

    def _trim_pending(self) -> None:
        """A lazy screen nobody looked at for a long time: keep only the last _LAZY_KEEP
        bytes, from a line start, of what it has not drawn yet. That is many screenfuls of a
        line tool's output, so the screen still ends up showing what the tool last showed;
        what is dropped had scrolled away (a mode set only in the dropped part is lost: the
        price of not emulating every byte of a stream tool)."""
        data = b"".join(self._pending)
        cut = data.find(b"\n", len(data) - _LAZY_KEEP)
        tail = data[cut + 1:] if cut >= 0 else data[-_LAZY_KEEP:]
        self._pending = [tail]
        self._pending_bytes = len(tail)

    def _on_exit(self, code: int | None, sig: int | None) -> None:
        if self.transcript is not None:
            self.transcript.close()
        for cb in self._exit_listeners:
            cb(code, sig)

    # -- any thread -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.child is None:
            raise BrokenPipeError("terminal not started")
        if self.transcript is not None and not self.transcript.closed:
            self.transcript.input(data)
        self.child.write(data)

    def snapshot(self) -> Snapshot:
        with self._lock:
            self._flush_pending()
            return self.screen.snapshot()

    def view(self) -> tuple[Sequence[str], int, str]:
        """(rows, cursor row, title) for a look now: the rows are rendered as they are read
        (:meth:`Screen.rows_view`), so they are for use at once, on the loop thread."""
        with self._lock:
            self._flush_pending()
            return self.screen.rows_view(), self.screen.cursor[0], self.screen.title

    def lines(self) -> list[str]:
        with self._lock:
            self._flush_pending()
            return self.screen.lines()

    def tail(self, n: int = 15) -> list[str]:
        lines = self.lines()
        while lines and not lines[-1]:
            lines.pop()
        return lines[-n:]

    def scrollback_since(self, pushed: int) -> list[str]:
        with self._lock:
            self._flush_pending()
            return self.screen.scrollback_since(pushed)

    def scrollback_lost_since(self, pushed: int) -> int:
        with self._lock:
            self._flush_pending()
            return self.screen.scrollback_lost_since(pushed)

    @property
    def title(self) -> str:
        with self._lock:
            self._flush_pending()
            return self.screen.title

    @property
    def bracketed_paste(self) -> bool:
        with self._lock:
            self._flush_pending()
            return self.screen.bracketed_paste

    def render_ansi(self) -> bytes:
        with self._lock:
            self._flush_pending()
            return self.screen.render_ansi()

    def resize(self, rows: int, cols: int) -> None:
        with self._lock:
            self._flush_pending()
            self.screen.resize(rows, cols)
        self.rows, self.cols = rows, cols
        if self.transcript is not None and not self.transcript.closed:
            self.transcript.resize(rows, cols)
        if self.child is not None:
            self.child.resize(rows, cols)

    def marker(self, label: str) -> None:
        if self.transcript is not None and not self.transcript.closed:
            self.transcript.marker(label)

    def stop(self, *, exit_keys: Sequence[bytes | tuple[bytes, float]] = (),
             exit_timeout: float = 5.0,
             grace: float = 1.0, key_gap: float = 0.025) -> str:
        if self.child is None:
            return "exited"
        try:
            return self.child.stop(exit_keys=exit_keys, exit_timeout=exit_timeout, grace=grace,
                                   key_gap=key_gap)
        finally:
            if self.transcript is not None:
                self.transcript.flush()
