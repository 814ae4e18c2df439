"""``aimterm jobs schema`` and ``aimterm jobs validate``: the job file format, and checking files.

Loading is :mod:`aimterm.jobs.loader`; this is the command around it. Running jobs comes next.
"""

from __future__ import annotations

import json

import click

from aimterm.errors import AimtermError


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
