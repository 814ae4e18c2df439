"""``aimterm jobs schema``, ``validate``, ``list`` and ``show``: the job file format, checking
files, and the runs the store keeps. (``jobs run`` is :mod:`aimterm.cli.jobs_run`.)

Loading is :mod:`aimterm.jobs.loader`; the history is the store's, read read-only, so it is
there whether or not a daemon runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from aimterm.config import resolve_config
from aimterm.errors import AimtermError, DaemonNotRunning
from aimterm.ipc.client import ControlClient
from aimterm.store import Store

T = TypeVar("T")


class _NotFound(Exception):
    """``jobs show`` names a run or job the store does not have (exit 1)."""


def run_schema(result: bool) -> int:
    if result:
        from aimterm.jobs.result import RESULT_SCHEMA

        click.echo(json.dumps(RESULT_SCHEMA, indent=2, ensure_ascii=False))
    else:
        from aimterm.jobs.schema import schema_json

        click.echo(schema_json())
    return 0


def run_validate(paths: tuple[str, ...], *, check_tools: bool, as_json: bool) -> int:
    """Check each file; ``ok: N jobs`` per good file, the one-line error per bad one.
    Exit 2 when any file is wrong."""
    from aimterm.jobs.loader import load_jobs

    tools = None
    if check_tools:
        from aimterm.adapter.registry import AdapterRegistry

        tools = {info.name for info in AdapterRegistry().list()}
    failed = 0
    loaded = []
    for path in paths:
        try:
            jobs = load_jobs(path, tools=tools)
        except AimtermError as exc:
            failed += 1
            click.echo(str(exc), err=True)
            continue
        loaded.append({"path": path, "jobs": [job.to_dict() for job in jobs]})
        if not as_json:
            click.echo(f"{path}: ok: {len(jobs)} job{'' if len(jobs) == 1 else 's'}")
    if as_json:
        click.echo(json.dumps(loaded, indent=2, ensure_ascii=False))
    return 2 if failed else 0


def daemon_socket(cfg: Any, local: bool) -> str | None:
    """The socket of a daemon that answers (None with ``local``, or when none is up)."""
    if local or not cfg.socket_path.exists():
        return None
    try:
        ControlClient(str(cfg.socket_path), timeout=10.0).close()
    except DaemonNotRunning:
        return None
    return str(cfg.socket_path)


def run_watched(work: Callable[[], T], *, draw: Callable[[], None],
                cancel: Callable[[], None], interrupted: str,
                redraw_s: float = 0.25) -> tuple[T | None, bool]:
    """``work()`` in a thread while ``draw()`` redraws every ``redraw_s``; Ctrl-C prints
    ``interrupted``, calls ``cancel()`` and waits (bounded) for the work to end. Returns its
    result (None if it never came) and whether Ctrl-C was pressed; its error is raised here."""
    result: list[T] = []
    error: list[BaseException] = []
    done = threading.Event()

    def go() -> None:
        try:
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            error.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=go, name="aimterm-run", daemon=True)
    was_interrupted = False
    try:
        worker.start()
        while not done.wait(redraw_s):
            draw()
    except KeyboardInterrupt:
        was_interrupted = True
        click.echo(interrupted, err=True)
        cancel()
        done.wait(120.0)
    finally:
        draw()
    if error:
        raise error[0]
    return (result[0] if result else None), was_interrupted


# -- the history: aimterm jobs list / show --------------------------------------------------------


def history_store(config: str | None, state_dir: str | None) -> Store | None:
    """The store of the state dir, read-only (None: nothing has run there yet)."""
    cfg = resolve_config(config, state_dir)
    if not cfg.db_path.exists():
        return None
    return Store(cfg.db_path, readonly=True)


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def run_list(config: str | None, state_dir: str | None, *, limit: int, as_json: bool) -> int:
    """The newest runs first: id, when, how many jobs, how they ended."""
    store = history_store(config, state_dir)
    runs = [] if store is None else store.runs(limit)
    if store is not None:
        store.close()
    if as_json:
        click.echo(json.dumps(runs, indent=2, ensure_ascii=False))
        return 0
    if not runs:
        click.echo("no job runs yet (aimterm jobs run FILE)")
        return 0
    rows = [[r["id"], when(r["started"]), run_state(r), str(r["jobs"]),
             ", ".join(f"{n} {s}" for s, n in sorted(r["by_status"].items())),
             r["source"] or "-"] for r in runs]
    for line in table(["run", "started", "status", "jobs", "ended", "source"], rows):
        click.echo(line)
    return 0


def run_cancel(config: str | None, state_dir: str | None, run_id: str) -> int:
    cfg = resolve_config(config, state_dir)
    with ControlClient(str(cfg.socket_path), timeout=30.0) as client:
        client.request("jobs_cancel", {"run_id": run_id})
    click.echo(f"run {run_id}: cancelled (aimterm jobs show {run_id})")
    return 0


def run_state(run: dict[str, Any]) -> str:
    """A run still ``running`` whose process is gone was cut short (killed, or the machine
    went down): say so rather than show it running forever."""
    from aimterm.procs import pid_alive

    if run["status"] == "running" and run["finished"] is None and run["pid"] \
            and not pid_alive(int(run["pid"])):
        return "cut short"
    return str(run["status"])


def _resolve(store: Store, ident: str) -> tuple[str, str | None]:
    """``RUN``, ``RUN/JOB`` or ``JOB`` (its newest run) -> (run id, job id or None)."""
    run_id, _, job_id = ident.partition("/")
    if store.run(run_id) is not None:
        return run_id, job_id or None
    runs = store.job_runs(ident)
    if runs:
        return runs[0], ident
    raise _NotFound(f"no run or job {ident!r} in the store (aimterm jobs list shows the runs)")


def run_show(config: str | None, state_dir: str | None, ident: str, *, as_json: bool) -> int:
    """One run (its jobs, attempts and task events), or one job of it."""
    try:
        return _show(config, state_dir, ident, as_json=as_json)
    except _NotFound as exc:
        click.echo(f"aimterm: {exc}", err=True)
        return 1


def _show(config: str | None, state_dir: str | None, ident: str, *, as_json: bool) -> int:
    store = history_store(config, state_dir)
    if store is None:
        raise _NotFound("no job runs yet (aimterm jobs run FILE)")
    with store:
        run_id, job_id = _resolve(store, ident)
        run = store.run(run_id)
        jobs = [j for j in store.run_jobs(run_id) if job_id is None or j["id"] == job_id]
        if job_id is not None and not jobs:
            raise _NotFound(f"run {run_id} has no job {job_id!r}")
        attempts = store.attempts(run_id, job_id)
        events = [e for e in store.events(kinds=["task_started", "task_failed",
                                                  "task_completed"])
                  if e.get("run_id") == run_id and (job_id is None or e["task_id"] == job_id)]
    if as_json:
        click.echo(json.dumps({"run": run, "jobs": jobs, "attempts": attempts,
                               "events": events}, indent=2, ensure_ascii=False))
        return 0
    assert run is not None
    click.echo(f"run {run_id}: {run_state(run)}, {run['jobs']} jobs, started "
               f"{when(run['started'])}, source {run['source'] or '-'}")
    for job in jobs:
        result = job["result"] or {}
        click.echo(f"\n{job['id']} ({job['tool']}): {job['status']}")
        if result.get("error"):
            click.echo(f"  error: {result['error']}")
        for path in result.get("files_changed") or ():
            click.echo(f"  changed: {path}")
        for check in result.get("acceptance") or ():
            click.echo(f"  acceptance: {check['command']} -> {check['exit_code']}")
        for a in (a for a in attempts if a["job_id"] == job["id"]):
            took = f"{a['finished'] - a['started']:.1f}s" if a["finished"] else "running"
            click.echo(f"  attempt {a['number']}: {a['mode']} on {a['instance'] or '-'}: "
                       f"{a['status']} ({took})" + (f": {a['error']}" if a["error"] else ""))
        if result.get("error_report_path"):
            click.echo(f"  report: {result['error_report_path']}")
    return 0


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart: a heading row, then the rows."""
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=False)]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in [head, *rows]]
