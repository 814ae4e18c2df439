"""Clients of the control socket: :class:`ControlClient` (blocking, thread-safe) and
:class:`AsyncControlClient` (asyncio), with the same API.

Both connect, check the server's hello, and then match replies to requests by ``id``, so
several calls (from several threads, or tasks) and streams share one connection. An error
reply is raised as the aimterm error of its code (:func:`~aimterm.ipc.protocol.error_from_wire`);
a missing or dead socket is :class:`~aimterm.errors.DaemonNotRunning`.

The blocking client has one reader thread that dispatches every incoming message to the
queue of its request; a request whose caller gave up (timeout, closed stream) is cancelled on
the server and its late messages are dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import itertools
import os
import queue
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal

from aimterm.errors import (
    AimtermError,
    ConnectionLost,
    DaemonNotRunning,
    IpcTimeout,
    PermissionDenied,
    ProtocolError,
    UnsupportedVersion,
)
from aimterm.ipc.protocol import (
    CANCEL_OP,
    MAX_LINE,
    PROTOCOL_VERSION,
    decode,
    default_socket_path,
    encode,
    error_from_wire,
    input_message,
    request,
)

__all__ = ["AsyncClientStream", "AsyncControlClient", "ClientStream", "ControlClient"]

DEFAULT_TIMEOUT = 30.0


class _Default(enum.Enum):
    TIMEOUT = "the client's timeout"


#: ``timeout`` argument of a request: seconds, None (wait for ever), or the client's default.
Timeout = float | None | Literal[_Default.TIMEOUT]
_Incoming = dict[str, Any] | AimtermError


class _FutureInbox:
    """Where the reply of a :meth:`ControlClient.request_future` goes: straight into its
    future, on the reader thread (no thread waits for it)."""

    def __init__(self, client: ControlClient, req_id: int, op: str) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._client = client
        self._id = req_id
        self._op = op

    def put(self, msg: _Incoming) -> None:
        self._client._unregister(self._id)
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            self.future.set_result(_result(self._op, msg))
        except AimtermError as exc:
            self.future.set_exception(exc)


def _connect_error(path: str, exc: OSError) -> AimtermError:
    if isinstance(exc, FileNotFoundError):
        return DaemonNotRunning(path, "no socket")
    if isinstance(exc, ConnectionRefusedError):
        return DaemonNotRunning(path, "nobody listening")
    if isinstance(exc, PermissionError):
        return PermissionDenied(f"cannot reach the control socket {path}: permission denied")
    return DaemonNotRunning(path, os.strerror(exc.errno) if exc.errno else str(exc))


def _check_hello(line: bytes, path: str) -> dict[str, Any]:
    if not line.endswith(b"\n"):
        raise ConnectionLost(f"the server on {path} closed the connection before its hello")
    msg = decode(line)
    if msg.get("ok") is False:  # refused: e.g. permission_denied
        raise error_from_wire(msg.get("error") or {})
    info = msg.get("hello")
    if not isinstance(info, dict):
        raise ProtocolError(f"expected the server's hello on {path}, got {msg!r}")
    if info.get("protocol") != PROTOCOL_VERSION:
        raise UnsupportedVersion(info.get("protocol"), (PROTOCOL_VERSION,))
    return info


def _result(op: str, msg: _Incoming) -> Any:
    if isinstance(msg, AimtermError):
        raise msg
    if msg.get("ok") is True:
        return msg.get("result")
    if msg.get("ok") is False:
        raise error_from_wire(msg.get("error") or {})
    if "item" in msg or "end" in msg:
        raise ProtocolError(f"{op!r} is a streaming op: use stream()")
    raise ProtocolError(f"unexpected reply to {op!r}: {msg!r}")


def _stream_step(op: str, msg: _Incoming) -> tuple[bool, Any]:
    """(True, item) for an item, (False, cancelled) for the end; raises an error reply."""
    if isinstance(msg, AimtermError):
        raise msg
    if "item" in msg:
        return True, msg["item"]
    if msg.get("end") is True:
        return False, bool(msg.get("cancelled"))
    if msg.get("ok") is False:
        raise error_from_wire(msg.get("error") or {})
    if msg.get("ok") is True:
        raise ProtocolError(f"{op!r} is not a streaming op: use call()")
    raise ProtocolError(f"unexpected message in the stream of {op!r}: {msg!r}")


# -- blocking ------------------------------------------------------------------------------------

class ControlClient:
    """A blocking client; ``call`` and ``stream`` may be used from several threads at once.

    ``timeout`` bounds connecting, the hello, and each ``call`` (None: no bound); streams wait
    for items without a bound unless :meth:`open_stream` is given one."""

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = os.fspath(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wlock = threading.Lock()
        self._pending: dict[int, queue.Queue[_Incoming] | _FutureInbox] = {}
        self._lost: str | None = None
        self._buf = bytearray()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(self.path)
            except TimeoutError:
                raise IpcTimeout("connect", timeout or 0.0) from None
            except OSError as exc:
                raise _connect_error(self.path, exc) from None
            self._sock = sock
            try:
                self.hello = _check_hello(self._read_line(), self.path)
            except TimeoutError:
                raise IpcTimeout("hello", timeout or 0.0) from None
            except OSError as exc:
                raise ConnectionLost(f"reading the hello from {self.path}: {exc}") from None
            sock.settimeout(None)  # the reader thread blocks; callers time out on their queue
        except BaseException:
            sock.close()
            raise
        self._reader = threading.Thread(target=self._read_loop, name="aimterm-ipc-client",
                                        daemon=True)
        self._reader.start()

    # -- public ----------------------------------------------------------------------------

    def call(self, op: str, /, **args: Any) -> Any:
        """Call ``op`` with ``args``; return its result or raise its error."""
        return self.request(op, args)

    def request(self, op: str, args: Mapping[str, Any] | None = None, *,
                timeout: Timeout = _Default.TIMEOUT) -> Any:
        """:meth:`call` with the arguments as a mapping and an own ``timeout``."""
        wait = self.timeout if timeout is _Default.TIMEOUT else timeout
        req_id, inbox = self._register()
        try:
            self._send(request(req_id, op, args))
            try:
                msg = inbox.get(timeout=wait)
            except queue.Empty:
                self._cancel(req_id)
                raise IpcTimeout(op, wait or 0.0) from None
            return _result(op, msg)
        finally:
            self._unregister(req_id)

    def request_future(self, op: str, args: Mapping[str, Any] | None = None
                       ) -> concurrent.futures.Future[Any]:
        """Send a request and return at once: the future gets its result or error (no
        timeout; cancelling the future cancels the request on the server). Its callbacks run
        on the client's reader thread, so they must not wait for another reply."""
        with self._lock:
            if self._lost is not None:
                raise ConnectionLost(f"{self._lost} ({self.path})")
            req_id = next(self._ids)
            inbox = _FutureInbox(self, req_id, op)
            self._pending[req_id] = inbox
        future = inbox.future

        def on_done(done: concurrent.futures.Future[Any]) -> None:
            if done.cancelled():
                self._unregister(req_id)
                self._cancel(req_id)

        future.add_done_callback(on_done)
        try:
            self._send(request(req_id, op, args))
        except BaseException:
            self._unregister(req_id)
            raise
        return future

    def stream(self, op: str, /, **args: Any) -> ClientStream:
        """Start streaming op ``op``: iterate the result for its items; closing the iterator
        (or the stream) before the end cancels it on the server."""
        return self.open_stream(op, args)

    def open_stream(self, op: str, args: Mapping[str, Any] | None = None, *,
                    timeout: float | None = None) -> ClientStream:
        """:meth:`stream` with the arguments as a mapping; ``timeout`` bounds each item."""
        req_id, inbox = self._register()
        try:
            self._send(request(req_id, op, args))
        except BaseException:
            self._unregister(req_id)
            raise
        return ClientStream(self, req_id, op, inbox, timeout)

    def close(self) -> None:
        with self._lock:
            if self._lost is None:
                self._lost = "the client is closed"
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread with EOF
        except OSError:
            pass
        if self._reader is not threading.current_thread():
            self._reader.join(5)
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _register(self) -> tuple[int, queue.Queue[_Incoming]]:
        inbox: queue.Queue[_Incoming] = queue.Queue()
        with self._lock:
            if self._lost is not None:
                raise ConnectionLost(f"{self._lost} ({self.path})")
            req_id = next(self._ids)
            self._pending[req_id] = inbox
        return req_id, inbox

    def _unregister(self, req_id: int) -> None:
        with self._lock:
            self._pending.pop(req_id, None)

    def _send(self, msg: Mapping[str, Any]) -> None:
        line = encode(msg)
        with self._wlock:
            try:
                self._sock.sendall(line)
            except OSError as exc:
                raise ConnectionLost(f"cannot write to {self.path}: {exc}") from None

    def _cancel(self, req_id: int) -> None:
        """Ask the server to stop request ``req_id``; its reply is not awaited."""
        with self._lock:
            if self._lost is not None:
                return
            cancel_id = next(self._ids)
        try:
            self._send(request(cancel_id, CANCEL_OP, {"id": req_id}))
        except ConnectionLost:
            pass

    def _read_line(self) -> bytes:
        """One line, or what is left at EOF (no newline). Used by one thread at a time."""
        start = 0
        while True:
            pos = self._buf.find(b"\n", start)
            if pos >= 0:
                line = bytes(self._buf[:pos + 1])
                del self._buf[:pos + 1]
                return line
            if len(self._buf) > MAX_LINE:
                raise ProtocolError(f"the server sent a line longer than {MAX_LINE} bytes")
            start = len(self._buf)
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                line = bytes(self._buf)
                self._buf.clear()
                return line
            self._buf += chunk

    def _read_loop(self) -> None:
        reason = "the server closed the connection"
        try:
            while True:
                line = self._read_line()
                if not line.endswith(b"\n"):
                    break
                msg = decode(line)
                req_id = msg.get("id")
                if req_id is None and msg.get("ok") is False:
                    # About the connection itself (a line too long): the server hangs up next.
                    error = msg.get("error") or {}
                    reason = f"the server closed the connection: {error.get('message')}"
                    continue
                with self._lock:
                    inbox = self._pending.get(req_id) if isinstance(req_id, int) else None
                if inbox is not None:
                    inbox.put(msg)
        except (OSError, AimtermError) as exc:
            reason = f"the connection broke: {exc}"
        finally:
            with self._lock:
                if self._lost is None:
                    self._lost = reason
                lost = self._lost
                waiting = list(self._pending.values())
            for inbox in waiting:
                inbox.put(ConnectionLost(f"{lost} ({self.path})"))


