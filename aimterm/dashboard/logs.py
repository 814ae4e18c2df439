"""The log viewer: one instance's terminal as text (what scrolled by, then its screen), as
``aimterm logs`` renders it — followed, searched, filtered, exported to a file.

What it shows comes from the daemon's ``logs`` op each time (nothing is kept but the last
reply); following fetches again when the instance's events say its screen moved, at most
every :data:`FOLLOW_EVERY_S`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Label, RichLog

from aimterm.dashboard.screens import TextPrompt
from aimterm.dashboard.source import Source
from aimterm.errors import AimtermError

__all__ = ["LogScreen", "export_name", "matching"]

#: Lines fetched (the daemon's bound is higher; a view needs no more).
LOG_LINES = 5000
FOLLOW_EVERY_S = 1.0


def matching(lines: list[str], needle: str) -> list[int]:
    """Indexes of the lines holding ``needle`` (case-insensitive); none for an empty one."""
    if not needle:
        return []
    low = needle.lower()
    return [i for i, line in enumerate(lines) if low in line.lower()]


def export_name(instance: str, when: float) -> str:
    """The file an export writes, in the current folder: ``aimterm-ID-YYYYmmdd-HHMMSS.log``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in instance)
    return f"aimterm-{safe}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}.log"


class LogScreen(Screen[None]):
    """The log of ``instance``. Keys: ``/`` search (``n``/``N`` next/previous match), ``f``
    filter (only matching lines), ``F`` follow on/off, ``e`` export, ``r`` fetch again,
    escape or ``q`` back."""

    BINDINGS = [
        Binding("escape,q", "close", "back"),
        Binding("slash", "search", "search"),
        Binding("n", "next_match(1)", "next"),
        Binding("N", "next_match(-1)", "previous", show=False),
        Binding("f", "filter", "filter"),
        Binding("F", "toggle_follow", "follow"),
        Binding("e", "export", "export"),
        Binding("r", "refresh", "refresh", show=False),
    ]
    DEFAULT_CSS = """
    LogScreen > #log-title { height: 1; background: $accent; color: $text; padding: 0 1; }
    LogScreen > #log-note { height: 1; color: $text-muted; padding: 0 1; }
    LogScreen > RichLog { height: 1fr; }
    """

    def __init__(self, source: Source, instance: str, *,
                 clock: Callable[[], float] = time.time, export_dir: Path | None = None) -> None:
        super().__init__()
        self.source, self.instance = source, instance
        self.lines: list[str] = []
        self.search = ""
        self.filter = ""
        self.follow = True
        self.exported: Path | None = None
        self._clock = clock
        self._export_dir = export_dir or Path.cwd()
        self._fetched_at = 0.0
        self._match = -1

    def compose(self) -> ComposeResult:
        yield Label("", id="log-title")
        yield RichLog(wrap=False, markup=False, highlight=False, id="log")
        yield Label("", id="log-note")
        yield Footer()

    def on_mount(self) -> None:
        self.fetch()

    # -- the daemon's side ---------------------------------------------------------------------

    @work(exclusive=True, group="log-fetch")
    async def fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            self.lines = await self.source.logs(self.instance, LOG_LINES)
        except AimtermError as exc:
            self.note(f"cannot read the log: {exc}")
            return
        self.redraw(keep_place=True)

    def instance_moved(self) -> None:
        """The app saw an event of this instance: fetch again if following (throttled)."""
        if self.follow and time.monotonic() - self._fetched_at >= FOLLOW_EVERY_S:
            self.fetch()

    # -- drawing -------------------------------------------------------------------------------

    def shown(self) -> list[str]:
        """The lines on view: all, or only those matching the filter."""
        if not self.filter:
            return list(self.lines)
        return [self.lines[i] for i in matching(self.lines, self.filter)]

    def redraw(self, keep_place: bool = False) -> None:
        log = self.query_one(RichLog)
        at_end = log.scroll_offset.y >= log.max_scroll_y - 1
        y = log.scroll_offset.y
        log.clear()
        pattern = re.compile(re.escape(self.search), re.IGNORECASE) if self.search else None
        for line in self.shown():
            text = Content(line)
            if pattern is not None:
                text = text.highlight_regex(pattern, style="reverse yellow")
            log.write(text)
        if keep_place and not (self.follow and at_end):
            log.scroll_to(y=y, animate=False)
        elif self.follow:
            log.scroll_end(animate=False)
        parts = [f"log of {self.instance}", f"{len(self.lines)} lines"]
        if self.filter:
            parts.append(f"filter {self.filter!r}: {len(self.shown())} shown")
        if self.search:
            parts.append(f"search {self.search!r}: {len(matching(self.shown(), self.search))}")
        parts.append("following" if self.follow else "not following")
        self.query_one("#log-title", Label).update(" · ".join(parts))

    def note(self, text: str) -> None:
        self.query_one("#log-note", Label).update(text)

    # -- keys ----------------------------------------------------------------------------------

    def action_close(self) -> None:
        self.dismiss(None)

    def action_refresh(self) -> None:
        self.fetch()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        self.redraw(keep_place=True)
        if self.follow:
            self.fetch()

    def action_search(self) -> None:
        def done(value: str | None) -> None:
            if value is not None:
                self.search, self._match = value, -1
                self.redraw(keep_place=True)
                self.action_next_match(1)

        self.app.push_screen(TextPrompt("search the log", "text (case does not matter)",
                                        self.search), done)

    def action_filter(self) -> None:
        def done(value: str | None) -> None:
            if value is not None:
                self.filter = value
                self.redraw()

        self.app.push_screen(TextPrompt("show only lines with", "text (empty: every line)",
                                        self.filter), done)

    def action_next_match(self, step: int) -> None:
        hits = matching(self.shown(), self.search)
        if not hits:
            self.note(f"no line holds {self.search!r}" if self.search else "search first (/)")
            return
        self._match = (self._match + step) % len(hits)
        self.follow = False  # a person reading a match does not want to be pulled away
        self.query_one(RichLog).scroll_to(y=hits[self._match], animate=False)
        self.note(f"match {self._match + 1} of {len(hits)}: line {hits[self._match] + 1}")

    def action_export(self) -> None:
        """Write what is on view (filtered, if so) to a file in the current folder."""
        path = self._export_dir / export_name(self.instance, self._clock())
        try:
            path.write_text("".join(f"{line}\n" for line in self.shown()), encoding="utf-8")
        except OSError as exc:
            self.note(f"cannot export: {exc}")
            return
        self.exported = path
        self.note(f"exported {len(self.shown())} lines to {path}")
