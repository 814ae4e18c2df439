"""``aimterm logs ID [-f] [--raw]``: an instance's terminal, rendered as text or raw.

The reading and rendering is :mod:`aimterm.transcripts`; this is the command around it.
"""

from __future__ import annotations

import os
import sys

import click

from aimterm.config import resolve_config
from aimterm.transcripts import continues, open_run, print_run, transcript_path


def run_logs(config: str | None, state_dir: str | None, instance_id: str, *, follow: bool,
             raw: bool, lines: int | None, previous: int) -> int:
    cfg = resolve_config(config, state_dir)
    path = transcript_path(cfg.transcript_dir, instance_id, previous)
    out = sys.stdout
    renderer = None
    first = True
    try:
        while True:
            run = open_run(path)
            same_run = not first and continues(run)
            if not first and not same_run and not raw:
                # The instance restarted: its new run is in a new file at the same path.
                click.echo(f"--- {instance_id}: new run ---", file=out)
            try:
                renderer = print_run(run, follow=follow and not previous, raw=raw, lines=lines,
                                     out=out, carry=renderer if same_run else None)
            finally:
                run.close()
            if not follow or previous:
                return 0
            first, lines = False, None
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # `aimterm logs ID | head`: the reader left; nothing to report.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