class ClientStream:
    """One open stream of a :class:`ControlClient`. Iterate it for the items; ``send_input``
    feeds a stream that takes input; ``close`` (or leaving the iteration early) cancels."""

    def __init__(self, client: ControlClient, req_id: int, op: str,
                 inbox: queue.Queue[_Incoming], timeout: float | None) -> None:
        self.id = req_id
        self.op = op
        self.done = False
        #: True when the server ended the stream because it was cancelled.
        self.cancelled = False
        self._client = client
        self._inbox = inbox
        self._timeout = timeout

    def __iter__(self) -> Iterator[Any]:
        try:
            while not self.done:
                try:
                    msg = self._inbox.get(timeout=self._timeout)
                except queue.Empty:
                    raise IpcTimeout(self.op, self._timeout or 0.0) from None
                try:
                    more, value = _stream_step(self.op, msg)
                except BaseException:
                    self._finish()
                    raise
                if not more:
                    self.cancelled = value
                    self._finish()
                    return
                yield value
        finally:
            self.close()

    def send_input(self, payload: Mapping[str, Any]) -> None:
        if self.done:
            raise ProtocolError(f"the stream of {self.op!r} has ended")
        self._client._send(input_message(self.id, payload))

    def close(self) -> None:
        """Cancel the stream on the server if it is still running."""
        if not self.done:
            self._client._cancel(self.id)
            self._finish()

    def _finish(self) -> None:
        self.done = True
        self._client._unregister(self.id)

    def __enter__(self) -> ClientStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- asyncio -------------------------------------------------------------------------------------

