"""The fleet table: every instance, one row each, grouped by what it needs (attention first).

A line-drawing widget of its own rather than Textual's DataTable: a busy fleet changes a
state cell of most rows ten times a second, and DataTable drops every cached cell on any
change, parsing and laying out each visible cell again — most of the dashboard's time at a
hundred instances. Here a cell's markup is parsed once (the same few words come back:
``busy``, ``idle``, ``0``), a row is drawn again only when one of its cells changed, and
only the rows that changed are sent to the screen.
"""

from __future__ import annotations

import time

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.markup import escape
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from aimterm.dashboard.model import FleetView, Group, InstanceView

__all__ = ["ATTENTION", "COLUMNS", "FleetTable", "REORDER_S"]

#: The colour of each group's label in the fleet table.
GROUP_COLOUR = {Group.NEEDS_ANSWER: "magenta", Group.FAILED: "red", Group.WORKING: "yellow",
                Group.IDLE: "green"}
COLUMNS = ("group", "instance", "tool", "state", "turn", "branch or folder", "restarts",
           "cpu", "mem")
#: The groups whose members are put first at once; the others are reordered at most every
#: REORDER_S seconds.
ATTENTION = frozenset({Group.NEEDS_ANSWER, Group.FAILED})
REORDER_S = 1.0
#: Spaces between columns.
GAP = 2


