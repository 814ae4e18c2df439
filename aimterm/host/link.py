"""The controller's end of one session host: the process, its link, and who is on it.

A :class:`HostLink` starts ``python -m aimterm.host`` over a socketpair and keeps it. Both
directions run on the pool's reader loop. Commands go out in one frame per loop pass (a
dispatch pass that hands twenty prompts out makes one write), never blocking the loop; the
host's frames are read as any PTY is, and its events, turns' outcomes and output are handled
in the order it sent them, where the sessions' mirrors and the pool see them. A request made
on the loop thread (a screen for an error message) reads the link itself until it is
answered, so it cannot wait on the loop it is holding.

A host that dies takes its tools with it: the link tells each of its sessions (an exit, as a
crash is), kills what the host left running, and starts a new host for the next start.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aimterm.errors import SessionExited
from aimterm.events import EventBus
from aimterm.host.wire import FrameReader, Outbox, decode_error
from aimterm.term.loop import IOLoop

if TYPE_CHECKING:
    from aimterm.host.proxy import HostedSession

log = logging.getLogger(__name__)

_READ = 256 * 1024
#: Reads per readable callback: the other PTYs on the loop get their turn after these.
_READS_PER_PASS = 8


class HostLink:
    """One session host process and the sessions it runs for this controller."""

    def __init__(self, index: int, loop: IOLoop, *, env: Mapping[str, str] | None = None) -> None:
        self.index = index
        self._ioloop = loop
        self._loop = loop.loop
        self._env = dict(env) if env is not None else None
        self.sessions: dict[str, HostedSession] = {}
        #: The event bus of the sessions on this link (one pool's: they share it).
        self.bus: EventBus | None = None
        self._requests: dict[int, concurrent.futures.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # the process and the open requests
        # Loop thread only: commands waiting for this pass's frame, bytes the socket has not
        # taken yet, messages read while a request on the loop thread waited.
        self._outbox = Outbox(loop, self._queue)
        self._wbuf = bytearray()
        self._writing = False
        self._deferred: list[Any] = []
        self._frames = FrameReader()
        self._sock: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0  # hosts started so far: a session made on an older one is lost
        self.closing = False

    # -- the process ---------------------------------------------------------------------------

    def ensure(self) -> None:
        """Start the host if it is not running (first use, or after it died)."""
        with self._lock:
            if self.proc is not None and self.proc.poll() is None and self._sock is not None:
                return
            if self.closing:
                raise SessionExited("the session hosts are shutting down")
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "aimterm.host", "--fd", str(child.fileno())],
                    pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                    env=self._env, start_new_session=True)  # no terminal's ^C reaches it
            finally:
                child.close()
            parent.setblocking(False)
            self._sock = parent
            self.generation += 1
            self._frames = FrameReader()
        # Read on the loop itself: a host's events are handled where the pool runs, with no
        # thread between (a hop per batch costs more than the batch on a busy fleet).
        self._ioloop.add_reader(parent.fileno(), self._readable)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self, timeout: float = 5.0) -> None:
        """End the host: it stops what is left of its tools (the pool has stopped them
        politely by now) and exits; it is killed if it does not."""
        with self._lock:
            self.closing = True
            proc = self.proc

        def hang_up() -> None:
            self._outbox.flush()
            sock = self._sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_WR)  # the host reads the end of the link
                except OSError:
                    pass

        self._ioloop.run_sync(hang_up)
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._ioloop.run_sync(self._drop, None)

    # -- sending (the loop thread; other threads hand over) ------------------------------------

    def send(self, msg: tuple[Any, ...]) -> None:
        """A command to the host: gathered into one frame per loop pass, in order."""
        self._outbox.send(msg)

    def _queue(self, data: bytes) -> None:
        self._wbuf += data
        self._pump()

    def _pump(self) -> None:
        """Write what the socket takes now; the rest when it is writable. The loop never
        blocks on a host: a host that stopped reading must not stop the fleet."""
        sock = self._sock
        if sock is None:
            self._wbuf.clear()
            return
        while self._wbuf:
            try:
                sent = sock.send(self._wbuf)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("session host %d: write failed: %s", self.index, exc)
                self._wbuf.clear()
                break
            del self._wbuf[:sent]
        if self._wbuf and not self._writing:
            self._loop.add_writer(sock.fileno(), self._pump)
            self._writing = True
        elif not self._wbuf and self._writing:
            self._loop.remove_writer(sock.fileno())
            self._writing = False

    def request(self, msg: tuple[Any, ...], timeout: float) -> Any:
        """Send a command that answers, and wait for its answer (any thread)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            req = next(self._ids)
            self._requests[req] = fut
        try:
            if self._ioloop.in_loop():
                self._outbox.send((*msg, req))
                self._outbox.flush()
                self._wait_here(fut, timeout)
            else:
                self.send((*msg, req))
            return fut.result(timeout)
        finally:
            with self._lock:
                self._requests.pop(req, None)

    def _wait_here(self, fut: concurrent.futures.Future[Any], timeout: float) -> None:
        """A request made on the loop thread: read the link right here until it is
        answered; what else comes meanwhile is handled after the caller's step."""
        deadline = time.monotonic() + timeout
        while not fut.done():
            sock = self._sock
            left = deadline - time.monotonic()
            if sock is None or left <= 0:
                return
            readable, writable, _ = select.select([sock], [sock] if self._wbuf else [], [],
                                                  left)
            if writable:
                self._pump()
            if readable:
                self._readable(later=True)

    # -- receiving (the loop thread) -----------------------------------------------------------

    def _readable(self, later: bool = False) -> None:
        sock = self._sock
        if sock is None:
            return
        todo: list[Any] = []
        lost = False
        try:
            for _ in range(_READS_PER_PASS):
                try:
                    data = sock.recv(_READ)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    lost = True
                    break
                for batch in self._frames.feed(data):
                    for msg in batch:
                        if msg[0] == "reply":
                            self._answer(msg)
                        else:
                            todo.append(msg)
                if len(data) < _READ:
                    break
        except Exception:
            log.exception("session host %d: bad frame; the link is closed", self.index)
            lost = True
        if later:
            if not self._deferred:
                self._loop.call_soon(self._deliver, [])
            self._deferred += todo
        else:
            self._deliver(todo)
        if lost:
            self._drop(self.generation)

    def _answer(self, msg: tuple[Any, ...]) -> None:
        _, req, ok, value = msg
        with self._lock:
            fut = self._requests.pop(req, None)
        if fut is None or fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(decode_error(value))

    def _deliver(self, msgs: list[Any]) -> None:
        if self._deferred:
            msgs, self._deferred = self._deferred + msgs, []
        if self.bus is None or not msgs:
            return
        # A read's events reach the listeners together, with the outcomes of the turns that
        # failed among them: as a local session's exit does, its state change, failed turn,
        # process exit and the retry go out before what the pool does about the first of
        # them. A turn that ended well is handed over only after its events are out, as a
        # local one is (its record is opened by its turn_started before its reply comes).
        start = 0
        for i, msg in enumerate(msgs):
            if msg[0] == "done" and msg[3] is None:
                with self.bus.batch():
                    self._deliver_all(msgs[start:i])
                self._deliver_all(msgs[i:i + 1])
                start = i + 1
        if start < len(msgs):
            with self.bus.batch():
                self._deliver_all(msgs[start:])

    def _deliver_all(self, msgs: list[Any]) -> None:
        sessions = self.sessions
        for msg in msgs:
            op = msg[0]
            if op == "ev":
                event = msg[1]
                session = sessions.get(event[1][0])
                if session is not None:
                    session.host_event(event, msg[2])
            else:
                session = sessions.get(msg[1])
                if session is not None:
                    session.host_message(msg)

    def _drop(self, generation: int | None) -> None:
        """The link closed (loop thread): a host that died, or was closed, takes its
        sessions' runs with it."""
        with self._lock:
            sock = self._sock
            if sock is None or (generation is not None and generation != self.generation):
                return
            self._sock = None
            waiting = list(self._requests.values())
            self._requests.clear()
            proc = self.proc
        self._loop.remove_reader(sock.fileno())
        if self._writing:
            self._loop.remove_writer(sock.fileno())
            self._writing = False
        self._wbuf.clear()
        sock.close()
        code = None
        if proc is not None:
            try:
                code = proc.wait(5.0)
            except subprocess.TimeoutExpired:  # the link broke, the host did not: end it
                proc.kill()
                code = proc.wait()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(SessionExited(
                    f"the session host exited (code {code}) before it answered"))
        if not self.closing:
            log.warning("session host %d (pid %s) exited with code %s; its instances are "
                        "restarted on a new one", self.index, self.pid, code)
        # After the step in progress: a request that was waiting here returns first.
        self._loop.call_soon(self._host_gone, code)

    def _host_gone(self, code: int | None) -> None:
        for session in list(self.sessions.values()):
            session.host_gone(code)


def default_host_count() -> int:
    """One host per core the process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
