"""Instance transcripts as text: what ``aimterm logs`` prints.

The daemon writes every instance's terminal to ``<state_dir>/logs/<id>.cast`` (asciicast v2:
output, keys typed, resizes, state markers), flushed on every state change and four times a
second; the file before it (the run before the last restart, or the earlier part of a run
that rolled over past its size limit) is kept as ``<id>.cast.1``, older ones up to ``.3``. They
are read from the files, so they work while the daemon runs and after it is gone.

- Rendered (default): the output run through the same screen emulator the detector uses,
  printed as text: the lines that scrolled off the top, then the screen as it was last
  drawn. That is what ``tmux capture-pane -p -S -`` prints; a full-screen tool that redraws
  in place contributes its last screen.
- ``--raw``: the output bytes exactly as the tool wrote them (escape sequences included),
  for a terminal to replay or a tool to parse.
- ``-f``: keep going as the file grows, like ``tail -F``: rendered, each line is printed
  once the cursor has moved past it (line tools print as they go) or, for a full-screen
  tool, the lines it redrew once its output pauses; raw, every byte. When a new file
  replaces the old one the follower goes on in it: after a roll-over seamlessly, after a
  restart below a ``--- ID: new run ---`` line.
"""

from __future__ import annotations

import collections
import difflib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO

from aimterm.errors import UnknownInstance

__all__ = ["Run", "continues", "open_run", "print_run", "rendered_lines", "transcript_path"]

#: How often ``-f`` looks at the file (the daemon flushes every 0.25 s).
_POLL_S = 0.1
_SCROLLBACK = 10000
#: Following a rendered log: look at the screen once output has paused this long …
_QUIET_S = 0.3
#: … or this often while it streams.
_LOOK_MAX_S = 2.0


def transcript_path(log_dir: Path, instance_id: str, previous: int = 0) -> Path:
    """The transcript of ``instance_id`` (``previous`` runs back). UnknownInstance if none."""
    name = f"{instance_id}.cast" + (f".{previous}" if previous else "")
    known = sorted(p.name[:-5] for p in log_dir.glob("*.cast")) if log_dir.is_dir() else []
    if "/" in instance_id or instance_id.startswith(".") or not (log_dir / name).is_file():
        what = instance_id if not previous else f"{instance_id} (run -{previous})"
        raise UnknownInstance(what, known)
    return log_dir / name