class FleetTable(ScrollView, can_focus=False):
    """Rows of markup cells under a header that stays put. It takes no focus: the app's keys
    move the selection (:meth:`select`), so a redraw never moves it by itself."""

    COMPONENT_CLASSES = {"fleet-table--header", "fleet-table--cursor"}
    DEFAULT_CSS = """
    FleetTable > .fleet-table--header { text-style: bold; color: $foreground; }
    FleetTable > .fleet-table--cursor {
        background: $block-cursor-blurred-background; text-style: bold;
    }
    """

    class Picked(Message):
        """A person clicked the row of ``instance``."""

        def __init__(self, instance: str) -> None:
            super().__init__()
            self.instance = instance

    class Reorder(Message):
        """The rows are due to be put in order again: the app draws the fleet."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._order: list[str] = []
        self._shown: list[list[str]] = []  # each row's cells (markup), as drawn
        self._cursor: int | None = None
        self._widths = [len(name) for name in COLUMNS]
        self._attention: dict[str, Group] = {}  # who needed a person at the last reorder
        self._ordered_at = float("-inf")
        self._reorder_pending = False
        self._cells_cache: LRUCache[str, tuple[list[Segment], int]] = LRUCache(4096)
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(1024)

    # -- what is shown -----------------------------------------------------------------------

    def show(self, view: FleetView, now: float, selected: str | None) -> None:
        """Redraw from ``view``, keeping the cursor on ``selected`` if it is still there.

        Rows are put in order again only when an instance comes to need a person (or goes,
        or joins), or at most every :data:`REORDER_S`: in a busy fleet instances move
        between working and idle many times a second, and rows that jump under the eye help
        nobody. Meanwhile each row stays where it is, its state cell saying where its
        instance is now."""
        rows: list[tuple[str, list[str]]] = []
        attention: dict[str, Group] = {}
        for group, members in view.grouped():
            label = _styled(f"{group.value} ({len(members)})", f"bold {GROUP_COLOUR[group]}")
            for i, inst in enumerate(members):
                rows.append((inst.id, [label if i == 0 else "", *self._cells(inst, now)]))
                if group in ATTENTION:
                    attention[inst.id] = group
        order = [iid for iid, _ in rows]
        if order != self._order and (
                attention != self._attention or set(order) != set(self._order)
                or time.monotonic() - self._ordered_at >= REORDER_S):
            self._attention, self._ordered_at = attention, time.monotonic()
            self._set_rows(order, [cells for _, cells in rows])
        elif order != self._order:  # the order of the last time: the group labels stay too
            by_id = dict(rows)
            self._set_rows(self._order, [[old[0], *by_id[iid][1:]]
                                         for iid, old in zip(self._order, self._shown,
                                                             strict=True)])
            if not self._reorder_pending:  # and the order comes when it is due
                self._reorder_pending = True
                self.set_timer(max(0.0, self._ordered_at + REORDER_S - time.monotonic()),
                               self._reorder_due)
        else:
            self._set_rows(order, [cells for _, cells in rows])
        self.select(selected)

    def _reorder_due(self) -> None:
        self._reorder_pending = False
        self.post_message(self.Reorder())

    def _set_rows(self, order: list[str], shown: list[list[str]]) -> None:
        widths = [len(name) for name in COLUMNS]
        for cells in shown:
            for column, cell in enumerate(cells):
                widths[column] = max(widths[column], self._parsed(cell)[1])
        old_order, old_shown = self._order, self._shown
        if self._cursor is not None and self._cursor < len(old_order):
            keep = old_order[self._cursor]
            self._cursor = order.index(keep) if keep in order else None
        self._order, self._shown = order, shown
        if widths != self._widths or len(order) != len(old_order):
            self._widths = widths
            self.virtual_size = Size(sum(widths) + GAP * (len(widths) - 1), len(order) + 1)
            self.refresh()
            return
        for i, (iid, cells) in enumerate(zip(order, shown, strict=True)):
            if iid != old_order[i] or cells != old_shown[i]:
                self.refresh_lines(i + 1)

    @staticmethod
    def _cells(inst: InstanceView, now: float) -> list[str]:
        return [escape(inst.id), escape(inst.tool),
                _styled(inst.state.value, f"bold {inst.colour}"),
                inst.turn_time(now),
                escape(inst.branch) if inst.branch else escape(_short_path(inst.cwd)),
                _styled(str(inst.restarts), "red") if inst.restarts else "0",
                *inst.usage_text()]

    # -- the cursor --------------------------------------------------------------------------

    @property
    def order(self) -> list[str]:
        """The instances as their rows stand, top to bottom."""
        return list(self._order)

    @property
    def selected(self) -> str | None:
        return self._order[self._cursor] if self._cursor is not None else None

    @property
    def row_count(self) -> int:
        return len(self._order)

    def get_row_at(self, row: int) -> list[str]:
        """The cells of a row as drawn (markup)."""
        return list(self._shown[row])

    def select(self, iid: str | None) -> None:
        """Move the cursor to ``iid``'s row and scroll it into view."""
        if iid not in self._order:
            return
        new = self._order.index(iid)
        old, self._cursor = self._cursor, new
        if old != new:
            if old is not None:
                self.refresh_lines(old + 1)
            self.refresh_lines(new + 1)
        top, rows = int(self.scroll_offset.y), max(1, self.size.height - 1)
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + rows:
            self.scroll_to(y=new - rows + 1, animate=False)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        row = int(self.scroll_offset.y) + offset.y - 1
        if 0 <= row < len(self._order):
            self.select(self._order[row])
            self.post_message(self.Picked(self._order[row]))

    # -- drawing -----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        left = int(self.scroll_offset.x)
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("fleet-table--header")
            return self._strip(tuple(escape(name) for name in COLUMNS), base + header, left,
                               width)
        row = int(self.scroll_offset.y) + y - 1
        if not 0 <= row < len(self._order):
            return Strip.blank(width, base)
        style = base
        if row == self._cursor:
            style = base + self.get_component_rich_style("fleet-table--cursor")
        return self._strip(tuple(self._shown[row]), style, left, width)

    def _strip(self, cells: tuple[str, ...], style: Style, left: int, width: int) -> Strip:
        key = (cells, style, left, width, tuple(self._widths))
        hit = self._strips.get(key)
        if hit is not None:
            return hit
        segments: list[Segment] = []
        for column, cell in enumerate(cells):
            parsed, length = self._parsed(cell)
            segments.extend(Segment(s.text, style + s.style if s.style else style)
                            for s in parsed)
            pad = self._widths[column] - length + (GAP if column < len(cells) - 1 else 0)
            segments.append(Segment(" " * pad, style))
        strip = Strip(segments).crop_extend(left, left + width, style)
        self._strips[key] = strip
        return strip

    def _parsed(self, markup: str) -> tuple[list[Segment], int]:
        """A cell's segments and width. Rich's markup, as the tables of Textual draw it: its
        plain colour names are the terminal's, which the theme then maps."""
        hit = self._cells_cache.get(markup)
        if hit is None:
            text = Text.from_markup(markup, end="")
            hit = (list(text.render(self.app.console)), text.cell_len)
            self._cells_cache[markup] = hit
        return hit

    def on_resize(self, _event: events.Resize) -> None:
        self.refresh()


def _styled(text: str, style: str) -> str:
    return f"[{style}]{escape(text)}[/]"


def _short_path(path: str | None, most: int = 32) -> str:
    if not path:
        return "-"
    return path if len(path) <= most else "…" + path[-(most - 1):]
