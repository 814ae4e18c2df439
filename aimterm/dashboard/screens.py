"""The dashboard's modal screens: the key help, and a one-line text entry (a prompt to send,
a typed answer, the event filter)."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

__all__ = ["HelpScreen", "TextPrompt"]

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
