"""``aimterm jobs run FILE|-``: a job file run on the fleet, watched as it goes.

With a daemon up (and no ``--local``) the run is the daemon's: it goes on if this client goes
away, and ``--detach`` only hands it over. Otherwise it runs in this process.

On a terminal a table of the jobs is redrawn in place (state, instance, elapsed, attempts);
elsewhere (a log, a pipe) each start, failure and success is a line. At the end a summary
table, or with ``--json`` the results as one JSON document on stdout. The exit code is 0 only
if every job succeeded, 1 if any did not, 130 after Ctrl-C (the jobs in flight are stopped;
each ends ``cancelled``), 2 for a bad job file.
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

from aimterm.cli.jobs import daemon_socket, run_watched, table
from aimterm.config import resolve_config
from aimterm.events import (
    Event,
    RunStarted,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    event_from_dict,
)
from aimterm.ipc.client import ControlClient
from aimterm.jobs.loader import load_jobs, load_jobs_text
from aimterm.jobs.orchestrator import Orchestrator
from aimterm.jobs.result import JobResult
from aimterm.jobs.spec import Job

__all__ = ["run_jobs"]

#: The most of a job file read from stdin (the file loader's own bound).
_STDIN_LIMIT = 1 << 20


class _Row:
    def __init__(self, job: Job) -> None:
        self.job = job
        self.state = "queued"
        self.instance = "-"
        self.attempts = 0
        self.started: float | None = None
        self.ended: float | None = None
        self.error = ""

    def elapsed(self, now: float) -> str:
        if self.started is None:
            return "-"
        return f"{(self.ended or now) - self.started:.1f}s"


class _Watch:
    """Keeps the rows from the orchestrator's events (in its worker threads) and draws them."""

    def __init__(self, jobs: list[Job], out: TextIO, live: bool) -> None:
        self.rows = {job.id: _Row(job) for job in jobs}
        self.out = out
        self.live = live
        self.run_id = ""
        self._lock = threading.Lock()
        self._drawn = 0

    def on_event(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self.run_id = event.run_id
                if not self.live:
                    self._line(f"run {event.run_id}: {event.jobs} jobs")
                return
            if not isinstance(event, (TaskStarted, TaskFailed, TaskCompleted)):
                return
            row = self.rows.get(event.task_id)
            if row is None:
                return
            now = time.monotonic()
            if isinstance(event, TaskStarted):
                row.state, row.attempts = "running", event.attempt
                row.instance = event.instance or "one-shot"
                row.started = row.started or now
                note = f"{row.job.id}: attempt {event.attempt} on {row.instance}"
            elif isinstance(event, TaskFailed):
                row.state = "retrying" if event.retrying else event.status
                row.error = event.error or ""
                row.ended = None if event.retrying else now
                note = f"{row.job.id}: {event.status}" + (
                    " (will retry)" if event.retrying else "") + f": {row.error}"
            else:
                row.state, row.ended = "succeeded", now
                n = len(event.files_changed)
                note = f"{row.job.id}: succeeded ({n} file{'' if n == 1 else 's'} changed)"
            if not self.live:
                self._line(note)

    def _line(self, text: str) -> None:
        self.out.write(time.strftime("%H:%M:%S ") + text + "\n")
        self.out.flush()

    def draw(self) -> None:
        if not self.live:
            return
        with self._lock:
            now = time.monotonic()
            lines = [f"run {self.run_id or '…'}"] + table(
                ["job", "tool", "state", "instance", "elapsed", "attempts"],
                [[r.job.id, r.job.tool, r.state, r.instance, r.elapsed(now), str(r.attempts)]
                 for r in self.rows.values()])
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.out.flush()
            self._drawn = len(lines)


def summary_lines(results: list[JobResult]) -> list[str]:
    rows = []
    for r in results:
        why = r.error or ""
        rows.append([r.job_id, r.status.value, r.instance or "-", str(r.attempts),
                     f"{r.duration_s.total:.1f}s", str(len(r.files_changed)),
                     why if len(why) <= 70 else why[:69] + "…"])
    lines = table(["job", "status", "instance", "attempts", "time", "files", "error"], rows)
    ok = sum(r.success for r in results)
    lines.append(f"{ok} of {len(results)} succeeded")
    lines.extend(f"  {r.job_id}: report {r.error_report_path}" for r in results
                 if r.error_report_path)
    return lines


def _load(path: str) -> list[Job]:
    if path == "-":
        text = sys.stdin.read(_STDIN_LIMIT + 1)
        return load_jobs_text(text, "<stdin>", base=Path.cwd())
    return load_jobs(path)


#: The events a client watching a run in the daemon follows.
_RUN_KINDS = ["run_started", "task_started", "task_failed", "task_completed", "run_finished"]


class _Local:
    """The jobs run in this process (no daemon, or ``--local``)."""

    def __init__(self, jobs: list[Job], mode: str, instances: int, state_dir: Path,
                 watch: _Watch | None) -> None:
        self.jobs, self.mode = jobs, mode
        self.orch = Orchestrator(instances_per_tool=instances, fleet=None, state_dir=state_dir)
        if watch is not None:
            self.orch.bus.subscribe(watch.on_event)
        self.run_id: str | None = None

    def execute(self, source: str) -> list[JobResult]:
        results = self.orch.execute_jobs(self.jobs, mode=self.mode,  # type: ignore[arg-type]
                                         source=source)
        self.run_id = self.orch.last_run_id
        return results

    def cancel(self) -> None:
        self.orch.cancel()

    def close(self) -> None:
        self.orch.shutdown()


class _Remote:
    """The jobs run in the daemon: they outlive this client; it watches their events."""

    def __init__(self, socket: str, jobs: list[Job], mode: str, instances: int,
                 watch: _Watch | None) -> None:
        self.socket = socket
        self.jobs, self.mode, self.instances = jobs, mode, instances
        self.watch = watch
        self.run_id: str | None = None

    def submit(self, source: str) -> dict[str, Any]:
        cwd = os.getcwd()
        jobs = [j.to_dict() if j.cwd else {**j.to_dict(), "cwd": cwd} for j in self.jobs]
        with ControlClient(self.socket, timeout=60.0) as client:
            reply: dict[str, Any] = client.request("jobs_run", {
                "jobs": jobs, "mode": self.mode, "instances": self.instances,
                "source": source})
        self.run_id = reply["run_id"]
        return reply

    def execute(self, source: str) -> list[JobResult]:
        reply = self.submit(source)
        with ControlClient(self.socket, timeout=60.0) as client:
            stream = client.open_stream("events", {"since": reply["since"], "follow": True,
                                                   "kinds": _RUN_KINDS}, timeout=None)
            for data in stream:
                if data.get("run_id") != self.run_id:
                    continue
                if self.watch is not None:
                    self.watch.on_event(event_from_dict(data))
                if data["kind"] == "run_finished":
                    break
            got = client.request("jobs_get", {"run_id": self.run_id})
        return [JobResult.from_dict(j["result"]) for j in got["jobs"] if j["result"]]

    def cancel(self) -> None:
        if self.run_id is not None:
            with ControlClient(self.socket, timeout=30.0) as client:
                client.request("jobs_cancel", {"run_id": self.run_id})

    def close(self) -> None:
        pass


def run_jobs(path: str, *, config: str | None, state_dir: str | None, mode: str,
             instances: int, as_json: bool, local: bool, detach: bool = False) -> int:
    jobs = _load(path)
    source = path if path == "-" else os.path.abspath(path)  # (the record names the file)
    cfg = resolve_config(config, state_dir)
    live = not as_json and sys.stdout.isatty()
    watch = _Watch(jobs, sys.stdout if not as_json else sys.stderr, live)
    quiet = as_json and not sys.stderr.isatty()
    socket = daemon_socket(cfg, local)
    runner: _Local | _Remote
    if socket is not None:
        runner = _Remote(socket, jobs, mode, instances, None if quiet else watch)
    elif detach:
        click.echo(f"aimterm: --detach needs a daemon (none at {cfg.socket_path}; start one "
                   f"with aimterm cluster up)", err=True)
        return 2
    else:
        runner = _Local(jobs, mode, instances, cfg.state_dir, None if quiet else watch)
    if detach:
        assert isinstance(runner, _Remote)
        reply = runner.submit(source)
        click.echo(json.dumps(reply) if as_json else
                   f"run {reply['run_id']}: {reply['jobs']} jobs, in the daemon "
                   f"(aimterm jobs show {reply['run_id']})")
        return 0
    try:
        got, interrupted = run_watched(
            lambda: runner.execute(source), draw=watch.draw, cancel=runner.cancel,
            interrupted="aimterm: interrupted: stopping the jobs in flight")
    finally:
        runner.close()
    results: list[JobResult] = got or []
    if as_json:
        doc: dict[str, Any] = {"run_id": runner.run_id,
                               "status": "succeeded" if all(r.success for r in results)
                               else "failed",
                               "results": [r.to_dict() for r in results]}
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        click.echo("")
        for line in summary_lines(results):
            click.echo(line)
        click.echo(f"(aimterm jobs show {runner.run_id})")
    if interrupted:
        return 130
    return 0 if results and all(r.success for r in results) else 1
