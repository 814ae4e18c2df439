"""The dashboard's screens over the main one: the key help, a one-line text entry (a prompt
to send, a typed answer, the event filter), and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Sparkline, Static

from aimterm.dashboard.metrics import Metrics

__all__ = ["HelpScreen", "MetricsScreen", "TextPrompt"]

_MODAL_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 80%; max-width: 100; height: auto; border: thick $accent;
    background: $surface; padding: 1 2; }}
"""


class HelpScreen(ModalScreen[None]):
    """Every key of the dashboard and what it does; any of escape, q, ? closes it."""

    DEFAULT_CSS = _MODAL_CSS.format(name="HelpScreen")
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        super().__init__()
        self._keys = list(keys)

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self._keys), default=0) + 2
        table = Content("\n").join(
            Content.assemble((f"{key:<{width}}", "bold cyan"), what) for key, what in self._keys)
        with Vertical():
            yield Label("[b]aimterm dashboard — keys[/b]")
            yield Static(table, id="help-keys")
            yield Label("[dim]escape closes this help[/dim]")


class TextPrompt(ModalScreen[str | None]):
    """One line of text: Enter gives it (perhaps empty), escape gives None."""

    DEFAULT_CSS = _MODAL_CSS.format(name="TextPrompt")
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, hint: str = "", value: str = "") -> None:
        super().__init__()
        self._title = title
        self._hint = hint
        self._value = value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self._title, id="prompt-title")
            yield Input(value=self._value, placeholder=self._hint, id="prompt-input")
            yield Label("[dim]enter to confirm · escape to cancel[/dim]")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class MetricsScreen(Screen[None]):
    """The metrics at length: the counts, turn time p50/p95 by tool, tokens and cost, and
    a chart of turns ended per 10 s over the last 5 minutes. Redrawn every second from the
    app's view (``metrics`` gives its current one: a reconnect makes a new view); nothing
    is fetched for it."""

    BINDINGS = [Binding("escape,q,m", "dismiss", "back")]
    DEFAULT_CSS = """
    MetricsScreen { padding: 1 2; }
    MetricsScreen > #metrics-counts { height: auto; margin-bottom: 1; }
    MetricsScreen > DataTable { height: auto; max-height: 20; margin-bottom: 1; }
    MetricsScreen > Sparkline { height: 4; margin-bottom: 1; }
    """

    def __init__(self, metrics: Callable[[], Metrics], clock: Callable[[], float]) -> None:
        super().__init__()
        self._metrics, self._clock = metrics, clock

    def compose(self) -> ComposeResult:
        yield Label("[b]metrics[/b] (the events read since the dashboard connected)")
        yield Static("", id="metrics-counts")
        table: DataTable[str] = DataTable(id="metrics-tools", cursor_type="none")
        table.add_columns("tool", "turns done", "p50", "p95")
        yield table
        yield Label("turns ended per 10 s, the last 5 minutes (newest on the right)")
        yield Sparkline([], id="metrics-rate")
        yield Footer()

    def on_mount(self) -> None:
        self.redraw()
        self.set_interval(1.0, self.redraw)

    def redraw(self) -> None:
        m = self._metrics()
        tokens = ", ".join(f"{n} {kind}" for kind, n in sorted(m.tokens.items())) or "none read"
        self.query_one("#metrics-counts", Static).update(
            f"{m.summary()}\ntokens: {tokens}   cost: ${m.cost_usd:.4f}\n"
            f"jobs and plan steps: {m.tasks_completed} succeeded, {m.tasks_failed} failed, "
            f"{m.tasks_running} running")
        table = self.query_one("#metrics-tools", DataTable)
        table.clear()
        for tool, n, p50, p95 in m.by_tool():
            table.add_row(tool, str(n), _secs(p50), _secs(p95))
        self.query_one("#metrics-rate", Sparkline).data = m.rate(self._clock())


def _secs(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}s"
