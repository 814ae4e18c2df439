"""``aimterm attach``: hand the local terminal to an instance of a running cluster.

The terminal hand-over of :mod:`aimterm.cli.handover`, over the control socket: the
terminal goes to raw mode, the instance's screen is redrawn from the daemon's first item,
keystrokes (minus the detach key) and window size changes go to the daemon, the instance's
output comes back, and the terminal is restored on every way out. Without ``--read-only``
the instance is ATTACHED meanwhile (automation routes around it) and is given back when this
command leaves.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from aimterm.cli.cluster import connect
from aimterm.cli.handover import Handover, detach_byte, window_size
from aimterm.config import resolve_config
from aimterm.errors import AimtermError
from aimterm.ipc.client import ClientStream

#: How long leaving waits for the daemon to confirm the instance was given back.
_DETACH_WAIT_S = 5.0


def parse_detach_key(text: str) -> bytes:
    """``ctrl-]`` / ``ctrl-a`` / ``^]`` / a single character → the byte it sends."""
    try:
        return detach_byte(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--detach-key'") from None


class _Reader(threading.Thread):
    """Draws the stream's items; ends the hand-over when the stream ends."""

    def __init__(self, items: Iterator[Any], hand: Handover) -> None:
        super().__init__(name="aimterm-attach-reader", daemon=True)
        self.items = items
        self.hand = hand
        self.error: BaseException | None = None
        self.exited: str | None = None

    def run(self) -> None:
        try:
            for item in self.items:
                if "output" in item:
                    self.hand.write(base64.b64decode(item["output"]))
                elif "exited" in item:
                    self.exited = str(item["exited"])
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            self.hand.end()


def _window(fd: int) -> list[int] | None:
    size = window_size(fd)
    return list(size) if size is not None else None


def run_attach(config: str | None, state_dir: str | None, iid: str, *, read_only: bool,
               detach_key: bytes) -> int:
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    if not os.isatty(in_fd):
        click.echo("aimterm: attach needs a terminal on stdin", err=True)
        return 2
    cfg = resolve_config(config, state_dir)
    with connect(cfg, timeout=10.0) as client:
        args: dict[str, Any] = {"id": iid, "read_only": read_only}
        size = _window(out_fd)
        if size is not None and not read_only:
            args["size"] = size
        stream = client.open_stream("attach", args)
        with stream:
            items = iter(stream)
            first = next(items, None)  # errors (unknown id, held by another) come out here
            if first is None:
                click.echo(f"aimterm: the daemon ended the attach to {iid}", err=True)
                return 1
            return _session(stream, items, first, in_fd, out_fd, read_only, detach_key)


def _session(stream: ClientStream, items: Iterator[Any], first: dict[str, Any], in_fd: int,
             out_fd: int, read_only: bool, detach_key: bytes) -> int:
    def send(data: bytes) -> None:
        stream.send_input({"data": base64.b64encode(data).decode("ascii")})

    def resize(rows: int, cols: int) -> None:
        stream.send_input({"resize": [rows, cols]})

    hand = Handover(in_fd, out_fd, detach_key=detach_key, send=None if read_only else send,
                    resize=None if read_only else resize)
    reader = _Reader(items, hand)
    try:
        with hand:
            hand.write(base64.b64decode(first.get("screen", "")))
            reader.start()
            how = hand.pump()
            if how != "ended" and not stream.done:
                # Ask the daemon to give the instance back, and wait (bounded) until it has
                # (its last output is drawn meanwhile, before the terminal is restored).
                try:
                    stream.send_input({"detach": True})
                except AimtermError:
                    pass
                else:
                    reader.join(_DETACH_WAIT_S)
    finally:
        stream.close()
    if how == "signal" and hand.signal is not None:
        return 128 + hand.signal  # as a shell reports a command the signal ended
    if how != "ended":
        return 0
    if reader.error is not None:
        if isinstance(reader.error, AimtermError):
            raise reader.error
        click.echo(f"aimterm: the attach broke: {reader.error}", err=True)
        return 1
    if reader.exited is not None:
        click.echo(f"aimterm: the instance is gone ({reader.exited})", err=True)
        return 1
    click.echo("aimterm: the daemon ended the attach", err=True)
    return 1
