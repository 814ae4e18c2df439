"""A session host: a process of its own that runs a share of the fleet's sessions.

The controller (a pool, in the daemon or in a script) starts one host per core and talks to
each over a socketpair (``python -m aimterm.host --fd N``). A host runs ordinary
:class:`~aimterm.session.Session` objects on its own reader loop — its PTYs, its screens, its
detection — so a fleet's terminal work is spread over every core instead of one loop's
thread, which the GIL keeps to one. What crosses the link is what the pool sees of a session
anyway: its events, its turns' outcomes, a screen when asked, raw output while someone is
attached.

Everything a host does runs on its loop, in the order the commands came; a command that blocks
(a stop with its escalation, a start that waits for the tool) runs on a worker thread and
answers when it is over. A host never outlives its controller: when the link closes it kills
every tool's process group and exits.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from aimterm.events import Event, EventBus, StateChanged
from aimterm.host.wire import FrameReader, Outbox, encode_error, encode_event
from aimterm.session import Session
from aimterm.states import LIVE_STATES, State
from aimterm.term.loop import IOLoop
from aimterm.turn import Turn

log = logging.getLogger(__name__)

_READ = 256 * 1024
#: Commands a host answers from a worker thread: they block until a process is gone or ready.
_BLOCKING = frozenset({"start_wait", "stop"})


class HostServer:
    """The host's side of the link: commands in, events and answers out."""

    def __init__(self, sock: socket.socket, loop: IOLoop | None = None) -> None:
        self._sock = sock
        self._ioloop = loop or IOLoop.shared()
        self._loop = self._ioloop.loop
        self.bus = EventBus()
        self.bus.subscribe(self._forward)
        self.sessions: dict[str, Session] = {}
        self._listening: dict[str, tuple[Callable[[], None], list[int]]] = {}
        self._outbox = Outbox(self._ioloop, self._write)
        self._muted = False
        self._reader = FrameReader()
        self._todo: collections.deque[Any] = collections.deque()
        self._run_due = False
        self._workers = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="host-stop")
        self._send_lock = threading.Lock()
        self.closed = threading.Event()

    def serve(self) -> None:
        """Run until the controller goes away; then no tool of this host is left running."""
        self._sock.setblocking(False)
        self._ioloop.add_reader(self._sock.fileno(), self._readable)
        self.closed.wait()
        self._shutdown()

    # -- the link ------------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = self._sock.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._loop.remove_reader(self._sock.fileno())
            self.closed.set()
            return
        try:
            for batch in self._reader.feed(data):
                self._todo.extend(batch)
        except Exception:  # a broken link (a corrupt frame) ends the host, never silently
            log.exception("session host: bad frame from the controller")
            self._loop.remove_reader(self._sock.fileno())
            self.closed.set()
            return
        if not self._run_due:  # (else the pass already due goes on with these, in order)
            self._run_commands()

    def _resume(self) -> None:
        self._run_due = False
        self._run_commands()

    def _run_commands(self) -> None:
        """The commands read so far, in order, but one start per loop pass: a spawn blocks the
        loop for a fork and an exec, and the tools started a moment ago must have their
        terminal queries answered meanwhile (the demo agent gives up after 2 s)."""
        todo = self._todo
        started = False
        while todo:
            if todo[0][0] == "start":
                if started:
                    self._run_due = True
                    self._loop.call_soon(self._resume)
                    return
                started = True
            self._command(todo.popleft())

    def send(self, msg: Any) -> None:
        """Queue a message; one frame goes out per loop pass (from any thread)."""
        self._outbox.send(msg)

    def _write(self, data: bytes) -> None:
        with self._send_lock:
            try:
                # Blocking on purpose: the controller reads the link on its loop and never
                # blocks on writing to it, and order matters more than this loop pass.
                self._sock.setblocking(True)
                self._sock.sendall(data)
            except OSError:
                self.closed.set()
            finally:
                self._sock.setblocking(False)

    def _forward(self, event: Event) -> None:
        if self._muted:
            return
        sync = None
        if type(event) is StateChanged:
            session = self.sessions.get(event.instance)
            if session is not None:
                sync = (session.pid, session.starts, session.turns_done, session.question)
        self.send(("ev", encode_event(event), sync))

    # -- commands (loop thread) ----------------------------------------------------------------

    def _command(self, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op in _BLOCKING:
            self._workers.submit(self._blocking, msg)
            return
        handler = getattr(self, "_op_" + op, None)
        try:
            if handler is None:
                raise ValueError(f"unknown host command {op!r}")
            handler(*msg[1:])
        except Exception as exc:
            log.warning("session host: %s failed: %s", op, exc)
            if op in ("view", "detach"):  # a caller is waiting on these
                self.send(("reply", msg[-1], False, encode_error(exc)))

    def _op_new(self, iid: str, adapter: Any, kwargs: dict[str, Any]) -> None:
        self.sessions[iid] = Session(adapter, instance_id=iid, bus=self.bus, loop=self._ioloop,
                                     **kwargs)

    def _op_drop(self, iid: str) -> None:
        session = self.sessions.pop(iid, None)
        self._unlisten(iid)
        if session is not None and session.state in LIVE_STATES \
                and session.state is not State.STOPPING:
            self._workers.submit(session.stop, 2.0)

    def _op_start(self, iid: str, resume: bool) -> None:
        session = self.sessions[iid]
        session.resume = resume
        try:
            session.start(wait=False)
        except Exception as exc:  # said in the session's own state change (spawn failed)
            log.warning("%s: could not start: %s", iid, exc)
        self.send(("sync", iid, session.pid, session.starts))

    def _op_turn(self, iid: str, prompt: str) -> None:
        def done(turn: Turn, error: BaseException | None) -> None:
            # Sent after this loop step: a turn that ends in an exit is resolved inside the
            # exit's event batch, whose events the forwarder sees only when the batch ends.
            self._loop.call_soon(self.send, ("done", iid, turn, None if error is None
                                             else encode_error(error),
                                             self.sessions[iid].turns_done))

        try:
            self.sessions[iid].start_turn(prompt, done)
        except Exception as exc:  # NotReady: it changed state before the command came
            self.send(("done", iid, None, encode_error(exc), self.sessions[iid].turns_done))

    def _op_answer(self, iid: str, keys: Any) -> None:
        self.sessions[iid].answer(keys)

    def _op_interrupt(self, iid: str) -> None:
        self.sessions[iid].interrupt()

    def _op_write(self, iid: str, data: bytes) -> None:
        self.sessions[iid].write(data)

    def _op_resize(self, iid: str, rows: int, cols: int) -> None:
        self.sessions[iid].resize(rows, cols)

    def _op_kill(self, iid: str) -> None:
        self.sessions[iid].kill()

    def _op_attach(self, iid: str) -> None:
        self.sessions[iid].attach()

    def _op_detach(self, iid: str, req: int) -> None:
        session = self.sessions[iid]
        state = session.detach()
        self.send(("reply", req, True, (state.value, session.rows, session.cols)))

    def _op_mark(self, iid: str, how: str, reason: str) -> None:
        # The controller has already told its listeners (these states have no process to
        # ask); the host's session follows quietly, so its next start begins from there.
        session = self.sessions[iid]
        self._muted = True
        try:
            getattr(session, how)(reason)
        finally:
            self._muted = False

    def _op_listen(self, iid: str, on: bool) -> None:
        self._unlisten(iid)
        if not on:
            return
        seen = [0]

        def out(data: bytes, at: float) -> None:
            seen[0] += len(data)
            self.send(("out", iid, data, at, seen[0]))

        remove = self.sessions[iid].add_output_listener(out)
        self._listening[iid] = (remove, seen)

    def _unlisten(self, iid: str) -> None:
        held = self._listening.pop(iid, None)
        if held is not None:
            held[0]()

    def _op_view(self, iid: str, what: str, arg: Any, req: int) -> None:
        session = self.sessions[iid]
        value: Any
        if what == "screen_lines":
            value = session.screen_lines()
        elif what == "screen_tail":
            value = session.screen_tail(arg)
        elif what == "render_screen":
            held = self._listening.get(iid)
            # The output offset at the render: bytes up to it are in the picture already.
            value = (session.render_screen(), held[1][0] if held is not None else None)
        elif what == "bytes_in":
            value = session.bytes_in()
        elif what == "flush_transcript":
            session.flush_transcript()
            value = None
        else:
            raise ValueError(f"unknown view {what!r}")
        self.send(("reply", req, True, value))

    # -- blocking commands (a worker thread) ---------------------------------------------------

    def _blocking(self, msg: tuple[Any, ...]) -> None:
        op, iid, req = msg[0], msg[1], msg[-1]
        try:
            session = self.sessions[iid]
            if op == "stop":
                value: Any = session.stop(msg[2])
            else:  # start_wait
                session.resume = msg[2]
                value = session.start(wait=True, timeout=msg[3]).value
            self.send(("reply", req, True, value))
        except Exception as exc:
            self.send(("reply", req, False, encode_error(exc)))

    # -- the end -------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """The controller is gone: every tool goes, at once (nobody is left to ask politely
        for); then the process exits."""
        for session in list(self.sessions.values()):
            try:
                session.kill()
            except Exception:
                log.warning("session host: killing %s failed", session.id, exc_info=True)
        deadline = time.monotonic() + 2.0
        for session in list(self.sessions.values()):
            try:
                session.wait_state(State.EXITED, State.BACKOFF, State.FATAL,
                                   timeout=max(0.1, deadline - time.monotonic()))
            except Exception:
                pass
        self._workers.shutdown(wait=False, cancel_futures=True)


def main(fd: int) -> int:
    logging.basicConfig(level=os.environ.get("AIMTERM_HOST_LOG", "WARNING"),
                        format="aimterm host %(process)d: %(message)s")
    sock = socket.socket(fileno=fd)
    HostServer(sock).serve()
    return 0
