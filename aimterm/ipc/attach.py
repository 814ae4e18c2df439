"""The ``attach`` op: a person at an instance's terminal, over the control socket.

The client gets the instance's screen, then its output as it comes. A writer holds the
instance ATTACHED (automation routes around it) until the stream ends in any way; watchers
(``read_only``) may be any number. Output waits for each client in an
:class:`~aimterm.ipc.backlog.OutputBacklog`, so a client that reads slowly costs bounded
memory and gets its screen redrawn when it catches up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from aimterm.errors import AimtermError, NotReady, ProtocolError
from aimterm.handle import SessionHandle
from aimterm.ipc.backlog import MAX_BACKLOG_TOTAL, OutputBacklog
from aimterm.ipc.framing import ByteBudget
from aimterm.ipc.server import Stream
from aimterm.states import LIVE_STATES, State

if TYPE_CHECKING:
    from aimterm.daemon import Daemon

__all__ = ["Attach"]

log = logging.getLogger(__name__)

#: How often an idle attachment looks whether its instance is still the one attached to.
_POLL_S = 0.25
_MAX_ID = 256


class Attach:
    """The ``attach`` op of one daemon, with the writers it holds and the watchers' budget."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._writers: dict[str, Stream] = {}  # instance -> the stream attached to type into it
        self._budget = ByteBudget(MAX_BACKLOG_TOTAL)

    async def __call__(self, args: dict[str, Any], stream: Stream) -> None:
        """Args: ``id``; ``read_only`` (watch only: any number at once); ``size``
        ``[rows, cols]`` (a writer's window, applied before the screen is drawn). Items:
        ``{"screen", "rows", "cols", "state"}`` first, then ``{"output"}`` (base64), an
        ``{"error"}`` for refused input, and ``{"exited"}`` last if the instance goes away.
        An ``{"output", "redraw": true, "dropped": N}`` item redraws the whole screen after
        the client fell behind and ``N`` bytes of output were dropped. Input messages:
        ``{"data"}`` (base64 keystrokes), ``{"resize": [rows, cols]}``, ``{"detach":
        true}`` (ends the stream)."""
        iid = args.get("id")
        if not isinstance(iid, str) or not 0 < len(iid) <= _MAX_ID:
            raise ProtocolError(f"attach takes 'id' (an instance id of at most {_MAX_ID} "
                                "characters)")
        read_only = bool(args.get("read_only", False))
        size = _size(args.get("size")) if args.get("size") is not None else None
        assert self.daemon.pool is not None
        session = self.daemon.pool.instance(iid).session
        run = session.starts  # the run attached to: a restart ends the attachment
        if not _running(session):
            raise NotReady("the instance is not running", instance=iid,
                           state=session.state.value)
        if not read_only:
            if self._writers.get(iid) is not None:
                raise NotReady("another client is attached to type into this instance "
                               "(attach with read_only to watch)", instance=iid,
                               state=session.state.value)
            if session.state is State.ATTACHED:
                raise NotReady("the instance is already attached", instance=iid,
                               state=session.state.value)
        backlog = OutputBacklog(self._budget)
        # Listener, state and screen in one step of the loop: no output falls in between.
        remove = session.add_output_listener(lambda data, _at: backlog.put(data))
        feeder: asyncio.Task[None] | None = None
        held = False
        try:
            if not read_only:
                self._writers[iid] = stream
                session.attach()
                held = True
                if size is not None:
                    session.resize(*size)
            await stream.send({"screen": _b64(session.render_screen()), "rows": session.rows,
                               "cols": session.cols, "state": session.state.value})
            done = asyncio.Event()
            feeder = asyncio.get_running_loop().create_task(
                _inputs(session, stream, read_only, done))
            while not done.is_set():
                if await backlog.wait(_POLL_S):
                    await _send_waiting(stream, session, backlog)
                    continue
                if feeder.done():
                    feeder.result()  # its failure (a gone client) ends the stream too
                    return
                if self.daemon.closed or session.starts != run or not _running(session):
                    await stream.send({"exited": session.state.value})
                    return
            # The client asked to leave: what came before goes out.
            await _send_waiting(stream, session, backlog)
        finally:
            remove()
            backlog.close()
            if feeder is not None and not feeder.done():
                feeder.cancel()
            if self._writers.get(iid) is stream:
                del self._writers[iid]
            if held and session.state is State.ATTACHED and session.starts == run:
                try:
                    session.detach()
                except AimtermError:
                    log.warning("detaching %s failed", iid, exc_info=True)


async def _send_waiting(stream: Stream, session: SessionHandle, backlog: OutputBacklog) -> None:
    waiting = backlog.take()
    if waiting is None:
        return
    data, dropped = waiting
    if dropped:
        # Rendered now, on the loop thread: output from here on follows this screen.
        await stream.send({"output": _b64(session.render_screen()), "redraw": True,
                           "dropped": dropped})
    else:
        await stream.send({"output": _b64(data)})


async def _inputs(session: SessionHandle, stream: Stream, read_only: bool,
                  done: asyncio.Event) -> None:
    while True:
        msg = await stream.inputs.get()
        if msg.get("detach"):
            done.set()
            return
        if "data" in msg:
            if read_only:
                await stream.send({"error": {"code": "read_only", "message":
                                             "attached read-only: input is not sent"}})
                continue
            try:
                data = base64.b64decode(msg["data"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                await stream.send({"error": {"code": "bad_request",
                                             "message": "'data' must be base64"}})
                continue
            try:
                session.write(data)
            except AimtermError as exc:
                await stream.send({"error": {"code": exc.code, "message": str(exc)}})
        elif "resize" in msg:
            if read_only:
                continue
            try:
                session.resize(*_size(msg["resize"]))
            except ProtocolError as exc:
                await stream.send({"error": {"code": exc.code, "message": str(exc)}})


def _running(session: SessionHandle) -> bool:
    return session.state in LIVE_STATES and session.state is not State.STOPPING


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _size(value: Any) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 10000
                       for v in value)):
        raise ProtocolError("a size must be [rows, cols], two integers > 0")
    return value[0], value[1]