class Run:
    """One transcript file, read as it grows: its header, then complete JSON lines (a
    half-written last line waits for the rest)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._inode = os.fstat(self._fh.fileno()).st_ino
        self._rest = b""
        self.header: dict[str, object] = {}
        self.pending: list[bytes] = []  # lines read with the header, not handed out yet

    def read(self) -> list[bytes]:
        data = self._fh.read()
        if not data:
            return []
        data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        return [line for line in lines if line.strip()]

    def replaced(self) -> bool:
        """A new file took the path (the instance restarted, or the file rolled over)."""
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return False

    def close(self) -> None:
        self._fh.close()


class _Renderer:
    """Feeds asciicast events to a screen and turns what it shows into lines of text."""

    def __init__(self, header: dict[str, object]) -> None:
        from aimterm.term.screen import Screen  # (pyte: only when rendering, not for --raw)

        rows, cols = header.get("height"), header.get("width")
        self.screen = Screen(rows if isinstance(rows, int) else 24,
                             cols if isinstance(cols, int) else 80, scrollback=_SCROLLBACK)
        self._pushed = 0  # scrollback lines taken so far
        self._shown: list[str] = []  # the lines above the cursor at the last look

    def feed(self, code: str, data: str) -> None:
        if code == "o":
            self.screen.feed(data.encode("utf-8"))
        elif code == "r":
            cols, _, rows = data.partition("x")
            if cols.isdigit() and rows.isdigit():
                self.screen.resize(int(rows), int(cols))

    def scrolled(self) -> list[str]:
        """Lines that scrolled off the top since the last call."""
        out = self.screen.scrollback_since(self._pushed)
        self._pushed = self.screen.pushed
        return out

    def final(self) -> list[str]:
        """What is left: lines scrolled off since the last call, then the screen through its
        last non-blank line."""
        lines = self.screen.lines()
        while lines and not lines[-1].strip():
            lines.pop()
        return self.scrolled() + lines

    def changed(self) -> list[str]:
        """Following: the lines above the cursor that are new since the last look (scrolled
        off, appended, or redrawn in place by a full-screen tool), in screen order."""
        doc = self.scrolled() + self.screen.lines()[:self.screen.cursor[0]]
        before, self._shown = self._shown, doc[len(doc) - self.screen.cursor[0]:]
        out = []
        matcher = difflib.SequenceMatcher(None, before, doc, autojunk=False)
        for op, _, _, j1, j2 in matcher.get_opcodes():
            if op in ("insert", "replace"):
                out += [line for line in doc[j1:j2] if line.strip()]
        return out

    def look(self) -> None:
        """Following starts here: what is above the cursor now counts as shown."""
        self.scrolled()
        self._shown = self.screen.lines()[:self.screen.cursor[0]]


def _events(lines: list[bytes]) -> Iterator[tuple[str, str]]:
    for line in lines:
        try:
            _, code, data = json.loads(line)
        except (ValueError, TypeError):
            continue  # a torn or foreign line: skip it, as a player would
        if isinstance(code, str) and isinstance(data, str):
            yield code, data


def open_run(path: Path) -> Run:
    """Open a transcript and read its header (a brand-new file gets 2 s to have one)."""
    tail = Run(path)
    deadline = time.monotonic() + 2.0
    while True:
        lines = tail.read()
        if lines or time.monotonic() > deadline:
            break
        time.sleep(_POLL_S)  # a brand-new file: its header is on its way
    header: dict[str, object] = {}
    if lines:
        try:
            first = json.loads(lines[0])
        except ValueError:
            first = None
        if isinstance(first, dict):
            header = first
            lines = lines[1:]
    tail.header, tail.pending = header, lines
    return tail


def continues(run: Run) -> bool:
    """Whether this file goes on from the one before it (rolled over for size: same run)."""
    mark = run.header.get("aimterm")
    return isinstance(mark, dict) and mark.get("continued") is True


def print_run(tail: Run, *, follow: bool, raw: bool, lines: int | None, out: TextIO,
              carry: _Renderer | None = None) -> _Renderer | None:
    """Print one transcript file to ``out`` (rendered, or ``raw`` bytes to its buffer); with
    ``follow``, until the file is replaced. ``carry`` is the renderer of the file this one
    continues (following across a roll-over); the renderer is returned for the next one."""
    batch, tail.pending = tail.pending, []
    if raw:
        while True:
            out.buffer.write("".join(d for c, d in _events(batch) if c == "o").encode("utf-8"))
            out.flush()
            if not follow:
                return None
            more = _next_batch(tail)
            if more is None:
                return None
            batch = more

    if carry is not None and follow:
        return _follow(tail, carry, batch, out)
    renderer, backlog = _render(tail.header, batch, lines)
    if not follow:
        backlog.extend(renderer.final())
        out.write("".join(f"{line}\n" for line in backlog))
        out.flush()
        return renderer
    backlog.extend(renderer.scrolled())
    backlog.extend(renderer.screen.lines()[:renderer.screen.cursor[0]])
    renderer.look()
    out.write("".join(f"{line}\n" for line in backlog))
    out.flush()
    return _follow(tail, renderer, [], out)


def _render(header: dict[str, object], batch: list[bytes],
            lines: int | None) -> tuple[_Renderer, collections.deque[str]]:
    """What is there already: the history and the screen as last drawn, cut to ``lines``."""
    renderer = _Renderer(header)
    backlog: collections.deque[str] = collections.deque(maxlen=lines)
    for code, data in _events(batch):
        renderer.feed(code, data)
        if code == "o":
            backlog.extend(renderer.scrolled())
    return renderer, backlog


def rendered_lines(path: Path, lines: int | None = None) -> list[str]:
    """A transcript as ``aimterm logs`` prints it (its last ``lines``): what scrolled by,
    then the screen as last drawn. An empty list for a file that does not exist yet."""
    try:
        tail = open_run(path)
    except FileNotFoundError:
        return []
    try:
        batch, tail.pending = tail.pending + tail.read(), []
        renderer, backlog = _render(tail.header, batch, lines)
        backlog.extend(renderer.final())
        return list(backlog)
    finally:
        tail.close()


def _follow(tail: Run, renderer: _Renderer, batch: list[bytes], out: TextIO) -> _Renderer:
    """Print what changes until the file is replaced. A look at the screen waits for a quiet
    moment (or _LOOK_MAX_S while output streams), so a spinner does not print a line per
    frame."""
    last_data = last_look = time.monotonic()
    dirty = False
    while True:
        now = time.monotonic()
        if batch:
            for code, data in _events(batch):
                renderer.feed(code, data)
            last_data, dirty = now, True
        if dirty and (now - last_data >= _QUIET_S or now - last_look >= _LOOK_MAX_S):
            text = renderer.changed()
            if text:
                out.write("".join(f"{line}\n" for line in text))
                out.flush()
            last_look, dirty = now, False
        if not batch:
            time.sleep(_POLL_S)
        more = _next_batch(tail, wait=False)
        if more is None:  # replaced: what this file showed last, then the next one
            out.write("".join(f"{line}\n" for line in renderer.changed()))
            out.flush()
            return renderer
        batch = more


def _next_batch(tail: Run, wait: bool = True) -> list[bytes] | None:
    """The next complete lines of ``tail`` (waiting for some with ``wait``); None once the
    file was replaced and the old one is read to its end."""
    while True:
        batch = tail.read()
        if batch:
            return batch
        if tail.replaced():
            return tail.read() or None
        if not wait:
            return []
        time.sleep(_POLL_S)
