"""``aimterm adapter doctor TOOL``: does this adapter still drive the installed tool?

It finds the tool's command, asks it its version (and whether the adapter was verified with
that one), then runs one live turn against a fake model it starts itself on 127.0.0.1, in a
throwaway HOME and working folder: the start-up dialogs answered, ready, busy, idle, whether
the reply is the model's text exactly (and from the tool's record or the screen), and a
clean quit. Each check prints as it completes; the verdict is ``ok``, ``warn`` (it works,
but something is off: an unverified version, a reply that is not exact) or ``fail``. A user
learns in seconds whether an upgrade of the tool broke something.

Tools without a known offline setup (anything but aider, Claude Code, Codex CLI and Gemini
CLI) get the checks that need no model: found, version, start-up and quit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from aimterm.adapter.registry import load_adapter
from aimterm.adapter.spec import AdapterSpec
from aimterm.errors import AimtermError
from aimterm.events import Event, QuestionAnswered
from aimterm.session import Session, TurnStatus
from aimterm.testing.clis import path_with_clis
from aimterm.testing.fakemodel import FakeModel
from aimterm.testing.offline import CLAUDE_FOREIGN_ENV, CLIS, git_workdir, offline_env

__all__ = ["PROMPT", "REPLY", "run_doctor"]

PROMPT = "aimterm doctor: please answer with the check text"
#: What the fake model answers: markdown a TUI renders (backticks, bold), quotes, non-Latin
#: scripts and a line long enough to wrap at 80 columns — a reply is exact only if none of
#: that was lost.
REPLY = ('Doctor check: `aimterm` reads this reply **exactly**, "quotes" and all, with '
         "Unicode — héllo, привет, 你好 — and a line long enough to wrap on a terminal of "
         "eighty columns.\n\nA second paragraph, to be kept apart from the first.")
_VERSION = re.compile(r"\d+(?:\.\d+)+")
_MARK = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Report:
    adapter: str
    checks: list[Check] = field(default_factory=list)
    command: str | None = None
    version: str | None = None
    verified: list[str] = field(default_factory=list)
    turn: dict[str, Any] | None = None
    on_check: Callable[[Check], None] | None = None

    def add(self, name: str, status: str, detail: str) -> Check:
        check = Check(name, status, detail)
        self.checks.append(check)
        if self.on_check is not None:
            self.on_check(check)
        return check

    @property
    def verdict(self) -> str:
        statuses = {c.status for c in self.checks}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"adapter": self.adapter, "command": self.command, "version": self.version,
                "verified": self.verified, "verdict": self.verdict,
                "checks": [c.to_dict() for c in self.checks], "turn": self.turn}


def family(spec: AdapterSpec) -> str | None:
    """The agent CLI whose offline setup fits ``spec``: its own name or its parent's."""
    for name in (spec.name, spec.extends):
        if name in CLIS:
            return name
    return None


def run_doctor(name: str, *, as_json: bool, timeout: float, strict: bool) -> int:
    spec = load_adapter(name)
    report = Report(spec.name, verified=list(spec.verified),
                    on_check=None if as_json else _print_check)
    if not as_json:
        click.echo(f"aimterm adapter doctor {spec.name} ({spec.source})")
    examine(spec, report, timeout=timeout)
    verdict = report.verdict
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"verdict: {verdict.upper()} — {_summary(report)}")
    return 1 if verdict == "fail" or (strict and verdict == "warn") else 0


def examine(spec: AdapterSpec, report: Report, *, timeout: float) -> None:
    """Run the checks of ``spec``'s tool into ``report``."""
    path = os.environ.get("PATH", os.defpath)
    exe = shutil.which(spec.command[0], path=path_with_clis(path))
    if exe is None:
        report.add("found", "fail", f"{spec.command[0]!r} is not on PATH; install it, or "
                                    "point the adapter's command at it")
        return
    report.command = exe
    report.add("found", "ok", exe)
    with tempfile.TemporaryDirectory(prefix="aimterm-doctor-") as tmp:
        home, work = Path(tmp) / "home", Path(tmp) / "work"
        home.mkdir()
        cli = family(spec)
        if cli is None:
            env = {"HOME": str(home), "PATH": path_with_clis(path)}
            _version(spec, exe, env, report)
            work.mkdir()
            _live(spec, None, env, work, report, timeout)
            return
        if cli == "claude":
            # The caller's own Claude Code settings (another config folder, a key that brings
            # up its own dialog, a nested-session marker) must not reach the throwaway HOME.
            spec = dataclasses.replace(spec, env_remove=(*spec.env_remove, *CLAUDE_FOREIGN_ENV))
        with FakeModel(reply=lambda _prompt: REPLY, prompts=[PROMPT]) as model:
            env = offline_env(cli, home, model.url)
            _version(spec, exe, env, report)
            git_workdir(work, files={"README.md": "doctor\n"}, env=env)
            _live(spec, model, env, work, report, timeout)


