"""``aimterm run PLAN`` and ``aimterm runs list|show``: a plan run in this process, watched as
it goes, and the plan runs the store keeps.

On a terminal a table of the steps is redrawn in place (state, attempt, instance, branch,
elapsed, note); elsewhere (a log, a pipe) each step's move is a line. At the end a summary and
where the merged work is. Exit 0 if the run succeeded, 1 if not, 130 after Ctrl-C (running
steps are stopped and end ``cancelled``; ``--resume`` goes on), 2 for a bad plan file.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import click

from aimterm.cli.jobs import daemon_socket, history_store, run_state, run_watched, table, when
from aimterm.config import resolve_config
from aimterm.events import Event, MergeConflictDetected, StepChanged, StepMerged, TaskStarted

__all__ = ["parse_vars", "run_plan", "run_runs_list", "run_runs_show"]

_NOTE_WIDTH = 60


def parse_vars(pairs: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` pairs to a mapping; a pair without ``=`` or with no key is refused."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise click.BadParameter(f"expected KEY=VALUE with KEY a name, got {pair!r}",
                                     param_hint="--var")
        out[key] = value
    return out


def _short(text: str | None, width: int = _NOTE_WIDTH) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[:width - 1] + "…"


class _Watch:
    """Lines for a log, or a table redrawn in place on a terminal."""

    def __init__(self, out: TextIO, live: bool) -> None:
        self.out, self.live = out, live
        self.runner: Any = None
        self._drawn = 0
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        if self.live:
            return
        if isinstance(event, StepChanged):
            why = f": {event.reason}" if event.reason else ""
            self._line(f"{event.step_id}: {event.state} (attempt {event.attempt}){why}")
        elif isinstance(event, TaskStarted):
            where = f"on {event.instance}" if event.instance else "as a one-shot run"
            self._line(f"{event.task_id}: {where} ({event.tool_id}, attempt {event.attempt})")
        elif isinstance(event, StepMerged):
            self._line(f"{event.step_id}: merged {event.commit[:10]} "
                       f"(merge {event.merge_s:.2f}s, gate {event.gate_s:.2f}s)")
        elif isinstance(event, MergeConflictDetected):
            what = "may conflict" if event.predicted else "conflicts"
            self._line(f"{event.step_id}: {what} with {event.other} in "
                       f"{', '.join(event.paths)}")

    def _line(self, text: str) -> None:
        with self._lock:
            self.out.write(time.strftime("%H:%M:%S ") + text + "\n")
            self.out.flush()

    def draw(self) -> None:
        if not self.live or self.runner is None:
            return
        rows = self.runner.view()
        lines = [f"run {self.runner.run_id}: plan {self.runner.plan.id}"] + table(
            ["step", "state", "attempt", "instance", "branch", "elapsed", "note"],
            [[r["step"], r["state"], str(r["attempt"]), r["instance"] or "-",
              r["branch"] or "-", f"{r['elapsed_s']:.1f}s", _short(r["note"]) or "-"]
             for r in rows])
        with self._lock:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.out.flush()
            self._drawn = len(lines)


def _summary(result: dict[str, Any]) -> list[str]:
    steps = result["steps"]
    rows = [[s["step_id"], s["state"], str(s["attempts"]), f"{s['elapsed_s']:.1f}s",
             (s["merge_commit"] or "")[:10] or "-", _short(s["error"]) or "-"] for s in steps]
    lines = table(["step", "state", "attempts", "time", "merged", "error"], rows)
    done = sum(s["state"] == "succeeded" for s in steps)
    lines.append(f"run {result['run_id']}: {result['status']}: {done} of {len(steps)} steps "
                 f"merged or done in {result['duration_s']:.1f}s")
    branch = result["integration"]
    lines.append(f"the merged work: branch {branch} at {result['head'][:10]} "
                 f"(git log --graph {branch}; git merge {branch})")
    for name in result.get("set_aside") or []:
        lines.append(f"  an earlier run's branch, renamed to make room: {name}")
    for path in result.get("kept_worktrees") or []:
        lines.append(f"  kept (work not merged): {path}")
    lines.append(f"(aimterm runs show {result['run_id']})")
    return lines


#: The events a client following a plan run in the daemon reads.
_RUN_KINDS = ["run_started", "step_changed", "task_started", "step_merged",
              "merge_conflict_detected", "run_finished"]


class _Remote:
    """The plan runs in the daemon: it goes on if this client goes away; this client follows
    its events and reads its result at the end."""

    def __init__(self, socket: str, request: dict[str, Any], watch: _Watch | None) -> None:
        self.socket, self.request, self.watch = socket, request, watch
        self.run_id: str | None = None

    def run(self) -> dict[str, Any]:
        from aimterm.events import event_from_dict
        from aimterm.ipc.client import ControlClient

        with ControlClient(self.socket, timeout=60.0) as client:
            reply = client.request("plans_run", self.request)
            self.run_id = reply["run_id"]
            if self.watch is not None:
                self.watch._line(f"run {self.run_id}: in the daemon, {reply['steps']} steps")
            stream = client.open_stream("events", {"since": reply["since"], "follow": True,
                                                   "kinds": _RUN_KINDS}, timeout=None)
            for data in stream:
                if data.get("run_id") != self.run_id:
                    continue
                if self.watch is not None:
                    self.watch.on_event(event_from_dict(data))
                if data["kind"] == "run_finished":
                    break
        with ControlClient(self.socket, timeout=60.0) as client:
            got = client.request("plans_get", {"run_id": self.run_id})
        if got["result"] is None:
            from aimterm.errors import AimtermError

            raise AimtermError(f"run {self.run_id} stopped in the daemon: "
                               f"{got['failure'] or 'it kept no result'} "
                               f"(aimterm runs show {self.run_id})")
        return dict(got["result"])

    def cancel(self) -> None:
        from aimterm.ipc.client import ControlClient

        if self.run_id is not None:
            with ControlClient(self.socket, timeout=30.0) as client:
                client.request("plans_cancel", {"run_id": self.run_id})


def run_plan(path: str, *, dry_run: bool, resume: str | None, keep_worktrees: bool,
             max_concurrency: int | None, variables: dict[str, str], repo: str | None,
             as_json: bool, config: str | None, state_dir: str | None,
             local: bool = False) -> int:
    from aimterm.adapter.registry import AdapterRegistry
    from aimterm.plans.loader import load_plan

    tools = {info.name for info in AdapterRegistry().list()}
    plan = load_plan(path, variables=variables, tools=tools)
    if dry_run:
        from aimterm.plans.graph import PlanGraph, dry_run_text

        width = max_concurrency or plan.globals.max_concurrency
        if as_json:
            click.echo(json.dumps({"plan_id": plan.id,
                                   **PlanGraph(plan).summary(width)}, indent=2))
        else:
            click.echo(dry_run_text(plan, width), nl=False)
        return 0
    cfg = resolve_config(config, state_dir)
    quiet = as_json and not sys.stderr.isatty()
    socket = daemon_socket(cfg, local)
    runner: Any
    if socket is not None:
        watch = _Watch(sys.stdout if not as_json else sys.stderr, live=False)
        runner = _Remote(socket, {
            "plan": plan.to_dict(), "repo": os.path.abspath(repo or os.getcwd()),
            "source": os.path.abspath(path), "resume": resume,
            "max_concurrency": max_concurrency, "keep_worktrees": keep_worktrees},
            None if quiet else watch)
    else:
        from aimterm.plans.runner import PlanRun

        watch = _Watch(sys.stdout if not as_json else sys.stderr,
                       live=not as_json and sys.stdout.isatty())
        runner = PlanRun(plan, repo=repo or Path.cwd(), run_id=resume,
                         resume=resume is not None, state_dir=cfg.state_dir,
                         max_concurrency=max_concurrency, keep_worktrees=keep_worktrees,
                         on_event=None if quiet else watch.on_event)
        watch.runner = runner
        runner.prepare()  # a run that cannot start says so before anything is shown
        if not quiet and not watch.live:
            watch._line(f"run {runner.run_id}: plan {plan.id}, {len(plan.steps)} steps")
    def work() -> dict[str, Any]:
        got = runner.run()
        return got if isinstance(got, dict) else dict(got.to_dict())

    result, interrupted = run_watched(
        work, draw=watch.draw, cancel=runner.cancel,
        interrupted=f"aimterm: interrupted: stopping the running steps (aimterm run {path} "
                    f"--resume {runner.run_id} goes on)")
    assert result is not None
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        click.echo("")
        for line in _summary(result):
            click.echo(line)
    if interrupted:
        return 130
    return 0 if result["status"] == "succeeded" else 1


# -- the history ---------------------------------------------------------------------------------


def run_runs_list(config: str | None, state_dir: str | None, *, limit: int,
                  as_json: bool) -> int:
    store = history_store(config, state_dir)
    runs = [] if store is None else store.plan_runs(limit)
    if store is not None:
        store.close()
    if as_json:
        click.echo(json.dumps(runs, indent=2, ensure_ascii=False))
        return 0
    if not runs:
        click.echo("no plan runs yet (aimterm run PLAN)")
        return 0
    rows = [[r["id"], r["plan_id"], when(r["started"]), run_state(r), str(r["jobs"]),
             ", ".join(f"{n} {s}" for s, n in sorted(r["by_state"].items())),
             r["integration"]] for r in runs]
    for line in table(["run", "plan", "started", "status", "steps", "states", "branch"], rows):
        click.echo(line)
    return 0


def run_runs_show(config: str | None, state_dir: str | None, run_id: str, *,
                  as_json: bool) -> int:
    store = history_store(config, state_dir)
    run = None if store is None else store.plan_run(run_id)
    if store is None or run is None:
        if store is not None:
            store.close()
        click.echo(f"aimterm: no plan run {run_id!r} in the store (aimterm runs list shows "
                   "them)", err=True)
        return 1
    steps = store.plan_steps(run_id)
    attempts = store.attempts(run_id)
    events = [e for e in store.events(kinds=["step_changed", "step_merged",
                                             "merge_conflict_detected", "task_started",
                                             "task_failed", "task_completed", "run_started",
                                             "run_finished"], limit=None)
              if e.get("run_id") == run_id]
    store.close()
    if as_json:
        click.echo(json.dumps({"run": run, "steps": steps, "attempts": attempts,
                               "events": events}, indent=2, ensure_ascii=False))
        return 0
    click.echo(f"run {run_id}: plan {run['plan_id']}, {run_state(run)}, started "
               f"{when(run['started'])}, finished {when(run['finished'])}")
    click.echo(f"repository {run['repo']}; merged work on {run['integration']} "
               f"(from {run['base'][:10]})")
    rows = [[s["step_id"], s["state"], str(s["attempts"]), s["branch"] or "-",
             (s["merge_commit"] or "")[:10] or "-", _short(s["error"]) or "-"] for s in steps]
    for line in table(["step", "state", "attempts", "branch", "merged", "error"], rows):
        click.echo(line)
    for s in steps:
        if s["worktree"]:
            click.echo(f"  {s['step_id']}: worktree kept: {s['worktree']}")
        detail = s["detail"] or {}
        if detail.get("conflicts"):
            click.echo(f"  {s['step_id']}: conflicts in {', '.join(detail['conflicts'])}")
        for gate in detail.get("gate") or []:
            if gate.get("exit_code") != 0:
                click.echo(f"  {s['step_id']}: gate {gate['command']} exited "
                           f"{gate['exit_code']}:")
                for line in str(gate.get("output", "")).splitlines()[-10:]:
                    click.echo(f"    {line}")
    return 0
