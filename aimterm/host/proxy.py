"""A session that runs in a session host: the :class:`SessionHandle` the pool gets for it.

The pool cannot tell a :class:`HostedSession` from a local one. Its state, pid and counts are
a mirror, kept from the host's events on this process's loop before the pool hears of them,
so what the pool reads is what its events said. Commands go to the host in order; the few
that answer (a screen, a stop, a detach) wait for it. States with no process behind them
(back-off, FATAL, a back-off cancelled) are set here, at once, as a local session sets them,
and the host's session follows quietly.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aimterm.adapter.spec import AdapterSpec
from aimterm.errors import NotReady, SessionError, SessionExited
from aimterm.events import Event, EventBus, ProcessExited, StateChanged, TurnFinished
from aimterm.handle import OnTurnDone
from aimterm.host.wire import decode_error, decode_event
from aimterm.procs import kill_group_of, start_ticks
from aimterm.states import LIVE_STATES, TRANSITIONS, State
from aimterm.term.loop import IOLoop
from aimterm.turn import Turn, TurnStatus

if TYPE_CHECKING:
    from aimterm.host.link import HostLink

#: The SessionHandle call that puts a session in each state with no process behind it.
_MARKS = {State.BACKOFF: "backoff", State.FATAL: "fatal"}
#: How long a caller waits for a host to answer a view (a screen) or a hand-over.
_ASK_S = 10.0


class HostedSession:
    """One tool in a session host, driven through the :class:`SessionHandle` methods."""

    def __init__(self, link: HostLink, adapter: AdapterSpec | str, *,
                 instance_id: str | None = None, cwd: Any = None,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 resume: bool = False, transcript: Any = None,
                 transcript_max_bytes: int | None = None, rows: int | None = None,
                 cols: int | None = None, bus: EventBus | None = None,
                 loop: IOLoop | None = None) -> None:
        if isinstance(adapter, str):
            from aimterm.adapter.registry import load_adapter

            adapter = load_adapter(adapter)
        self.spec = adapter
        self.id = instance_id or f"{adapter.name}-{id(self):x}"
        self.link = link
        self.bus = bus or EventBus()
        self._ioloop = loop or IOLoop.shared()
        self.resume = resume
        self.rows = rows or adapter.terminal.rows
        self.cols = cols or adapter.terminal.cols
        self._own_size = (self.rows, self.cols)
        self._made = {"cwd": None if cwd is None else str(cwd), "env": dict(env or {}),
                      "args": list(args), "transcript": None if transcript is None
                      else str(transcript), "transcript_max_bytes": transcript_max_bytes}
        self._state = State.EXITED
        self._since = time.monotonic()
        self._cond = threading.Condition()
        self._pid: int | None = None
        self._ticks: int | None = None  # the pid's start time: it is killed only if still it
        self.question: str | None = None
        self.turns_done = 0
        self.starts = 0
        self._turn: tuple[Turn, OnTurnDone] | None = None
        self._numbers = 0
        self._output: list[Callable[[bytes, float], None]] = []
        self._skip_to = 0  # output up to this offset is in the last render already
        self._on = 0  # the host's generation this session was made on (0: not yet)
        self.closed = False
        if link.bus is None:
            link.bus = self.bus
        elif link.bus is not self.bus:
            raise ValueError("the sessions on one session host share one event bus")
        link.sessions[self.id] = self

    @property
    def ioloop(self) -> IOLoop:
        return self._ioloop

    @property
    def state(self) -> State:
        return self._state

    @property
    def pid(self) -> int | None:
        return self._pid

    # -- the host's side (loop thread, in the order the host sent) ------------------------------

    def host_event(self, data: tuple[str, tuple[Any, ...]], sync: tuple[Any, ...] | None
                   ) -> None:
        event = decode_event(data)
        if sync is not None and isinstance(event, StateChanged):
            pid, self.starts, self.turns_done, self.question = sync
            self._set_pid(pid)
            self._mirror(State(event.new))
        self.bus.emit(event)

    def host_message(self, msg: tuple[Any, ...]) -> None:
        op = msg[0]
        if op == "done":
            self.turns_done = msg[4]
            self._done(msg[2], None if msg[3] is None else decode_error(msg[3]))
        elif op == "out":
            _, _, data, at, end = msg
            if end <= self._skip_to:
                return
            if end - len(data) < self._skip_to:
                data = data[len(data) - (end - self._skip_to):]
            for listener in self._output:
                listener(data, at)
        elif op == "sync":
            self._set_pid(msg[2])
            self.starts = msg[3]

    def _set_pid(self, pid: int | None) -> None:
        if pid != self._pid:
            self._pid = pid
            self._ticks = start_ticks(pid) if pid is not None else None

    def _mirror(self, new: State) -> None:
        self._state = new
        self._since = time.monotonic()
        with self._cond:
            self._cond.notify_all()

    def _done(self, turn: Turn | None, error: BaseException | None) -> None:
        held, self._turn = self._turn, None
        if held is None:
            return
        mine, on_done = held
        if turn is not None:
            # The caller holds this object since start_turn: it becomes the host's turn, but
            # for what only this side knows (when it was asked for, how long it queued, the
            # retries on other instances) and the submit keys the host sent again.
            started, queued, retries = mine.started_at, mine.queued_ms, mine.retries
            for name in Turn.__slots__:
                setattr(mine, name, getattr(turn, name))
            mine.started_at, mine.queued_ms = started, queued
            mine.retries = retries + turn.retries
        if isinstance(error, NotReady):
            mine.status, mine.error = TurnStatus.FAILED, str(error)
        on_done(mine, error)

    def host_gone(self, code: int | None) -> None:
        """The host died: what it ran is lost, as if the tool had crashed (loop thread)."""
        if self.closed:
            return
        self._on = 0
        self._output.clear()
        if self._pid is not None:
            kill_group_of(self._pid, self._ticks)  # left running by a host that had no say
        if self._state in LIVE_STATES:
            reason = f"session host exited (code {code})"
            with self.bus.batch():
                held = self._turn
                old = self._state
                self._mirror(State.EXITED)
                self.bus.emit(StateChanged(self.id, old=old, new=State.EXITED, reason=reason))
                if held is not None:
                    held[0].status, held[0].error = TurnStatus.FAILED, f"process exited ({reason})"
                    self.bus.emit(TurnFinished(self.id, turn=held[0].number, status="failed",
                                               error=held[0].error))
                self.bus.emit(ProcessExited(self.id, pid=self._pid or 0, returncode=None,
                                            signal=9))
                if held is not None:
                    self._done(None, self._error(SessionExited, f"{reason} during turn "
                                                 f"{held[0].number}"))

    # -- life ------------------------------------------------------------------------------------

    def _placed(self) -> None:
        """The host has this session (made again on a new host after one died)."""
        self.link.ensure()
        if self._on != self.link.generation:
            self.link.send(("new", self.id, self.spec, {**self._made, "rows": self.rows,
                                                        "cols": self.cols}))
            self._on = self.link.generation
            how = _MARKS.get(self._state)
            if how is not None:  # a new host's session starts where this one's state is
                self.link.send(("mark", self.id, how, "made again on a new session host"))

    def start(self, *, wait: bool = True, timeout: float | None = None) -> State:
        if self._state in LIVE_STATES:
            raise self._error(NotReady, "already running")
        self._placed()
        self.starts += 1
        if not wait:
            self.link.send(("start", self.id, self.resume))
            # A local session is STARTING when start() returns, and callers wait on that
            # (a restart by hand waits for the run to be ready, not for the old one's exit).
            # The host's own event follows and says so to the listeners.
            self._mirror(State.STARTING)
            return self._state
        limit = timeout if timeout is not None else self.spec.startup.timeout_s
        state = State(self.link.request(("start_wait", self.id, self.resume, timeout),
                                        limit + 10.0))
        return self._settle_on(state)

    def _settle_on(self, state: State) -> State:
        """The host answered ``state``; its events may still be on their way here."""
        if not self._ioloop.in_loop():
            try:
                self.wait_state(state, timeout=5.0)
            except SessionError:
                pass
        return state

    def stop(self, timeout: float | None = None) -> str:
        if self._on == 0 or self._on != self.link.generation:
            return "exited"
        budget = (timeout if timeout is not None else self.spec.exit.timeout_s) + \
            self.spec.exit.signal_grace_s + 15.0
        try:
            how = self.link.request(("stop", self.id, timeout), budget)
        except SessionExited:
            return "killed"  # the host went down with it
        if not self._ioloop.in_loop():
            try:
                self.wait_state(State.EXITED, State.BACKOFF, State.FATAL, timeout=5.0)
            except SessionError:
                pass
        return str(how)

    def kill(self) -> None:
        if self._on and self._on == self.link.generation:
            self.link.send(("kill", self.id))
        elif self._pid is not None:
            kill_group_of(self._pid, self._ticks)

    def _mark(self, how: str, new: State, reason: str, only_from: State | None = None) -> None:
        def go() -> None:
            old = self._state
            if only_from is not None and old is not only_from:
                return
            if old is new or new not in TRANSITIONS[old]:
                return
            self._mirror(new)
            self.bus.emit(StateChanged(self.id, old=old, new=new, reason=reason))
            if self._on and self._on == self.link.generation:
                self.link.send(("mark", self.id, how, reason))

        self._ioloop.run_sync(go)

    def backoff(self, reason: str) -> None:
        self._mark("backoff", State.BACKOFF, reason)

    def fatal(self, reason: str) -> None:
        self._mark("fatal", State.FATAL, reason)

    def cancel_backoff(self, reason: str) -> None:
        self._mark("cancel_backoff", State.EXITED, reason, only_from=State.BACKOFF)

    def close(self) -> None:
        """The instance left the fleet: the host forgets it."""
        if self.closed:
            return
        self.closed = True
        if self.link.sessions.get(self.id) is self:
            del self.link.sessions[self.id]
        if self._on and self._on == self.link.generation:
            self.link.send(("drop", self.id))

    # -- turns -----------------------------------------------------------------------------------

    def start_turn(self, prompt: str, on_done: OnTurnDone) -> Turn:
        def go() -> Turn:
            if self._state is not State.IDLE or self._turn is not None:
                raise self._error(NotReady, f"cannot take a prompt while {self._state}")
            self._numbers = self.turns_done + 1
            turn = Turn(self._numbers, prompt, self.id, self.spec.name,
                        started_at=time.monotonic())
            self._turn = (turn, on_done)
            self.link.send(("turn", self.id, prompt))
            return turn

        return self._ioloop.run_sync(go)

    def submit(self, prompt: str) -> concurrent.futures.Future[Turn]:
        fut: concurrent.futures.Future[Turn] = concurrent.futures.Future()

        def done(turn: Turn, error: BaseException | None) -> None:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(turn)

        self.start_turn(prompt, done)
        return fut

    def answer(self, keys: str | Sequence[str]) -> None:
        if self._state is not State.WAITING:
            raise self._error(NotReady, "no question is pending")
        self.link.send(("answer", self.id, keys if isinstance(keys, str) else list(keys)))
        # As a local session, BUSY once answered (the host's event follows).
        self._ioloop.run_sync(self._mirror, State.BUSY)

    def interrupt(self) -> None:
        self.link.send(("interrupt", self.id))

    # -- a person at the keyboard ----------------------------------------------------------------

    def attach(self) -> None:
        self.link.send(("attach", self.id))
        # A local session is ATTACHED when attach() returns, and the daemon tells the person
        # so at once; the host's own event follows and tells the listeners.
        if self._state in LIVE_STATES and self._state is not State.STOPPING:
            self._ioloop.run_sync(self._mirror, State.ATTACHED)

    def detach(self) -> State:
        value, self.rows, self.cols = self.link.request(("detach", self.id), _ASK_S)
        return self._settle_on(State(value))

    def write(self, data: bytes | str) -> None:
        if self._on == 0:
            raise self._error(NotReady, "not started")
        self.link.send(("write", self.id, data.encode("utf-8") if isinstance(data, str)
                        else bytes(data)))

    def resize(self, rows: int, cols: int) -> None:
        if self._state is not State.ATTACHED:
            self._own_size = (rows, cols)
        self.rows, self.cols = rows, cols
        self.link.send(("resize", self.id, rows, cols))

    def add_output_listener(self, listener: Callable[[bytes, float], None]
                            ) -> Callable[[], None]:
        if self._on == 0:
            raise self._error(NotReady, "not started")

        def add() -> None:
            if not self._output:
                self._skip_to = 0
                self.link.send(("listen", self.id, True))
            self._output.append(listener)

        def remove() -> None:
            if listener in self._output:
                self._output.remove(listener)
                if not self._output:
                    self.link.send(("listen", self.id, False))

        self._ioloop.run_sync(add)
        return lambda: self._ioloop.call_soon(remove)

    # -- views -----------------------------------------------------------------------------------

    def _view(self, what: str, arg: Any = None) -> Any:
        if self._on == 0 or self._on != self.link.generation:
            return None
        try:
            return self.link.request(("view", self.id, what, arg), _ASK_S)
        except (SessionExited, KeyError):
            return None

    def status(self) -> dict[str, Any]:
        return {"id": self.id, "adapter": self.spec.name, "state": self._state.value,
                "pid": self._pid, "turns": self.turns_done, "starts": self.starts,
                "since": self._since, "question": self.question, "host": self.link.index}

    def screen_lines(self) -> list[str]:
        return self._view("screen_lines") or []

    def screen_tail(self, n: int = 15) -> list[str]:
        return self._view("screen_tail", n) or []

    def render_screen(self) -> bytes:
        got = self._view("render_screen")
        if got is None:
            return b""
        data, offset = got
        if offset is not None:
            self._skip_to = max(self._skip_to, offset)
        return bytes(data)

    def flush_transcript(self) -> None:
        self._view("flush_transcript")

    def bytes_in(self) -> int:
        """Output bytes the host read from the tool in this run."""
        return int(self._view("bytes_in") or 0)

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        return self.bus.subscribe(listener)

    def wait_state(self, *states: State, timeout: float = 30.0) -> State:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._state not in states:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._error(SessionError, "timed out waiting for "
                                      + ", ".join(map(str, states)))
                self._cond.wait(left)
            return self._state

    def _error(self, cls: type[SessionError], message: str) -> SessionError:
        return cls(message, instance=self.id, adapter=self.spec.name, state=str(self._state),
                   screen_tail=[])

    def __repr__(self) -> str:
        return f"<HostedSession {self.id} {self.spec.name} {self._state} host {self.link.index}>"