class AsyncControlClient:
    """The asyncio twin of :class:`ControlClient`: ``await connect()`` (or ``async with``),
    ``await call(...)``, ``async for item in stream(...)``, ``await close()``. Use it from one
    event loop."""

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.path = os.fspath(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self.hello: dict[str, Any] = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Queue[_Incoming]] = {}
        self._lost: str | None = "not connected"
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None

    async def connect(self) -> AsyncControlClient:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path, limit=MAX_LINE), self.timeout)
        except asyncio.TimeoutError:
            raise IpcTimeout("connect", self.timeout or 0.0) from None
        except OSError as exc:
            raise _connect_error(self.path, exc) from None
        try:
            line = await asyncio.wait_for(reader.readline(), self.timeout)
            self.hello = _check_hello(line, self.path)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, asyncio.TimeoutError):
                raise IpcTimeout("hello", self.timeout or 0.0) from None
            if isinstance(exc, (OSError, ValueError)) and not isinstance(exc, AimtermError):
                raise ConnectionLost(f"reading the hello from {self.path}: {exc}") from None
            raise
        self._writer = writer
        self._lost = None
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop(reader))
        return self

    async def call(self, op: str, /, **args: Any) -> Any:
        return await self.request(op, args)

    async def request(self, op: str, args: Mapping[str, Any] | None = None, *,
                      timeout: Timeout = _Default.TIMEOUT) -> Any:
        wait = self.timeout if timeout is _Default.TIMEOUT else timeout
        req_id, inbox = self._register()
        try:
            self._write(request(req_id, op, args))
            try:
                msg = await asyncio.wait_for(inbox.get(), wait)
            except asyncio.TimeoutError:
                self._cancel(req_id)
                raise IpcTimeout(op, wait or 0.0) from None
            except asyncio.CancelledError:
                self._cancel(req_id)  # our caller gave up: so does the server
                raise
            return _result(op, msg)
        finally:
            self._pending.pop(req_id, None)

    def stream(self, op: str, /, **args: Any) -> AsyncClientStream:
        return self.open_stream(op, args)

    def open_stream(self, op: str, args: Mapping[str, Any] | None = None, *,
                    timeout: float | None = None) -> AsyncClientStream:
        req_id, inbox = self._register()
        try:
            self._write(request(req_id, op, args))
        except BaseException:
            self._pending.pop(req_id, None)
            raise
        return AsyncClientStream(self, req_id, op, inbox, timeout)

    async def close(self) -> None:
        if self._lost is None:
            self._lost = "the client is closed"
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass
            self._writer = None
        if self._read_task is not None:
            await asyncio.gather(self._read_task, return_exceptions=True)
            self._read_task = None

    async def __aenter__(self) -> AsyncControlClient:
        return await self.connect()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _register(self) -> tuple[int, asyncio.Queue[_Incoming]]:
        if self._lost is not None:
            raise ConnectionLost(f"{self._lost} ({self.path})")
        req_id = next(self._ids)
        inbox: asyncio.Queue[_Incoming] = asyncio.Queue()
        self._pending[req_id] = inbox
        return req_id, inbox

    def _write(self, msg: Mapping[str, Any]) -> None:
        # One write() per message: the transport buffers it whole, so lines never interleave.
        if self._writer is None or self._writer.is_closing():
            raise ConnectionLost(f"the connection to {self.path} is closed")
        self._writer.write(encode(msg))

    async def _drain(self) -> None:
        if self._writer is not None:
            try:
                await self._writer.drain()
            except (ConnectionError, OSError) as exc:
                raise ConnectionLost(f"cannot write to {self.path}: {exc}") from None

    def _cancel(self, req_id: int) -> None:
        if self._lost is not None:
            return
        try:
            self._write(request(next(self._ids), CANCEL_OP, {"id": req_id}))
        except ConnectionLost:
            pass

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        reason = "the server closed the connection"
        try:
            while True:
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    break
                msg = decode(line)
                req_id = msg.get("id")
                if req_id is None and msg.get("ok") is False:
                    error = msg.get("error") or {}
                    reason = f"the server closed the connection: {error.get('message')}"
                    continue
                inbox = self._pending.get(req_id) if isinstance(req_id, int) else None
                if inbox is not None:
                    inbox.put_nowait(msg)
        except (OSError, ValueError, AimtermError) as exc:  # ValueError: a line over the limit
            reason = f"the connection broke: {exc}"
        finally:
            if self._lost is None:
                self._lost = reason
            for inbox in list(self._pending.values()):
                inbox.put_nowait(ConnectionLost(f"{self._lost} ({self.path})"))


