"""``aimterm events``: the cluster's event history, from its daemon or, with none, its store.

With a daemon, the events come over the socket (``events`` op), live ones too with
``--follow``. With no daemon the history is still there: the store in the state dir is read
(read-only), and ``--follow`` keeps reading it, so a daemon started later shows up as it
writes — as ``aimterm logs`` reads transcripts without one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import click

from aimterm.config import ClusterConfig, resolve_config
from aimterm.errors import DaemonNotRunning, UnknownInstance
from aimterm.fleet import check_kinds
from aimterm.ipc.client import ControlClient
from aimterm.store import Store

__all__ = ["event_line", "run_events"]

#: How often ``--follow`` without a daemon looks at the store again.
_POLL_S = 0.5
_BATCH = 500


def event_line(event: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("ts", 0)))
    skip = {"seq", "ts", "kind", "instance", "mono"}
    detail = " ".join(f"{k}={v}" for k, v in event.items() if k not in skip and v not in
                      (None, "", [], {}))
    who = event.get("instance") or "-"
    return f"{event['seq']:>6} {stamp} {event['kind']:<19} {who:<12} {detail}"


def run_events(config: str | None, state_dir: str | None, follow: bool, since: int,
               as_json: bool, kinds: list[str] | None = None,
               instance: str | None = None) -> int:
    cfg = resolve_config(config, state_dir)
    kinds = check_kinds(kinds or [])
    try:
        client = ControlClient(str(cfg.socket_path), timeout=30.0)
    except DaemonNotRunning as exc:
        if not cfg.db_path.exists():
            click.echo(f"aimterm: no daemon at {cfg.socket_path}, and no history in "
                       f"{cfg.state_dir} (start one with aimterm cluster up)", err=True)
            return exc.exit_code
        events = _from_store(cfg, follow, since, kinds, instance)
    else:
        events = _from_daemon(client, follow, since, kinds, instance)
    try:
        for event in events:
            click.echo(json.dumps(event) if as_json else event_line(event))
    except KeyboardInterrupt:
        pass
    return 0


def _from_daemon(client: ControlClient, follow: bool, since: int, kinds: list[str],
                 instance: str | None) -> Iterator[dict[str, Any]]:
    args: dict[str, Any] = {"since": since, "follow": follow}
    if kinds:
        args["kinds"] = kinds
    if instance is not None:
        args["instance"] = instance
    with client:
        yield from client.open_stream("events", args)


def _from_store(cfg: ClusterConfig, follow: bool, since: int, kinds: list[str],
                instance: str | None) -> Iterator[dict[str, Any]]:
    with Store(cfg.db_path, readonly=True) as store:
        if instance is not None:
            known = [row["id"] for row in store.instances()]
            if instance not in known:
                raise UnknownInstance(instance, known)
        last = since
        while True:
            batch = store.events(since=last, limit=_BATCH, kinds=kinds, instance=instance)
            yield from batch
            if batch:
                last = batch[-1]["seq"]
            if len(batch) == _BATCH:
                continue
            if not follow:
                return
            time.sleep(_POLL_S)
