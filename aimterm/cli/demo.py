"""``aimterm demo`` and ``aimterm adapter test``: live sessions run in this process, printed
for a person: each reply, its timings, and every state change with the rule and text behind it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import click

from aimterm.events import Event, QuestionAnswered, QuestionPending, StateChanged
from aimterm.session import Session, Turn, TurnStatus

FLEET_PROMPTS = (
    "summarise the README",
    "lines 3",
    "edit notes/todo.txt: ship the fleet demo",
    "explain the router",
    "edit notes/owner.txt: the platform team",
    "list the open issues",
    "lines 2",
    "edit /etc/motd: not in the working tree",
    "review the pool controller",
    "edit notes/changelog.txt: pool and router landed",
    "describe the state machine",
    "what changed since yesterday",
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


def run_demo(adapter_name: str, *, count: int, think: float, cast: str | None,
             prompts: Sequence[str] = FLEET_PROMPTS) -> int:
    """Start ``count`` instances, route a batch of prompts over them with a live display,
    print each reply with its instance and timings, then a summary; stop cleanly on Ctrl-C."""
    from aimterm.cluster import ClusterManager
    from aimterm.pool import GroupSpec

    with tempfile.TemporaryDirectory(prefix="aimterm-demo-") as work:
        env = {"AIMTERM_DEMO_THINK": str(think), "AIMTERM_DEMO_HOME": os.path.join(work, "home")}
        group = GroupSpec(adapter_name, count=count, cwd=work, env=env,
                          transcript_dir=cast)
        cluster = ClusterManager([group])
        display = _FleetDisplay(cluster, len(prompts))
        cluster.subscribe(display.on_event)
        click.echo(click.style(f"starting {count} × {adapter_name} in {work}", bold=True))
        start = time.monotonic()
        try:
            with cluster:
                ready = time.monotonic() - start
                click.echo(f"all {count} ready in {ready * 1000:.0f} ms\n")
                t0 = time.monotonic()
                futures = [cluster.submit(p) for p in prompts]
                display.run(futures)
                wall = time.monotonic() - t0
                turns = [f.result() for f in futures if f.exception() is None]
                _summary(display, turns, len(prompts), wall, work)
                click.echo("stopping ...")
        except KeyboardInterrupt:
            display.close()
            click.echo("\ninterrupted: the fleet was shut down cleanly", err=True)
            return 130
        click.echo(f"done: {len(turns)}/{len(prompts)} prompts answered; every instance stopped")
        return 0 if len(turns) == len(prompts) else 1


class _FleetDisplay:
    """Per-instance state and done/total, redrawn in place on a terminal (plain lines
    otherwise); replies are printed above it as they arrive."""

    def __init__(self, cluster: Any, total: int) -> None:
        self.cluster = cluster
        self.total = total
        self.done = 0
        self.tty = sys.stdout.isatty()
        self.drawn = 0
        self.questions: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        if isinstance(event, QuestionPending):
            with self._lock:
                self.questions.append((event.instance, event.question))

    def run(self, futures: list[Any]) -> None:
        pending = set(range(len(futures)))
        while pending:
            self._answer_questions()
            for i in sorted(pending):
                if futures[i].done():
                    pending.discard(i)
                    self.done += 1
                    self._print_result(futures[i])
            self._draw()
            if pending:
                concurrent.futures.wait([futures[i] for i in pending], timeout=0.1,
                                        return_when=concurrent.futures.FIRST_COMPLETED)
        self.close()

    def _answer_questions(self) -> None:
        with self._lock:
            asked, self.questions = self.questions, []
        for instance, question in asked:
            self._clear()
            click.echo(click.style(f"[{instance}] asks {question!r}", fg="magenta")
                       + " — no rule answers it; the demo answers 'n' through the API")
            self.cluster.answer(instance, "n")

    def _print_result(self, future: Any) -> None:
        self._clear()
        error = future.exception()
        if error is not None:
            click.echo(click.style(f"error: {error}", fg="red"))
            return
        turn = future.result()
        click.echo(click.style(f"[{turn.instance}] > {turn.prompt}", fg="green", bold=True))
        for line in (turn.reply or "(empty)").splitlines():
            click.echo(f"    | {line}")
        extra = f", answered {', '.join(a.rule for a in turn.answered)}" if turn.answered else ""
        click.echo(f"    submit->busy {_fmt_ms(turn.submit_to_busy_ms)}, "
                   f"busy->idle {_fmt_ms(turn.busy_to_idle_ms)}{extra}")

    def _draw(self) -> None:
        rows = self.cluster.get_status()
        if not self.tty:
            return
        self._clear()
        lines = [click.style(f"progress {self.done}/{self.total}", bold=True)]
        for row in rows:
            prompt = f"  {row['prompt']}" if row.get("prompt") else ""
            lines.append(f"  {row['id']:<10} {row['state']:<8} turns {row['turns']:<3}{prompt}")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        self.drawn = len(lines)

    def _clear(self) -> None:
        if self.tty and self.drawn:
            sys.stdout.write(f"\x1b[{self.drawn}F\x1b[J")
            sys.stdout.flush()
            self.drawn = 0

    def close(self) -> None:
        self._clear()


def _summary(display: _FleetDisplay, turns: list[Turn], total: int, wall: float,
             work: str) -> None:
    serial = sum((t.total_ms or 0.0) for t in turns) / 1000.0
    per = Counter(t.instance for t in turns)
    click.echo()
    click.echo(click.style("summary", bold=True))
    click.echo(f"  {len(turns)}/{total} prompts in {wall:.2f} s: "
               f"{len(turns) / wall if wall else 0:.2f} prompts/s")
    click.echo(f"  one instance would have needed ~{serial:.2f} s: "
               f"speedup {serial / wall if wall else 0:.2f}× with {len(per)} instances")
    click.echo("  per instance: " + ", ".join(f"{k} {v}" for k, v in sorted(per.items())))
    notes = os.path.join(work, "notes")
    if os.path.isdir(notes):
        files = sorted(os.listdir(notes))
        click.echo(f"  files really written by the agents: {', '.join(files)}")


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


def run_record(name: str, output: str, prompts: Sequence[str], *, cwd: str | None,
               timeout: float | None) -> int:
    start = time.monotonic()
    session = Session(name, cwd=cwd, transcript=output)
    session.subscribe(_Printer(start))
    failed = 0
    with session:
        if prompts:
            for prompt in prompts:
                click.echo(click.style(f"> {prompt}", bold=True))
                turn = session.send(prompt, timeout=timeout)
                _print_turn(turn)
                if turn.status is not TurnStatus.DONE:
                    failed += 1
                    break
        else:
            from aimterm.cli.local_attach import attach_local

            click.echo("recording: you have the keyboard; Ctrl-] ends the recording")
            attach_local(session, hold=False)
    click.echo(f"saved {output}")
    return 1 if failed else 0


def run_explain(recording: str, adapter_name: str, *, as_json: bool, strict: bool) -> int:
    from aimterm.adapter.registry import load_adapter
    from aimterm.adapter.replay import explain_file

    result = explain_file(load_adapter(adapter_name), recording)
    if as_json:
        click.echo(json.dumps({
            "adapter": result.adapter, "duration_s": result.duration, "turns": result.turns,
            "changes": [vars(c) for c in result.changes],
            "answered": [{"t": t, "rule": r, "question": q} for t, r, q in result.answered],
            "flags": [vars(f) for f in result.flags]}, indent=2, ensure_ascii=False))
    else:
        click.echo(f"{recording}: {result.duration:.2f} s, {result.turns} turn(s), "
                   f"replayed through {result.adapter}")
        for t, rule, question in result.answered:
            click.echo(click.style(f"  {t * 1000:9.1f} ms  answered", fg="yellow")
                       + f" [{rule}] {question!r}")
        for c in result.changes:
            cause = f" [{c.rule}]" if c.rule else ""
            text = f" {c.text!r}" if c.text else ""
            click.echo(click.style(f"  {c.t * 1000:9.1f} ms  {c.old:>8} -> {c.new:<8}",
                                   fg="cyan") + f" {c.reason}{cause}{text}")
        for f in result.flags:
            click.echo(click.style(f"  {f.t * 1000:9.1f} ms  FLAG {f.kind}", fg="red")
                       + f": {f.detail}")
        if not result.flags:
            click.echo("  nothing suspicious")
    return 1 if strict and result.flags else 0
