"""The control server: a whitelist of async ops served on a private Unix socket.

:class:`ControlServer` listens on the shared reader loop (:class:`~aimterm.term.loop.IOLoop`)
and exposes exactly the ops it is given — there is no reflection, so nothing else in the
process is reachable from the socket. Every request runs as its own task, so a slow op does
not hold up the others on the connection; replies are written under a per-connection lock.

An op raising an :class:`~aimterm.errors.AimtermError` gets an *expected* error reply with
the error's code; anything else is a crash: the traceback goes to the log and the client gets
``internal`` without it.

Socket hygiene (after qtile's ``libqtile/ipc.py``):

- the socket's folder is created 0700 and refused (:class:`UnsafeRuntimeDir`) if it is a link,
  owned by another user or open to group/other (:func:`aimterm.statedir.ensure_private_dir`);
- the socket is bound under a 0177 umask and chmod-ed 0600;
- each connection's peer uid is read with ``SO_PEERCRED``: another uid gets one
  ``permission_denied`` reply and is disconnected;
- a socket file nobody listens on (connect → ``ECONNREFUSED``) is stale and replaced; a live
  one means another server: :class:`AlreadyRunning`;
- ``stop()`` removes the socket file, unless another server has replaced it meanwhile.

Nothing listens on TCP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aimterm.errors import (
    AimtermError,
    Cancelled,
    ConfigError,
    ConnectionLost,
    LimitExceeded,
    PermissionDenied,
    ProtocolError,
    UnknownOp,
)
from aimterm.ipc.framing import READ_CHUNK, ByteBudget, LineReader
from aimterm.ipc.protocol import (
    CANCEL_OP,
    MAX_LINE,
    PROTOCOL_VERSION,
    Request,
    decode,
    encode,
    end,
    error_reply,
    hello,
    item,
    ok_reply,
    parse_request,
)
from aimterm.ipc.unixsock import bind_private, clear_stale, peer_cred
from aimterm.statedir import ensure_private_dir
from aimterm.term.loop import IOLoop

__all__ = ["ControlServer", "Op", "Stream", "StreamOp"]

log = logging.getLogger(__name__)

#: A plain op: the request's ``args`` → a JSON-able result (or raise an AimtermError).
Op = Callable[[dict[str, Any]], Awaitable[Any]]
#: A streaming op: sends items through the :class:`Stream`; returning ends the stream.
StreamOp = Callable[[dict[str, Any], "Stream"], Awaitable[None]]

#: ``sun_path`` is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 107
_STOP_GRACE_S = 2.0
#: Requests running plus replies waiting, per connection. Past it the server reads no more
#: from that connection until some finish, so a client that sends without reading its
#: replies costs bounded memory (its own writes block in the kernel instead).
MAX_PENDING = 256


class Stream:
    """The server side of one streaming request, handed to a :data:`StreamOp`.

    ``send(item)`` writes one item (waiting while the client is slow to read); ``inputs``
    receives the payloads of the client's ``input`` messages; ``cancelled`` is set when the
    client cancels — the op's task is then cancelled too, so ``try``/``finally`` is enough
    for cleanup."""

    def __init__(self, conn: _Connection, req_id: int, op: str) -> None:
        self.id = req_id
        self.op = op
        self.inputs: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_PENDING)
        self.cancelled = asyncio.Event()
        #: Items answering bad input lines, spawned and maybe not yet written: the stream's
        #: end waits for them, so that no item follows it.
        self.replies: set[asyncio.Task[None]] = set()
        self._conn = conn

    async def send(self, payload: Any) -> None:
        await self._conn.send(item(self.id, payload))

    async def send_encoded(self, payloads: Sequence[str]) -> None:
        """Items whose payloads are JSON objects encoded already (the store's events), in
        one write. Each must be JSON as :func:`~aimterm.ipc.protocol.encode` would allow:
        a text with NaN or Infinity in it goes through :meth:`send`, which refuses it."""
        head = f'{{"v":{PROTOCOL_VERSION},"id":{self.id},"item":'
        lines: list[bytes] = []
        for text in payloads:
            if "NaN" in text or "Infinity" in text:
                if lines:
                    await self._conn.send_line(b"".join(lines))
                    lines = []
                await self.send(json.loads(text))
                continue
            line = f"{head}{text}}}\n".encode()
            if len(line) > MAX_LINE:
                raise ProtocolError(f"message of {len(line)} bytes exceeds the "
                                    f"{MAX_LINE}-byte limit")
            lines.append(line)
        if lines:
            await self._conn.send_line(b"".join(lines))

    @property
    def peer_pid(self) -> int:
        return self._conn.peer_pid


class _Connection:
    """One accepted client: its writer, its running requests and its open streams."""

    def __init__(self, writer: asyncio.StreamWriter, peer_pid: int) -> None:
        self.writer = writer
        self.peer_pid = peer_pid
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.streams: dict[int, Stream] = {}
        #: Set when the connection goes away (client left, server stopping): cancelled
        #: requests then end silently instead of answering.
        self.closing = False
        #: Error replies spawned and not yet written (requests count through ``tasks``).
        self.pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._wlock = asyncio.Lock()

    async def room(self) -> None:
        """Wait until fewer than :data:`MAX_PENDING` requests and replies are outstanding."""
        while len(self.tasks) + self.pending >= MAX_PENDING:
            self._room.clear()
            await self._room.wait()

    def wake(self) -> None:
        if len(self.tasks) + self.pending < MAX_PENDING:
            self._room.set()

    async def send(self, msg: Mapping[str, Any]) -> None:
        await self.send_line(encode(msg))

    async def send_line(self, line: bytes) -> None:
        async with self._wlock:
            if self.closing or self.writer.is_closing():
                raise ConnectionLost("the client has disconnected")
            try:
                self.writer.write(line)
                await self.writer.drain()
            except (ConnectionError, OSError) as exc:
                self.closing = True
                raise ConnectionLost(f"the client has disconnected ({exc})") from None

    async def send_quietly(self, msg: Mapping[str, Any]) -> None:
        """Send a reply nobody may be waiting for any more: a gone client is not an error."""
        try:
            await self.send(msg)
        except ConnectionLost:
            pass

    def cancel(self, req_id: int) -> bool:
        task = self.tasks.get(req_id)
        if task is None or task.done():
            return False
        stream = self.streams.get(req_id)
        if stream is not None:
            stream.cancelled.set()
        # On the next pass, not now: a request read in the same pass as its cancel has not
        # taken its first step yet, and a task cancelled before it starts never runs the code
        # that answers it. Its first step was scheduled first, so it will have begun.
        asyncio.get_running_loop().call_soon(task.cancel)
        return True

    def done(self, req_id: int) -> None:
        """The request's outcome is decided: too late to cancel it (its reply is on its way,
        and a cancel now must not cut the write of it short)."""
        if self.tasks.get(req_id) is asyncio.current_task():
            del self.tasks[req_id]
            self.streams.pop(req_id, None)
            self.wake()

    def close(self) -> None:
        self.closing = True
        for task in list(self.tasks.values()):
            task.cancel()
        self.writer.close()


class ControlServer:
    """Serve ``ops`` (and the streaming ops in ``streaming``) on the Unix socket ``path``.

    ``start()`` and ``stop()`` may be called from any thread; from the loop thread itself,
    ``stop()`` closes at once without waiting for the requests' tasks to unwind (``await
    stop_async()`` does wait). Also a context manager."""

    def __init__(self, path: str | os.PathLike[str], ops: Mapping[str, Op], *,
                 streaming: Mapping[str, StreamOp] | None = None,
                 loop: IOLoop | None = None) -> None:
        self.path = Path(path)
        self._ops = dict(ops)
        self._streaming = dict(streaming or {})
        both = set(self._ops) & set(self._streaming)
        if both:
            raise ValueError(f"ops both plain and streaming: {', '.join(sorted(both))}")
        if CANCEL_OP in self._ops or CANCEL_OP in self._streaming:
            raise ValueError(f"{CANCEL_OP!r} is built in and cannot be overridden")
        size = len(os.fsencode(self.path))
        if size > _MAX_SOCKET_PATH:
            raise ConfigError(f"a Unix socket path may be at most {_MAX_SOCKET_PATH} bytes, "
                              f"this one has {size}", path=str(self.path))
        self._io = loop if loop is not None else IOLoop.shared()
        self._uid = os.getuid()
        self._sock: socket.socket | None = None
        self._ident: tuple[int, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._opening: asyncio.Task[None] | None = None
        self._conns: set[_Connection] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._budget = ByteBudget()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def ops(self) -> list[str]:
        """Every op a client may call (plain and streaming), ``cancel`` included."""
        return sorted({*self._ops, *self._streaming, CANCEL_OP})

    def is_serving(self) -> bool:
        return self._sock is not None

    def start(self) -> None:
        """Bind the socket and start serving. Raises :class:`UnsafeRuntimeDir`,
        :class:`AlreadyRunning`; clients may connect as soon as this returns."""
        self._io.run_sync(self._start_on_loop)

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect every client, cancel their requests, remove the socket file."""
        if self._io.in_loop() or not self._io.is_running():
            self._close_now()
            return
        fut = asyncio.run_coroutine_threadsafe(self.stop_async(), self._io.loop)
        fut.result(timeout)

    async def stop_async(self) -> None:
        self._close_now()
        pending = [t for t in [*self._handlers, *self._tasks] if not t.done()]
        for conn in list(self._conns):
            pending.extend(t for t in conn.tasks.values() if not t.done())
        if pending:
            await asyncio.wait(pending, timeout=_STOP_GRACE_S)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _start_on_loop(self) -> None:
        if self._sock is not None:
            raise RuntimeError(f"the control server on {self.path} is already started")
        ensure_private_dir(self.path.parent)
        clear_stale(self.path)
        self._sock = bind_private(self.path)
        st = os.stat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        # The socket already listens, so connections queue in the backlog until the asyncio
        # server takes it over on the next pass of the loop.
        self._opening = self._io.loop.create_task(self._open(self._sock))
        log.info("control server listening on %s", self.path)

    async def _open(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._handle, sock=sock,
                                                  limit=READ_CHUNK)

    def _close_now(self) -> None:
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        self._opening = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for conn in list(self._conns):
            conn.close()
        if self._ident is not None:
            # Only our own socket file: a server started on the same path since then keeps its.
            try:
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._ident:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
            self._ident = None
            log.info("control server on %s stopped", self.path)

    # -- connections -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            pid, uid, _gid = peer_cred(writer)
        except OSError:
            writer.close()  # gone before we could look at it
            return
        self._handlers.add(task)
        conn = _Connection(writer, pid)
        lines = LineReader(reader, self._budget, MAX_LINE)
        self._conns.add(conn)
        try:
            if uid != self._uid:
                log.warning("refused a connection to %s from uid %d (pid %d)", self.path, uid, pid)
                await conn.send(error_reply(None, PermissionDenied(
                    f"the control socket {self.path} belongs to uid {self._uid}; "
                    f"uid {uid} may not use it")))
                return
            await conn.send(hello(ops=sorted([*self._ops, CANCEL_OP]),
                                  streams=sorted(self._streaming)))
            while True:
                await conn.room()  # a client that does not read its replies stops being read
                try:
                    line = await lines.next_line()
                except (ProtocolError, LimitExceeded) as exc:
                    # The rest of the input cannot be told from the next message: answer
                    # once and hang up.
                    await conn.send(error_reply(None, exc))
                    return
                if line is None:
                    return  # EOF (possibly mid-line: the client went away)
                self._dispatch(conn, line)
        except (ConnectionLost, ConnectionError):
            pass
        finally:
            lines.close()
            conn.close()
            self._conns.discard(conn)
            self._handlers.discard(task)

    def _dispatch(self, conn: _Connection, line: bytes) -> None:
        try:
            req = parse_request(decode(line))
        except ProtocolError as exc:
            rid, is_input = _guess_id(line)
            if is_input and rid in conn.streams:
                # Bad input for a stream that goes on: an item, not an error reply the client
                # would take for the stream's end.
                stream = conn.streams[rid]
                stream.replies.add(self._reply(
                    conn, item(rid, {"error": {"code": exc.code, "message": str(exc)}})))
            else:
                self._reply(conn, error_reply(rid, exc))
            return
        if req.op is None:
            self._feed_input(conn, req)
        elif req.op == CANCEL_OP:
            found = conn.cancel(req.args["id"])
            self._reply(conn, ok_reply(req.id, {"cancelled": found}))
        elif req.id in conn.tasks:
            self._reply(conn, error_reply(
                req.id, ProtocolError(f"request id {req.id} is already in use")))
        elif req.op in self._ops:
            self._track(conn, req.id, self._spawn(self._call(conn, req, self._ops[req.op])))
        elif req.op in self._streaming:
            stream = Stream(conn, req.id, req.op)
            conn.streams[req.id] = stream
            task = self._spawn(self._stream(conn, req, self._streaming[req.op], stream))
            self._track(conn, req.id, task)
        else:
            self._reply(conn, error_reply(req.id, UnknownOp(req.op, self.ops)))

    def _feed_input(self, conn: _Connection, req: Request) -> None:
        stream = conn.streams.get(req.id)
        if stream is None:
            self._reply(conn, error_reply(
                req.id, ProtocolError(f"no open stream {req.id} to take input")))
            return
        assert req.input is not None
        try:
            stream.inputs.put_nowait(req.input)
        except asyncio.QueueFull:
            # An item, not an error reply: the stream itself goes on.
            stream.replies.add(self._reply(conn, item(req.id, {"error": {
                "code": LimitExceeded.code,
                "message": f"{MAX_PENDING} inputs already wait on this stream; "
                           "this one is dropped"}})))

    def _reply(self, conn: _Connection, msg: Mapping[str, Any]) -> asyncio.Task[None]:
        conn.pending += 1

        async def send() -> None:
            try:
                await conn.send_quietly(msg)
            finally:
                conn.pending -= 1
                conn.wake()

        return self._spawn(send())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._io.loop.create_task(coro)
        # The loop keeps only weak references to tasks: hold each until it is done.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    def _track(conn: _Connection, req_id: int, task: asyncio.Task[None]) -> None:
        conn.tasks[req_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if conn.tasks.get(req_id) is done:
                del conn.tasks[req_id]
            conn.streams.pop(req_id, None)
            conn.wake()

        task.add_done_callback(forget)

    # -- requests ----------------------------------------------------------------------------

    async def _call(self, conn: _Connection, req: Request, op: Op) -> None:
        try:
            result = await op(req.args)
            line = encode(ok_reply(req.id, result))
        except asyncio.CancelledError:
            if conn.closing:
                raise
            line = encode(error_reply(req.id, Cancelled(f"{req.op} was cancelled")))
        except Exception as exc:
            line = self._failure(req, exc)
        conn.done(req.id)
        try:
            await conn.send_line(line)
        except ConnectionLost:
            pass

    async def _stream(self, conn: _Connection, req: Request, op: StreamOp,
                      stream: Stream) -> None:
        try:
            await op(req.args, stream)
            line = encode(end(req.id, cancelled=stream.cancelled.is_set()))
        except asyncio.CancelledError:
            if conn.closing:
                raise
            line = encode(end(req.id, cancelled=True))
        except ConnectionLost:
            return
        except Exception as exc:
            line = self._failure(req, exc)
        conn.done(req.id)  # (no more items for bad input join stream.replies after this)
        try:
            # A reply spawned for a bad input line may not have been written yet.
            await asyncio.gather(*stream.replies)
            await conn.send_line(line)
        except ConnectionLost:
            pass

    @staticmethod
    def _failure(req: Request, exc: Exception) -> bytes:
        if not isinstance(exc, AimtermError):
            log.error("op %r (request %d) crashed", req.op, req.id, exc_info=exc)
        try:
            return encode(error_reply(req.id, exc))
        except (TypeError, ValueError, AimtermError):
            log.error("cannot encode the error of op %r", req.op, exc_info=True)
            return encode(error_reply(req.id, RuntimeError("unencodable error")))


def _guess_id(line: bytes) -> tuple[int | None, bool]:
    """The ``id`` of a message that failed validation, when it has a usable one, and whether
    the message is a stream's input."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):  # (not JSON, or nested past the parser's stack)
        return None, False
    if not isinstance(raw, dict):
        return None, False
    value = raw.get("id")
    usable = isinstance(value, int) and not isinstance(value, bool)
    return (value if usable else None), "input" in raw and "op" not in raw
