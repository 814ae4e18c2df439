"""``aimterm attach``: hand the local terminal to an instance of a running cluster.

The same terminal handling as :mod:`aimterm.cli.local_attach`, over the control socket: the
terminal goes to raw mode, the instance's screen is redrawn from the daemon's first item,
keystrokes (minus the detach key) and window size changes go to the daemon, the instance's
output comes back, and the terminal is restored on every way out. Without ``--read-only``
the instance is ATTACHED meanwhile (automation routes around it) and is given back when this
command leaves.
"""

from __future__ import annotations

import base64
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

from aimterm.cli.cluster import connect
from aimterm.config import resolve_config
from aimterm.errors import AimtermError
from aimterm.ipc.client import ClientStream

#: Named detach keys (``ctrl-X``) → the byte the terminal sends for them.
_CTRL_SPECIAL = {"@": 0x00, "[": 0x1B, "\\": 0x1C, "]": 0x1D, "^": 0x1E, "_": 0x1F, "?": 0x7F}
#: How long leaving waits for the daemon to confirm the instance was given back.
_DETACH_WAIT_S = 5.0


def parse_detach_key(text: str) -> bytes:
    """``ctrl-]`` / ``ctrl-a`` / ``^]`` / a single character → the byte it sends."""
    spec = text.strip()
    lower = spec.lower()
    for prefix in ("ctrl-", "ctrl+", "c-", "^"):
        if lower.startswith(prefix) and len(spec) == len(prefix) + 1:
            char = spec[-1]
            if char in _CTRL_SPECIAL:
                return bytes([_CTRL_SPECIAL[char]])
            if char.isalpha() and char.isascii():
                return bytes([ord(char.lower()) - ord("a") + 1])
            break
    else:
        if len(spec) == 1 and spec.isascii():
            return spec.encode("ascii")
    raise click.BadParameter(f"expected ctrl-<letter or one of @[\\]^_?>, got {text!r}",
                             param_hint="'--detach-key'")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return
        view = view[n:]


class _Reader(threading.Thread):
    """Prints the stream's items; wakes the main loop (``wake``) when the stream ends."""

    def __init__(self, items: Iterator[Any], out_fd: int, wake: int) -> None:
        super().__init__(name="aimterm-attach-reader", daemon=True)
        self.items = items
        self.out_fd = out_fd
        self.wake = wake
        self.error: BaseException | None = None
        self.exited: str | None = None

    def run(self) -> None:
        try:
            for item in self.items:
                if "output" in item:
                    _write_all(self.out_fd, base64.b64decode(item["output"]))
                elif "exited" in item:
                    self.exited = str(item["exited"])
        except BaseException as exc:  # handed to the main thread
            self.error = exc
        finally:
            try:
                os.write(self.wake, b"e")
            except OSError:
                pass


def _window(fd: int) -> list[int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return [size.lines, size.columns] if size.lines > 0 and size.columns > 0 else None


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
    saved = termios.tcgetattr(in_fd)
    rfd, wfd = os.pipe()  # wakes the select loop on resize and when the stream ends
    os.set_blocking(wfd, False)

    def on_winch(_sig: int, _frame: FrameType | None) -> None:
        try:
            os.write(wfd, b"w")
        except OSError:
            pass

    old_winch = signal.signal(signal.SIGWINCH, on_winch)
    reader = _Reader(items, out_fd, wfd)
    how = "detached"
    try:
        tty.setraw(in_fd)
        _write_all(out_fd, base64.b64decode(first.get("screen", "")))
        reader.start()
        while True:
            ready, _, _ = select.select([in_fd, rfd], [], [])
            if rfd in ready:
                wakes = os.read(rfd, 64)
                if b"e" in wakes:
                    how = "ended"
                    break
                size = _window(out_fd)
                if size is not None and not read_only:
                    stream.send_input({"resize": size})
            if in_fd in ready:
                data = os.read(in_fd, 4096)
                if not data:
                    break
                leave = detach_key in data
                if leave:
                    data = data.split(detach_key, 1)[0]
                if data and not read_only:
                    stream.send_input({"data": base64.b64encode(data).decode("ascii")})
                if leave:
                    break
        if how == "detached" and not stream.done:
            # Ask the daemon to give the instance back, and wait (bounded) until it has.
            try:
                stream.send_input({"detach": True})
            except AimtermError:
                pass
            else:
                reader.join(_DETACH_WAIT_S)
    finally:
        termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, old_winch)
        stream.close()
        if not reader.is_alive():  # (a reader still blocked may yet write to the pipe)
            os.close(rfd)
            os.close(wfd)
        _write_all(out_fd, b"\r\n")
    if how == "detached":
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
