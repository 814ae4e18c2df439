"""``aimterm demo`` and ``aimterm adapter test``: live sessions run in this process, printed
for a person: each reply, its timings, and every state change with the rule and text behind it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence

import click

from aimterm.events import Event, QuestionAnswered, QuestionPending, StateChanged
from aimterm.session import Session, Turn, TurnStatus

DEMO_PROMPTS = (
    "hello from aimterm",
    "lines 3",
    "edit notes/hello.txt: written by the demo agent",
    "edit /etc/not-allowed: nope",
)


class _Printer:
    """Prints events as they happen, with times relative to the start."""

    def __init__(self, start: float, enabled: bool = True) -> None:
        self.start = start
        self.enabled = enabled

    def __call__(self, event: Event) -> None:
        if not self.enabled:
            return
        t = f"{(event.mono - self.start) * 1000:8.1f} ms"
        if isinstance(event, StateChanged):
            cause = f" [{event.rule}]" if event.rule else ""
            text = f" {event.text!r}" if event.text else ""
            click.echo(click.style(f"  {t}  {event.old:>8} -> {event.new:<8}", fg="cyan")
                       + f" {event.reason}{cause}{text}")
        elif isinstance(event, QuestionAnswered):
            click.echo(click.style(f"  {t}  answered", fg="yellow")
                       + f" [{event.rule}] {event.question!r} with {event.keys}")
        elif isinstance(event, QuestionPending):
            click.echo(click.style(f"  {t}  question", fg="magenta") + f" {event.question!r}")


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _print_turn(turn: Turn) -> None:
    click.echo(click.style(f"reply ({turn.status}):", bold=True))
    for line in (turn.reply or "(empty)").splitlines():
        click.echo(f"  | {line}")
    click.echo(f"  submit->busy {_fmt_ms(turn.submit_to_busy_ms)}, "
               f"busy->idle {_fmt_ms(turn.busy_to_idle_ms)}, total {_fmt_ms(turn.total_ms)}"
               + (f", retries {turn.retries}" if turn.retries else ""))
    if turn.metrics:
        click.echo("  metrics " + json.dumps(turn.metrics))


def run_demo(adapter_name: str, *, think: float, cast: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="aimterm-demo-") as work:
        env = {"AIMTERM_DEMO_THINK": str(think), "AIMTERM_DEMO_HOME": os.path.join(work, "home")}
        start = time.monotonic()
        session = Session(adapter_name, cwd=work, env=env, transcript=cast)
        printer = _Printer(start)
        session.subscribe(printer)
        click.echo(click.style(f"starting {session.id}: {' '.join(session.command())}",
                               bold=True))
        with session:
            click.echo(f"ready in {(time.monotonic() - start) * 1000:.0f} ms "
                       f"(pid {session.pid})\n")
            for prompt in DEMO_PROMPTS if adapter_name == "demo" else ("hello",):
                click.echo(click.style(f"> {prompt}", fg="green", bold=True))
                turn = session.send(prompt, timeout=60)
                if turn.status is TurnStatus.WAITING:
                    click.echo(f"  the tool asks {turn.question!r}; no rule answers it, "
                               "so the demo answers 'n' through the API")
                    session.answer("n")
                    turn = session.wait_turn(timeout=60)
                _print_turn(turn)
                click.echo()
            written = os.path.join(work, "notes", "hello.txt")
            if os.path.exists(written):
                with open(written, encoding="utf-8") as fh:
                    click.echo(f"the edit really happened: notes/hello.txt = {fh.read()!r}")
            click.echo("stopping ...")
        click.echo(f"done: {session.turns_done} turns, state {session.state}")


def run_adapter_test(name: str, prompts: Sequence[str], *, cwd: str | None,
                     timeout: float | None, cast: str | None, as_json: bool) -> int:
    start = time.monotonic()
    session = Session(name, cwd=cwd, transcript=cast)
    events: list[Event] = []
    session.subscribe(events.append)
    session.subscribe(_Printer(start, enabled=not as_json))
    turns: list[Turn] = []
    failed = 0
    with session:
        if not as_json:
            click.echo(f"ready in {(time.monotonic() - start) * 1000:.0f} ms "
                       f"(pid {session.pid}, state {session.state})")
        for prompt in prompts:
            if not as_json:
                click.echo(click.style(f"> {prompt}", bold=True))
            turn = session.send(prompt, timeout=timeout)
            turns.append(turn)
            if turn.status is not TurnStatus.DONE:
                failed += 1
            if not as_json:
                _print_turn(turn)
                if turn.status is TurnStatus.WAITING:
                    click.echo(f"  waiting on a question no rule answers: {turn.question!r}")
                    break
    if as_json:
        click.echo(json.dumps({"adapter": name, "turns": [t.to_dict() for t in turns],
                               "events": [e.to_dict() for e in events]}, indent=2))
    return 1 if failed else 0
