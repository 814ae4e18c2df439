"""The dashboard's panels. Each draws a part of a :class:`~aimterm.dashboard.model.FleetView`
it is handed; none keeps data of its own beyond what it shows."""

from __future__ import annotations

from textual import events
from textual.content import Content
from textual.widgets import RichLog, Static

from aimterm.dashboard.model import (
    EventFilter,
    FleetView,
    InstanceView,
    event_colour,
    event_summary,
)
from aimterm.dashboard.plan import PlanView
from aimterm.states import State

__all__ = ["ApprovalPanel", "Banner", "EventPanel", "MetricsBar", "PlanPanel", "ScreenPreview",
           "fit_screen"]



def fit_screen(lines: list[str], height: int) -> list[str]:
    """A screen cut to ``height`` rows the way a person reads it: the blank rows under it
    dropped; if still too tall, runs of blank rows kept as one (a full-screen tool draws its
    prompt at the bottom and its conversation at the top); then the bottom rows."""
    lines = list(lines)
    while lines and not lines[-1].strip():
        lines.pop()
    if height <= 0 or len(lines) <= height:
        return lines
    squeezed: list[str] = []
    for line in lines:
        if line.strip() or not squeezed or squeezed[-1].strip():
            squeezed.append(line)
    return squeezed[-height:]


class ScreenPreview(Static):
    """The selected instance's rendered screen, as the daemon's ``screen`` op gives it, fitted
    to the panel (lines are clipped, not wrapped: it is a terminal's screen)."""

    DEFAULT_CSS = "ScreenPreview { text-wrap: nowrap; text-overflow: clip; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[str] | None = None

    def show(self, instance: str | None, reply: dict[str, object] | None,
             note: str | None = None, state: str | None = None) -> None:
        """Draw ``reply`` (the ``screen`` op's), or ``note`` in its place; the title names
        the instance and its state (the reply's, else ``state``, the fleet's word on it)."""
        self._lines = None
        if instance is None:
            self.border_title = "screen"
            self.update(Content.styled("no instance selected", "dim"))
            return
        shown = reply.get("state") if reply else state
        self.border_title = f"screen · {instance}" + (f" ({shown})" if shown else "")
        if note is not None:
            self.update(Content.styled(note, "dim"))
            return
        raw = reply.get("lines") if reply else None
        self._lines = [str(x) for x in raw] if isinstance(raw, list) else []
        self._fit()

    def on_resize(self, event: events.Resize) -> None:
        if self._lines is not None:
            self._fit()

    def _fit(self) -> None:
        assert self._lines is not None
        self.update(Content("\n".join(fit_screen(self._lines, self.content_size.height))))


class ApprovalPanel(Static):
    """What the selected instance asks when it is WAITING, and the keys that answer it; when
    it is not, which others wait (hidden when none does)."""

    def show(self, inst: InstanceView | None, waiting: list[str], approve: list[str],
             reject: list[str]) -> None:
        self.border_title = "approval"
        if inst is not None and inst.state is State.WAITING:
            self.display = True
            self.update(Content.assemble(
                (f"{inst.id} asks: ", "bold magenta"),
                inst.question or "(the question is on its screen)",
                "\n", (f"y approve ({' '.join(approve)})  ·  n reject ({' '.join(reject)})  ·  "
                       "a type an answer", "dim")))
        elif waiting:
            self.display = True
            self.update(Content.assemble(
                (f"waiting for an answer: {', '.join(waiting)}", "bold magenta"),
                ("  ·  w selects the next", "dim")))
        else:
            self.display = False
            self.update(Content(""))


#: The fewest event lines a burst writes (more when the panel is taller: as many as it shows).
BURST_LINES = 12


class EventPanel(RichLog):
    """The event stream, colour-coded, through the current :class:`EventFilter`. No focus
    (the mouse scrolls it), or it would take the arrow keys from the fleet."""

    can_focus = False

    def replay(self, view: FleetView, flt: EventFilter) -> None:
        self.clear()
        for event in view.filtered(flt)[-self._keep():]:
            self.add(event)
        self.border_title = f"events · {flt.describe()}" if flt else "events"

    def add(self, event: dict[str, object]) -> None:
        self.write(Content.styled(event_summary(event), event_colour(event)))

    def add_many(self, events: list[dict[str, object]]) -> None:
        """Events that came since the last redraw, written together. A burst of more than
        :data:`BURST_LINES` shows its newest and says how many it passed over: at thousands
        a second nobody reads them line by line, and each line written costs the app time
        the keys need (the filter, ``/``, narrows the stream; replaying it shows all kept)."""
        most = max(BURST_LINES, self.size.height - 1)
        skipped = len(events) - most
        if skipped > 0:
            self.write(Content.styled(f"… {skipped} more events (narrow them with /)", "dim"))
        for event in events[-most:]:
            self.add(event)

    def _keep(self) -> int:
        return self.max_lines or 1000


class Banner(Static):
    """One line about the connection: hidden while connected."""

    def show(self, message: str | None) -> None:
        self.display = message is not None
        self.update(Content.styled(message or "", "bold white on dark_red"))


class MetricsBar(Static):
    """One line of counts over the daemon's life: turns, their mean time, prompts in flight."""

    def show(self, view: FleetView | None) -> None:
        self.display = view is not None
        self.update(Content.styled(view.metrics.summary() if view is not None else "", "dim"))


class PlanPanel(Static):
    """The newest plan run of the daemon: its steps by level, in their states' colours."""

    DEFAULT_CSS = "PlanPanel { text-wrap: nowrap; text-overflow: ellipsis; }"

    def show(self, plan: PlanView | None, note: str | None = None) -> None:
        if plan is None:
            self.border_title = "plan"
            self.update(Content.styled(note or "", "dim"))
            return
        self.border_title = f"plan {plan.plan_id} ({plan.finished or 'running'})"
        counts = ", ".join(f"{n} {state}" for state, n in sorted(plan.counts().items()))
        parts: list[Content | str | tuple[str, str]] = [(f"run {plan.run_id} · {counts}", "dim")]
        width = max((len(sid) for sid in plan.steps), default=0)
        for i, level in enumerate(plan.levels()):
            for j, step in enumerate(level):
                parts.append("\n")
                parts.append((f"{'L' + str(i) if j == 0 else '':<4}", "dim"))
                mark = "▶" if step.state in ("running", "merging") else "●"
                parts.append((f"{mark} {step.id:<{width}}  {step.state:<11}",
                               f"bold {step.colour}" + (" reverse" if mark == "▶" else "")))
                where = step.instance or step.tool
                after = f"  ← {', '.join(step.depends_on)}" if step.depends_on else ""
                parts.append(f" {where}{after}")
                if step.collides:
                    parts.append((f"  ⚠ collides with {', '.join(step.collides)}",
                                  "bold red"))
                if step.reason:
                    parts.append((f"  {step.reason}", "dim"))
        self.update(Content.assemble(*parts))