class AsyncClientStream:
    """One open stream of an :class:`AsyncControlClient`: ``async for`` its items,
    ``await send_input(...)``, ``await aclose()`` (or leave the loop early) to cancel."""

    def __init__(self, client: AsyncControlClient, req_id: int, op: str,
                 inbox: asyncio.Queue[_Incoming], timeout: float | None) -> None:
        self.id = req_id
        self.op = op
        self.done = False
        self.cancelled = False
        self._client = client
        self._inbox = inbox
        self._timeout = timeout

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            while not self.done:
                try:
                    msg = await asyncio.wait_for(self._inbox.get(), self._timeout)
                except asyncio.TimeoutError:
                    raise IpcTimeout(self.op, self._timeout or 0.0) from None
                try:
                    more, value = _stream_step(self.op, msg)
                except BaseException:
                    self._finish()
                    raise
                if not more:
                    self.cancelled = value
                    self._finish()
                    return
                yield value
        finally:
            self._close_now()

    async def send_input(self, payload: Mapping[str, Any]) -> None:
        if self.done:
            raise ProtocolError(f"the stream of {self.op!r} has ended")
        self._client._write(input_message(self.id, payload))
        await self._client._drain()

    async def aclose(self) -> None:
        self._close_now()

    def _close_now(self) -> None:
        if not self.done:
            self._client._cancel(self.id)
            self._finish()

    def _finish(self) -> None:
        self.done = True
        self._client._pending.pop(self.id, None)

    async def __aenter__(self) -> AsyncClientStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._close_now()