def _version(spec: AdapterSpec, exe: str, env: dict[str, str], report: Report) -> None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, **env}, stdin=subprocess.DEVNULL)
        text = out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        report.add("version", "warn", f"`{exe} --version` failed: {exc}")
        return
    found = _VERSION.search(text)
    if found is None:
        report.add("version", "warn", f"no version in `--version` output: {text.strip()[:80]!r}")
        return
    report.version = found.group(0)
    if not spec.verified:
        report.add("version", "ok", f"{report.version} (the adapter names no versions it was "
                                    "verified with)")
    elif report.version in spec.verified:
        report.add("version", "ok", f"{report.version} (verified)")
    else:
        report.add("version", "warn", f"{report.version}, not among the versions the adapter "
                                      f"was verified with ({', '.join(spec.verified)})")


def _live(spec: AdapterSpec, model: FakeModel | None, env: dict[str, str], work: Path,
          report: Report, timeout: float) -> None:
    events: list[Event] = []
    session = Session(spec, cwd=work, env=env)
    session.subscribe(events.append)
    started = time.monotonic()
    try:
        session.start(timeout=timeout)
    except AimtermError as exc:
        report.add("start-up", "fail", str(exc).splitlines()[0])
        _quit(session, report)
        return
    try:
        dialogs = [e.rule for e in events if isinstance(e, QuestionAnswered)]
        said = f"dialogs answered: {', '.join(dialogs)}; " if dialogs else ""
        report.add("start-up", "ok", f"{said}ready in {time.monotonic() - started:.1f} s "
                                     f"({session.state})")
        if model is None:
            report.add("turn", "skip", "no model to fake for this tool: start-up and quit only")
        else:
            _turn(session, report, timeout)
    finally:
        _quit(session, report)


def _turn(session: Session, report: Report, timeout: float) -> None:
    try:
        turn = session.send(PROMPT, timeout=timeout)
    except AimtermError as exc:
        report.add("turn", "fail", str(exc).splitlines()[0])
        return
    report.turn = turn.to_dict()
    if turn.busy_at is None or turn.submit_to_busy_ms is None:
        report.add("busy", "warn", "never seen busy (the turn may have been too quick to see)")
    else:
        report.add("busy", "ok", f"{turn.submit_to_busy_ms / 1000:.2f} s after the prompt")
    if turn.status is not TurnStatus.DONE:
        what = f"{turn.status}" + (f": {turn.question}" if turn.question else "")
        report.add("idle", "fail", f"the turn ended {what}")
        return
    report.add("idle", "ok", f"after {(turn.busy_to_idle_ms or 0) / 1000:.2f} s")
    source = {"record": "from the tool's record", "screen": "from the screen"}.get(
        turn.reply_source, f"from {turn.reply_source}")
    usage = ""
    if turn.tokens:
        usage = "; tokens " + ", ".join(f"{k} {v}" for k, v in turn.tokens.items())
    if turn.cost_usd is not None:
        usage += f"; cost ${turn.cost_usd:.4f}"
    if turn.reply == REPLY:
        report.add("reply", "ok", f"exact, {source}{usage}")
    else:
        report.add("reply", "warn", f"not the model's text exactly ({source}): "
                                    f"{_first_difference(turn.reply, REPLY)}{usage}")


def _quit(session: Session, report: Report) -> None:
    started = time.monotonic()
    try:
        how = session.stop()
    except AimtermError as exc:
        report.add("quit", "fail", str(exc).splitlines()[0])
        return
    took = time.monotonic() - started
    if how in ("keys", "exited"):
        code = session.exit_code
        report.add("quit", "ok", f"quit in {took:.2f} s" + (f" (exit {code})" if code else ""))
    else:
        report.add("quit", "warn", f"did not quit on its exit keys: stopped by {how} "
                                   f"after {took:.1f} s")


def _first_difference(got: str, want: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
              min(len(got), len(want)))
    if got == want[:len(got)]:
        return f"{len(want) - len(got)} characters missing at the end"
    return f"from character {at}: got {got[at:at + 30]!r}, the model wrote {want[at:at + 30]!r}"


def _print_check(check: Check) -> None:
    click.echo(f"  {_MARK[check.status]} {check.name:<9} {check.detail}")


def _summary(report: Report) -> str:
    tool = report.adapter + (f" {report.version}" if report.version else "")
    bad = [c for c in report.checks if c.status in ("fail", "warn")]
    if not bad:
        return f"{tool} works with this adapter"
    failed = [c.name for c in bad if c.status == "fail"]
    if failed:
        return f"{tool} does not work with this adapter ({', '.join(failed)}: see above)"
    return f"{tool} works with this adapter, with warnings ({', '.join(c.name for c in bad)})"
