"""``aimterm cluster …``, ``send``, ``answer``, ``interrupt``, ``drain``, ``screen``, ``turns``
and ``events``: clients of the daemon.

Every command finds the daemon the way the daemon finds its socket (``-c FILE`` and/or
``--state-dir DIR``, see :func:`aimterm.config.resolve_config`). Only ``cluster up`` in the
foreground imports the runtime; the others import the config and the socket client, so they
answer fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from aimterm.config import ClusterConfig, resolve_config
from aimterm.errors import AlreadyRunning, DaemonNotRunning, IpcTimeout
from aimterm.ipc.client import ControlClient
from aimterm.statedir import open_private

#: How long ``up --detach`` waits for the daemon to answer, then for its fleet to settle.
_PING_WAIT_S = 15.0
_READY_WAIT_S = 60.0


@contextmanager
def connect(cfg: ClusterConfig, timeout: float | None = 30.0) -> Iterator[ControlClient]:
    """A client of the daemon of ``cfg``; no daemon: one line on stderr and exit 26."""
    path = str(cfg.socket_path)
    try:
        client = ControlClient(path, timeout=timeout)
    except DaemonNotRunning as exc:
        click.echo(f"aimterm: no daemon at {path} (start one with aimterm cluster up)", err=True)
        sys.exit(exc.exit_code)
    with client:
        yield client


def _ping(cfg: ClusterConfig, *, busy_is_up: bool = True) -> bool:
    """Whether a daemon answers on the socket. One that accepts but is slow to answer is up
    (``busy_is_up``: raise its IpcTimeout) or not yet (False: a daemon still starting)."""
    try:
        with ControlClient(str(cfg.socket_path), timeout=2.0) as client:
            client.call("ping")
        return True
    except DaemonNotRunning:
        return False
    except IpcTimeout:
        if busy_is_up:
            raise
        return False


def _summary(instances: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for row in instances:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no instances"


# -- up ------------------------------------------------------------------------------------------

def run_up(config: str | None, state_dir: str | None, detach: bool) -> int:
    cfg = resolve_config(config, state_dir)
    # Checked before the socket in it is even tried: a planted one is not ours to talk to.
    cfg.ensure_state_dir()
    if _ping(cfg):
        raise AlreadyRunning(str(cfg.socket_path))
    if detach:
        return _up_detached(cfg, config, state_dir)
    return _up_foreground(cfg)


def _up_detached(cfg: ClusterConfig, config: str | None, state_dir: str | None) -> int:
    cfg.ensure_state_dir()
    argv = [sys.executable, "-m", "aimterm.daemon", "--state-dir", str(cfg.state_dir)]
    if config is not None:
        argv += ["--config", os.path.abspath(config)]
    log_path = cfg.log_path
    # 0600 and never through a link: a daemon.log planted as one is refused, not appended to.
    log = open_private(log_path, os.O_WRONLY | os.O_APPEND)
    try:
        start = os.fstat(log).st_size
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(log)
    deadline = time.monotonic() + _PING_WAIT_S
    while not _ping(cfg, busy_is_up=False):
        code = proc.poll()
        if code is not None:
            tail = log_path.read_bytes()[start:].decode(errors="replace").strip().splitlines()
            lines = [ln for ln in tail if ln.startswith("aimterm: ")]
            click.echo(lines[-1] if lines else
                       f"aimterm: the daemon exited with status {code} (see {log_path})", err=True)
            return code or 1
        if time.monotonic() > deadline:
            click.echo(f"aimterm: the daemon (pid {proc.pid}) did not answer within "
                       f"{_PING_WAIT_S:g}s (see {log_path})", err=True)
            return 1
        time.sleep(0.05)
    # Wait (bounded) for the fleet to settle, so `up --detach && send` just works.
    deadline = time.monotonic() + _READY_WAIT_S
    with connect(cfg) as client:
        while True:
            status = client.call("status")
            if status["ready"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if not status["ready"]:
        click.echo(f"aimterm: warning: instances still starting: {_summary(status['instances'])}",
                   err=True)
    for row in status["instances"]:
        if row["state"] == "fatal":  # the daemon is up, but this one gave up: say why
            click.echo(f"aimterm: warning: {row['id']} is FATAL: "
                       f"{row.get('fatal_reason') or 'no reason given'}", err=True)
    click.echo(str(cfg.socket_path))
    return 0


def _up_foreground(cfg: ClusterConfig) -> int:
    from aimterm.daemon import Daemon

    tty = sys.stdout.isatty()
    last = [""]

    def tick(daemon: Daemon) -> None:
        assert daemon.pool is not None
        rows = daemon.pool.status()
        line = (f"aimterm cluster on {cfg.socket_path}: {_summary(rows)}, "
                f"{sum(r['turns'] for r in rows)} turns, {daemon.pool.queue_length()} queued")
        if line != last[0]:
            last[0] = line
            click.echo(("\r\x1b[K" + line) if tty else line, nl=not tty)

    code = Daemon(cfg).run_forever(on_tick=tick)
    if tty:
        click.echo("")
    click.echo("aimterm: cluster stopped")
    return code


# -- schema --------------------------------------------------------------------------------------

def run_schema(status: bool) -> int:
    """Print the cluster file's JSON Schema, or (``status``) that of ``cluster status --json``.
    Plain data: no daemon is needed, and none is reached."""
    from aimterm.cluster_schema import schema_json

    click.echo(schema_json(status=status))
    return 0


# -- status, down, scale, restart ----------------------------------------------------------------

def run_status(config: str | None, state_dir: str | None, as_json: bool) -> int:
    cfg = resolve_config(config, state_dir)
    with connect(cfg, timeout=10.0) as client:
        status = client.call("status")
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return 0
    d = status["daemon"]
    click.echo(f"daemon {d['pid']} up {d['uptime_s']:.0f}s on {d['socket']} "
               f"({len(status['instances'])} instances, {status['queued']} queued)")
    rows = status["instances"]
    width = max((len(r["id"]) for r in rows), default=2)
    for r in rows:
        extra = f"  {r['fatal_reason']}" if r.get("fatal_reason") else ""
        # Which session host reads its terminal (none: the daemon's own loop).
        host = f"  host {r['host']}" if r.get("host") is not None else ""
        click.echo(f"{r['id']:<{width}}  {r['state']:<8}  pid {r['pid'] or '-':<7}  "
                   f"turns {r['turns']:<5}  restarts {r['restarts']}{host}{extra}")
    return 0


def run_down(config: str | None, state_dir: str | None) -> int:
    cfg = resolve_config(config, state_dir)
    with connect(cfg, timeout=60.0) as client:
        result = client.call("down")
    # The daemon exits right after its reply: wait (bounded) for its socket to go.
    deadline = time.monotonic() + 10.0
    while cfg.socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    click.echo(f"aimterm: daemon {result['pid']} stopped")
    return 0


def run_scale(config: str | None, state_dir: str | None, tool: str, count: int) -> int:
    cfg = resolve_config(config, state_dir)
    with connect(cfg) as client:
        client.call("scale", tool=tool, count=count)
    click.echo(f"{tool}: {count}")
    return 0


def run_restart(config: str | None, state_dir: str | None, iid: str) -> int:
    cfg = resolve_config(config, state_dir)
    with connect(cfg, timeout=120.0) as client:
        result = client.call("restart", id=iid)
    click.echo(f"{result['id']}: {result['state']}")
    return 0


# -- send, events --------------------------------------------------------------------------------

def run_send(config: str | None, state_dir: str | None, prompt: str, *, tool: str | None,
             to: str | None, key: str | None, tags: list[str], timeout: float | None,
             as_json: bool, no_wait: bool) -> int:
    if prompt == "-":
        prompt = sys.stdin.read().rstrip("\n")
    if not prompt:
        click.echo("aimterm: empty prompt", err=True)
        return 2
    cfg = resolve_config(config, state_dir)
    args: dict[str, Any] = {"prompt": prompt, "tool": tool, "to": to, "key": key,
                            "tags": tags, "timeout": timeout, "no_wait": no_wait}
    with connect(cfg) as client:
        result = client.request("send", {k: v for k, v in args.items() if v not in (None, [])},
                                timeout=None)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif no_wait:
        click.echo(f"queued {result['queued']}")
    else:
        click.echo(result["reply"])
    return 0


# -- answer, interrupt, drain, screen, turns -----------------------------------------------------

def _print(result: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(result, indent=2) if as_json else text)


def run_answer(config: str | None, state_dir: str | None, iid: str, keys: list[str],
               as_json: bool) -> int:
    cfg = resolve_config(config, state_dir)
    with connect(cfg) as client:
        result = client.call("answer", id=iid, keys=keys)
    _print(result, as_json, f"{result['id']}: {result['state']}")
    return 0


def run_interrupt(config: str | None, state_dir: str | None, iid: str, as_json: bool) -> int:
    cfg = resolve_config(config, state_dir)
    with connect(cfg) as client:
        result = client.call("interrupt", id=iid)
    _print(result, as_json, f"{result['id']}: interrupted")
    return 0


def run_drain(config: str | None, state_dir: str | None, iid: str, wait: bool,
              as_json: bool) -> int:
    cfg = resolve_config(config, state_dir)
    with connect(cfg) as client:
        # Waiting lasts as long as the instance's turn: no client timeout.
        result = client.request("drain", {"id": iid, "wait": wait}, timeout=None)
    _print(result, as_json, f"{result['id']}: {'removed' if result['drained'] else 'draining'}")
    return 0


def run_screen(config: str | None, state_dir: str | None, iid: str, lines: int | None,
               as_json: bool) -> int:
    cfg = resolve_config(config, state_dir)
    args: dict[str, Any] = {"id": iid}
    if lines is not None:
        args["lines"] = lines
    with connect(cfg) as client:
        result = client.request("screen", args)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return 0
    text = list(result["lines"])
    while text and not text[-1].strip():  # the rows below the cursor are blank
        text.pop()
    for line in text:
        click.echo(line.rstrip())
    return 0


def run_turns(config: str | None, state_dir: str | None, iid: str | None, limit: int,
              as_json: bool) -> int:
    cfg = resolve_config(config, state_dir)
    args: dict[str, Any] = {"limit": limit}
    if iid is not None:
        args["id"] = iid
    with connect(cfg) as client:
        turns = client.request("turns", args)["turns"]
    if as_json:
        click.echo(json.dumps(turns, indent=2))
        return 0
    for t in turns:
        stamp = time.strftime("%H:%M:%S", time.localtime(t["started"]))
        took = f"{t['finished'] - t['started']:.2f}s" if t["finished"] is not None else "-"
        outcome = (t["reply"] or "").splitlines()[-1:] or [t["error"] or ""]
        click.echo(f"{t['id']:>6} {stamp} {t['instance']:<12} {t['status']:<11} {took:>7}  "
                   f"{_clip(t['prompt'])} -> {_clip(outcome[0])}")
    return 0


def _clip(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"
