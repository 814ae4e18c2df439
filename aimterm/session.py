"""One interactive tool under a PTY, driven by its adapter, with a guarded state machine.

A :class:`Session` owns a :class:`~aimterm.term.terminal.Terminal` and decides, from what the
screen (or the stream, for line tools) shows, which :class:`~aimterm.states.State` the tool is
in. All decisions run on the shared reader loop, right after the bytes that caused them, so
there are no polling sleeps: busy and waiting are entered at once; idle only after the screen
has been still for the adapter's ``settle_ms`` (agents draw idle-looking frames mid-turn).

Callers in any thread use the blocking API (:meth:`Session.start`, :meth:`Session.send`,
:meth:`Session.stop`); each call hands its work to the loop and waits on a future.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aimterm.adapter.answers import AnswerMarks
from aimterm.adapter.detector import MATCH_TAIL, Detector, Found, Verdict
from aimterm.adapter.launch import Launch, expand_template
from aimterm.adapter.recipes import (
    Write,
    clean_reply,
    join_scrollback,
    join_wrapped,
    key_writes,
    parse_keys,
    read_metrics,
    screen_delta,
    still_typed,
    submit_writes,
)
from aimterm.adapter.spec import ALL, AdapterSpec, KeySeq, describe_keys
from aimterm.adapter.tracker import (
    DETECTING,
    Phase,
    Step,
    TurnTracker,
    VerifyStep,
    react,
    settle_seconds,
)
from aimterm.errors import (
    InvalidTransition,
    NotReady,
    SessionError,
    SessionExited,
    StartupTimeout,
    SubmitFailed,
    TurnTimeout,
)
from aimterm.events import (
    Event,
    EventBus,
    ProcessExited,
    QuestionAnswered,
    QuestionPending,
    StateChanged,
    TurnFinished,
    TurnStarted,
)
from aimterm.records.base import RecordedReply
from aimterm.records.follow import RecordFollower, follower_for, with_recorder
from aimterm.statedir import private_dirs
from aimterm.states import LIVE_STATES, TRANSITIONS, State
from aimterm.term.loop import IOLoop
from aimterm.term.matcher import TextTail
from aimterm.term.terminal import Terminal
from aimterm.turn import Turn, TurnRun, TurnStatus

#: Turn and TurnStatus live in aimterm.turn; they are importable from here as they always were.
__all__ = ["Session", "Turn", "TurnStatus", "expand_template"]

_ids = itertools.count(1)


class Session:
    """One running tool. Use as a context manager, or call :meth:`start` / :meth:`stop`."""

    def __init__(self, adapter: AdapterSpec | str, *, instance_id: str | None = None,
                 cwd: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                 args: Sequence[str] = (), resume: bool = False,
                 transcript: str | os.PathLike[str] | None = None,
                 transcript_max_bytes: int | None = None,
                 rows: int | None = None, cols: int | None = None,
                 bus: EventBus | None = None, loop: IOLoop | None = None,
                 history: int = 500) -> None:
        if isinstance(adapter, str):
            from aimterm.adapter.registry import load_adapter

            adapter = load_adapter(adapter)
        self.spec = adapter
        self.id = instance_id or f"{adapter.name}-{next(_ids)}"
        self._cwd = os.fspath(cwd) if cwd is not None else None
        self._env_extra = dict(env or {})
        self._args = list(args)
        #: Pass the adapter's ``resume`` arguments on the next start (continue the tool's
        #: previous conversation). The pool sets it per start; see GroupSpec.resume.
        self.resume = resume
        self._transcript = transcript
        self._transcript_max = transcript_max_bytes  # roll the file over past this size
        self.rows = rows or adapter.terminal.rows
        self.cols = cols or adapter.terminal.cols
        #: The instance's own size: a person attached from another terminal size borrows the
        #: instance at theirs, and detach gives it back at this one.
        self._own_size = (self.rows, self.cols)
        self.bus = bus or EventBus()
        self._ioloop = loop or IOLoop.shared()
        self._loop = self._ioloop.loop
        self.detector = Detector(adapter)
        self._stream = adapter.detect == "stream"
        self._text = TextTail(adapter.terminal.scrollback or 2000)
        self._state = State.EXITED
        self._state_since = time.monotonic()
        self._cond = threading.Condition()
        self._waiters = 0  # threads in wait_state(): the setter notifies only when there are
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self.terminal: Terminal | None = None
        self._run: TurnRun | None = None
        self._startup: asyncio.Future[str] | None = None
        self._settle: asyncio.TimerHandle | None = None
        self._eval_scheduled = False
        self._reads = 0  # output reads so far: typing with after_echo waits for the next
        # rule name -> (what it answered, when), until the question leaves the screen
        self._marks = AnswerMarks()
        self._answered: str | None = None  # the question the caller answered, while on screen
        self.question: str | None = None
        self.last_verdict: Verdict | None = None
        self.turns_done = 0
        self.starts = 0
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self._numbers = itertools.count(1)
        # The tool's own record of the conversation (reply.record): a follower per run, and
        # a private folder of this instance's own for the files a reader asks the tool to write.
        self._follower: RecordFollower | None = None
        self._record_dir: Path | None = None

    # -- state machine ----------------------------------------------------------------------------

    @property
    def ioloop(self) -> IOLoop:
        """The reader loop the session runs on."""
        return self._ioloop

    @property
    def state(self) -> State:
        return self._state

    @property
    def pid(self) -> int | None:
        return self.terminal.pid if self.terminal else None

    def _set_state(self, new: State, reason: str, rule: str | None = None,
                   text: str | None = None) -> None:
        """The one guarded setter: checks the edge table, then emits StateChanged."""
        old = self._state
        if old is new:
            return
        if new not in TRANSITIONS[old]:  # (the edge table of states.can_transition)
            raise InvalidTransition(f"{old} -> {new} is not an allowed transition ({reason})",
                                    instance=self.id, adapter=self.spec.name, state=str(old))
        self._state = new
        self._state_since = time.monotonic()
        if self._waiters:
            # (wait_state() counts itself in under the lock before it looks at the state, so
            # a waiter either sees the new state or is counted here and woken.)
            with self._cond:
                self._cond.notify_all()
        terminal = self.terminal
        if terminal is not None and terminal.transcript is not None:
            # Recordings carry the decisions, for `adapter explain`.
            terminal.marker(f"state {old.value}->{new.value} [{rule or '-'}] {reason}"
                            + (f": {text}" if text else ""))
        # State is a str enum: the members themselves are the event's plain strings.
        self._emit(StateChanged(self.id, old=old, new=new, reason=reason, rule=rule, text=text))

    def _emit(self, event: Event) -> None:
        self.history.append(event)
        self.bus.emit(event)

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        return self.bus.subscribe(listener)

    def wait_state(self, *states: State, timeout: float = 30.0) -> State:
        """Block until the session is in one of ``states``; raises SessionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                while self._state not in states:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._error(SessionError, "timed out waiting for "
                                          + ", ".join(map(str, states)))
                    self._cond.wait(left)
                return self._state
            finally:
                self._waiters -= 1

    def _error(self, cls: type[SessionError], message: str) -> SessionError:
        tail: list[str] = []
        if self.terminal is not None:
            try:
                tail = self.terminal.tail(12)
            except Exception:
                tail = []
        return cls(message, instance=self.id, adapter=self.spec.name, state=str(self._state),
                   screen_tail=tail)

    # -- start --------------------------------------------------------------------------------------

    def _launch(self) -> Launch:
        return Launch(self.spec, self.id, self._cwd, self._env_extra, self._args)

    def command(self) -> list[str]:
        """The command line the next start runs."""
        return self._launch().argv(resume=self.resume)

    def start(self, *, wait: bool = True, timeout: float | None = None) -> State:
        """Spawn the tool; with ``wait``, block until it is IDLE (or WAITING on a question)."""
        if self._state in LIVE_STATES:
            raise self._error(NotReady, "already running")
        launch = self._launch()
        follower = (follower_for(launch, self._private_dir(), resume=self.resume)
                    if self.spec.reply.record is not None else None)
        launch = with_recorder(launch, follower)
        terminal = Terminal(launch.argv(resume=self.resume), env=launch.environ(),
                            cwd=launch.workdir(), rows=self.rows,
                            cols=self.cols, scrollback=self.spec.terminal.scrollback,
                            transcript=self._transcript, lazy_screen=self._stream,
                            transcript_max_bytes=self._transcript_max, loop=self._ioloop)
        self._ioloop.run_sync(self._prepare_start, terminal, follower)
        try:
            terminal.start()
        except BaseException as exc:
            # The reason names the command and the OS's words: it is what the state change,
            # the pool's FATAL reason and the cluster's status carry.
            self._ioloop.run_sync(self._set_state, State.EXITED, f"spawn failed: {exc}")
            raise
        if follower is not None and terminal.pid is not None:
            follower.recorder.started(terminal.pid)
        self.starts += 1
        if not wait:
            return self._state
        limit = timeout if timeout is not None else self.spec.startup.timeout_s
        fut = asyncio.run_coroutine_threadsafe(self._await_startup(), self._loop)
        try:
            outcome = fut.result(limit + 5.0)
        except TimeoutError:
            outcome = "timeout"
        if outcome == "timeout" or (outcome == "pending" and self._state is State.STARTING):
            err = self._error(StartupTimeout, f"not ready after {limit:g}s")
            self.stop()
            raise err
        if outcome == "exited":
            raise self._exit_error("exited during start-up")
        return self._state

    def _exit_error(self, what: str) -> SessionError:
        how = (f"signal {self.exit_signal}" if self.exit_signal is not None
               else f"exit code {self.exit_code}")
        return self._error(SessionExited, f"{os.path.basename(self.command()[0])} {what} ({how})")

    def _private_dir(self) -> Path:
        """This instance's own private folder for its record (made on first use): beside its
        transcript when it has one, else a temporary one, removed with the session."""
        if self._record_dir is None:
            if self._transcript is not None:
                self._record_dir = private_dirs(
                    Path(self._transcript).with_name(f"{self.id}.record"))
            else:
                # Lives as long as this session (a restart resumes from what is in it), and
                # goes with it, or at exit.
                self._record_dir = Path(tempfile.mkdtemp(prefix="aimterm-record-"))
                weakref.finalize(self, shutil.rmtree, self._record_dir, True)
        return self._record_dir

    def _prepare_start(self, terminal: Terminal, follower: RecordFollower | None) -> None:
        self.terminal = terminal
        self._follower = follower
        self._text = TextTail(self.spec.terminal.scrollback or 2000)
        self._marks.clear()
        self.question = None
        self.exit_code = self.exit_signal = None
        self._startup = self._loop.create_future()
        terminal.add_output_listener(self._on_output)
        terminal.add_exit_listener(self._on_exit_threadsafe)
        self._set_state(State.STARTING, "start" if self.starts == 0 else "restart")

    async def _await_startup(self) -> str:
        assert self._startup is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._startup),
                                          self.spec.startup.timeout_s)
        except TimeoutError:
            return "timeout"

    # -- output and detection (loop thread) ---------------------------------------------------------

    def _on_output(self, data: bytes, at: float) -> None:
        if self._stream:
            self._text.feed(data)
        run = self._run
        if run is not None and run.tracker.output(at):
            run.sync()
        self._reads += 1
        if run is not None and run.echo is not None and not run.echo[0].done() \
                and run.echo[1]():
            run.echo[0].set_result(None)
        if self._stream:
            # Line tools print little per read: decide now rather than a loop pass later.
            self._evaluate()
        elif not self._eval_scheduled:
            # Screen tools may send a burst of reads: evaluate once after the batch.
            self._eval_scheduled = True
            self._loop.call_soon(self._evaluate)

    def _schedule_eval(self) -> None:
        if not self._eval_scheduled:
            self._eval_scheduled = True
            self._loop.call_soon(self._evaluate)

    def _view(self) -> tuple[Sequence[str], int, str]:
        if self._stream:
            lines = self._text.tails(MATCH_TAIL)
            return lines, len(lines) - 1, ""
        assert self.terminal is not None
        # Rows rendered as the rules read them: a busy tool's frames redraw every row, and
        # the rules look at a few.
        return self.terminal.view()

    def _evaluate(self) -> None:
        self._eval_scheduled = False
        state = self._state
        if state not in DETECTING:
            return
        lines, row, title = self._view()
        verdict = self.detector.evaluate(lines, row, title)
        self.last_verdict = verdict
        run = self._run
        step = react(state, verdict.state, run.tracker if run is not None else None)
        if state is State.STARTING:
            dialogs = self.detector.find_dialogs(lines, row)
            self._marks.forget_gone(lines, time.monotonic())
            if dialogs:
                # Answer the first dialog not answered a moment ago; while any is on screen
                # the tool is not ready, whatever the state rules say.
                self._cancel_settle()
                for found in dialogs:
                    if self._answer(found, startup=True):
                        break
                return
            if step is Step.SETTLE:
                self._arm_settle()
            elif step is Step.QUESTION:
                self._cancel_settle()
                self._ask(verdict)
            else:
                self._cancel_settle()
            return
        if self._answered is not None and (verdict.state != "waiting"
                                           or verdict.matched != self._answered):
            self._answered = None
        if step is Step.BUSY:
            self._cancel_settle()
            if run is not None:
                run.tracker.busy(time.monotonic())
                run.sync()
            if state is not State.BUSY:
                self._set_state(State.BUSY, "busy on screen", verdict.rule_name, verdict.text)
        elif step is Step.QUESTION:
            self._cancel_settle()
            if self._answered is not None and verdict.matched == self._answered:
                return  # the caller answered this one; the tool has not moved on yet
            answers = self.detector.find_answers(lines, row)
            self._marks.forget_gone(lines, time.monotonic())
            if answers:
                for found in answers:
                    if self._answer(found, startup=False):
                        break
                if self._state is State.WAITING:
                    if run is not None:
                        run.tracker.answered()
                    self._set_state(State.BUSY, "answered by rule", answers[0].rule.name,
                                    answers[0].text)
            else:
                self._ask(verdict)
        elif step is Step.SETTLE:
            self._arm_settle()
        else:
            self._cancel_settle()
            if run is not None and verdict.state == "idle" and run.tracker.idle_seen(
                    time.monotonic()):
                self._arm_verify(run)

    def _arm_verify(self, run: TurnRun) -> None:
        """(Re)start the verify timer for when the tracker says it is due."""
        if run.verify_timer is not None:
            run.verify_timer.cancel()
            run.verify_timer = None
        due = run.tracker.verify_due
        if due is not None:
            run.verify_timer = self._loop.call_later(max(0.0, due - time.monotonic()),
                                                     self._verify_due, run)

    def _answer(self, found: Found, *, startup: bool) -> bool:
        """Send the rule's keys unless this very question was answered a moment ago;
        True if it sent them."""
        name = found.rule.name
        # A question is known by what the pattern matched, not by its whole line: the line
        # also shows the answer being echoed, which must not make it look like a new question.
        if not self._marks.take(name, found.match.group(0), time.monotonic()):
            return False  # already answered; the tool has not redrawn yet
        keys = found.rule.send
        if not keys:
            return False  # a dialog rule that sends nothing only holds start-up back
        # Look again later even if the tool draws nothing more: if the question is still
        # there then, its keys were lost and it is answered again.
        self._loop.call_later(self._marks.retry_s + 0.05, self._schedule_eval)
        event = QuestionAnswered(self.id, rule=name, question=found.text,
                                 keys=describe_keys(keys))
        self._emit(event)
        if self._run is not None and not startup:
            self._run.turn.answered.append(event)
        self._loop.create_task(self._write_all(self._answer_writes(keys, asked_at=None)))
        return True

    def _answer_writes(self, keys: KeySeq, asked_at: float | None) -> list[Write]:
        """The answer's writes, held back until the question has been on screen for the
        adapter's ``answer_delay_ms`` (counted from ``asked_at``, or from now)."""
        writes = key_writes(keys, gap_ms=self.spec.terminal.key_gap_ms)
        delay = self.spec.answer_delay_ms / 1000.0
        if delay and writes:
            age = time.monotonic() - asked_at if asked_at is not None else 0.0
            writes[0] = Write(writes[0].data, max(writes[0].pause_s, delay - age))
        return writes

    def _ask(self, verdict: Verdict) -> None:
        question = verdict.text
        if self._state is not State.WAITING:
            self.question = question
            self._set_state(State.WAITING, "question no rule answers", verdict.rule_name,
                            question)
            self._emit(QuestionPending(self.id, question=question, rule=verdict.rule_name))
            run = self._run
            if run is not None:
                run.tracker.asked()
                run.sync()
                run.turn.question = question
                run.end_phase("waiting")
            if self._startup is not None and not self._startup.done():
                self._startup.set_result("waiting")

    def _settle_s(self) -> float:
        return settle_seconds(self.spec, self._state is State.STARTING)

    def _arm_settle(self) -> None:
        settle = self._settle_s()
        if settle <= 0:
            self._settled()
            return
        if self._settle is None:
            assert self.terminal is not None
            due = self.terminal.last_output_at + settle - time.monotonic()
            self._settle = self._loop.call_later(max(due, 0.0), self._settle_fire)

    def _cancel_settle(self) -> None:
        if self._settle is not None:
            self._settle.cancel()
            self._settle = None

    def _settle_fire(self) -> None:
        self._settle = None
        assert self.terminal is not None
        due = self.terminal.last_output_at + self._settle_s()
        now = time.monotonic()
        if now < due:  # output arrived meanwhile: the screen is not still yet
            self._settle = self._loop.call_later(due - now, self._settle_fire)
            return
        if self._state not in (State.STARTING, State.BUSY, State.WAITING):
            return
        lines, row, title = self._view()
        verdict = self.detector.evaluate(lines, row, title)
        self.last_verdict = verdict
        if verdict.state == "idle":
            self._settled(verdict)

    def _settled(self, verdict: Verdict | None = None) -> None:
        verdict = verdict or self.last_verdict or Verdict("idle")
        state = self._state
        if state is State.IDLE:
            return
        if state not in (State.STARTING, State.BUSY, State.WAITING):
            return
        run = self._run
        if run is not None and not run.tracker.settleable:
            return
        self._set_state(State.IDLE, "idle and settled", verdict.rule_name, verdict.text)
        self.question = None
        if state is State.STARTING and self._startup is not None and not self._startup.done():
            self._startup.set_result("ready")
        if run is not None:
            self._finish(run)

    def _finish(self, run: TurnRun) -> None:
        ended = run.tracker.settled()
        run.sync()  # (cancels a pending verify timer)
        turn = run.turn
        turn.idle_at = time.monotonic()
        assert self.terminal is not None
        turn.last_output_at = self.terminal.last_output_at
        if turn.busy_at is None:
            turn.busy_at = turn.submitted_at
        lines = self._turn_lines(run)
        screen = self.spec.reply.from_ != "none"
        turn.reply = (clean_reply(self.spec, lines, turn.prompt, self.detector.idle_patterns)
                      if screen else "")
        turn.reply_source = "screen" if screen else "none"
        turn.metrics = read_metrics(self.spec, "\n".join(lines)) if self.spec.metrics else {}
        turn.status = TurnStatus.INTERRUPTED if ended is Phase.INTERRUPTED else TurnStatus.DONE
        self._run = None
        self.turns_done += 1
        self._emit(TurnFinished(self.id, turn=turn.number, status=turn.status.value,
                                submit_to_busy_ms=turn.submit_to_busy_ms,
                                busy_to_idle_ms=turn.busy_to_idle_ms))
        follower, query = self._follower, run.record_query
        if follower is None or query is None or turn.status is not TurnStatus.DONE:
            run.end_phase("idle")
            run.resolve()
            return
        # The exact reply from the tool's record, read off the loop; the turn is handed over
        # once it is in (or the screen's stays).
        fetched = follower.fetch(query)
        fetched.add_done_callback(
            lambda done: self._loop.call_soon_threadsafe(self._recorded, run, done))

    def _recorded(self, run: TurnRun,
                  done: concurrent.futures.Future[RecordedReply | None]) -> None:
        got = done.result()
        if got is not None:
            turn = run.turn
            turn.reply, turn.reply_source = got.text, "record"
            turn.tokens, turn.cost_usd = dict(got.tokens), got.cost_usd
            turn.reply_lines_dropped = 0  # the record holds all of it
        run.end_phase("idle")
        run.resolve()

    def _turn_lines(self, run: TurnRun) -> list[str]:
        if self._stream or self.spec.reply.from_ == "stream":
            run.turn.reply_lines_dropped = self._text.dropped
            return self._text.lines()
        assert self.terminal is not None and run.before is not None
        region = self.spec.reply.region
        after = self.terminal.snapshot()
        before_lines = region.select(run.before.lines, run.before.cursor[0])
        after_lines = region.select(after.lines, after.cursor[0])
        if region == ALL:
            after_lines = join_scrollback(self.terminal.scrollback_since(run.before.pushed),
                                          after_lines)
            run.turn.reply_lines_dropped = self.terminal.scrollback_lost_since(run.before.pushed)
        cols = self.terminal.screen.cols
        return screen_delta(join_wrapped(before_lines, cols), join_wrapped(after_lines, cols))

    # -- exit (loop thread) -------------------------------------------------------------------------

    def _on_exit_threadsafe(self, code: int | None, sig: int | None) -> None:
        self._on_exit(code, sig)

    def _on_exit(self, code: int | None, sig: int | None) -> None:
        # The exit's events go out together, before what listeners do about them (the pool
        # backs off and restarts on the state change): the log reads in causal order.
        with self.bus.batch():
            self._exited(code, sig)

    def _exited(self, code: int | None, sig: int | None) -> None:
        self._cancel_settle()
        self.exit_code, self.exit_signal = code, sig
        reason = f"killed by signal {sig}" if sig is not None else f"exit code {code}"
        if self._state is State.BACKOFF or self._state is State.FATAL:
            return
        if self._state is not State.EXITED:
            self._set_state(State.EXITED, reason)
        run = self._run
        if run is not None:
            # Every turn_started has its turn_finished, also when the tool dies mid-turn.
            run.turn.status = TurnStatus.FAILED
            run.turn.error = f"process exited ({reason})"
            self._emit(TurnFinished(self.id, turn=run.turn.number, status="failed",
                                    error=run.turn.error))
        self._emit(ProcessExited(self.id, pid=self.pid or 0, returncode=code, signal=sig))
        if run is not None:
            run.tracker.exited()
            run.sync()
            self._run = None
            run.end_phase("exited")
            run.resolve(self._exit_error(f"exited during turn {run.turn.number}"))
        if self._startup is not None and not self._startup.done():
            self._startup.set_result("exited")

    # -- turns --------------------------------------------------------------------------------------

    def send(self, prompt: str, *, timeout: float | None = None) -> Turn:
        """Submit ``prompt`` and block until the turn is done (or WAITING on a question)."""
        return self._await_turn(self._begin(prompt), timeout)

    def submit(self, prompt: str) -> concurrent.futures.Future[Turn]:
        """Start a turn without waiting. The future resolves when the turn is over for good
        (DONE or INTERRUPTED), or fails with SessionExited / SubmitFailed. A question no rule
        answers does not resolve it: the session goes WAITING until someone calls answer()."""
        return self._begin(prompt).final

    def start_turn(self, prompt: str,
                   on_done: Callable[[Turn, BaseException | None], None]) -> Turn:
        """Start a turn and call ``on_done(turn, error)`` on the reader loop when it is over
        for good — the light-weight form of :meth:`submit` that the pool uses."""
        return self._begin(prompt, on_done).turn

    @property
    def current_turn(self) -> Turn | None:
        run = self._run
        return run.turn if run is not None else None

    def wait_turn(self, timeout: float | None = None) -> Turn:
        """After a WAITING turn was answered with :meth:`answer`, wait for it to finish."""
        run = self._run
        if run is None:
            raise self._error(NotReady, "no turn in progress")
        return self._await_turn(run, timeout)

    def _begin(self, prompt: str,
               on_done: Callable[[Turn, BaseException | None], None] | None = None) -> TurnRun:
        def begin() -> TurnRun:
            if self._state is not State.IDLE or self._run is not None:
                raise self._error(NotReady, f"cannot take a prompt while {self._state}")
            turn = Turn(next(self._numbers), prompt, self.id, self.spec.name,
                        started_at=time.monotonic())
            run = TurnRun(turn, self._loop, TurnTracker.for_spec(self.spec))
            run.on_done = on_done
            self._run = run
            self._cancel_settle()
            # A question asked again in this turn is a new one, not a redraw of the last
            # turn's (the same "Apply edit to a.py?" in the next job must not wait a retry).
            self._marks.clear()
            self._start_submit(run)
            return run

        return self._ioloop.run_sync(begin)

    def _announce(self, run: TurnRun) -> None:
        self._set_state(State.BUSY, "turn started")
        self._emit(TurnStarted(self.id, turn=run.turn.number, prompt=run.turn.prompt))

    def _start_submit(self, run: TurnRun) -> None:
        """Type the prompt and submit it (loop thread), and go BUSY. Without pauses in the
        recipe it is one write, done right here — before the state change and its event, so
        the tool starts on the prompt while they go out; with pauses a task types it."""
        assert self.terminal is not None
        terminal = self.terminal
        recipe = self.spec.submit
        if not self._stream:
            run.before = terminal.snapshot()
        # Looking at the paste mode renders the screen: only do it when a paste may happen.
        wants_paste = recipe.paste == "bracketed" or "\n" in run.turn.prompt
        body, keys = submit_writes(self.spec, run.turn.prompt,
                                   paste_ok=wants_paste and terminal.bracketed_paste)
        if self._stream:
            self._text.clear()
        if self._follower is not None:
            run.record_query = self._follower.next_query(run.turn.prompt)
        if all(w.pause_s == 0 for w in body + keys):  # the fast path for line tools
            try:
                terminal.write(b"".join(w.data for w in body + keys))
            except (BrokenPipeError, OSError) as exc:
                self._announce(run)
                self._fail(run, f"write failed: {exc}")
                return
            self._announce(run)
            self._submitted(run)
        else:
            self._announce(run)
            self._loop.create_task(self._type(run, body, keys))

    async def _type(self, run: TurnRun, body: list[Write], keys: list[Write]) -> None:
        echo = self.spec.submit.after_echo and not self._stream
        terminal = self.terminal
        assert terminal is not None
        try:
            if echo:
                # Each write goes once the tool drew after the one before (the keys: once the
                # text shows), its pause being only the longest wait for that.
                for i, w in enumerate(body):
                    if i:
                        await self._drawn(run, w.pause_s, self._drew_since(self._reads))
                    terminal.write(w.data)
                if keys:
                    await self._drawn(run, keys[0].pause_s, lambda: self._typed_shows(run))
                    keys = [Write(keys[0].data, 0.0), *keys[1:]]
            else:
                await self._write_all(body)
            await self._write_all(keys)
        except (BrokenPipeError, OSError) as exc:
            if self._run is run:
                self._fail(run, f"write failed: {exc}")
            return
        if self._run is run:
            self._submitted(run)

    async def _drawn(self, run: TurnRun, longest_s: float, shows: Callable[[], bool]) -> None:
        """Wait until ``shows()`` holds after some output, ``longest_s`` at most."""
        if shows():
            return
        run.echo = (self._loop.create_future(), shows)
        try:
            await asyncio.wait_for(run.echo[0], longest_s)
        except TimeoutError:
            pass
        finally:
            run.echo = None

    def _drew_since(self, reads: int) -> Callable[[], bool]:
        return lambda: self._reads > reads

    def _typed_shows(self, run: TurnRun) -> bool:
        assert self.terminal is not None
        lines, row, _title = self.terminal.view()
        return still_typed(lines, row, run.turn.prompt)

    def _submitted(self, run: TurnRun) -> None:
        tracker = run.tracker
        if not self._stream and tracker.output_at is None and self.terminal is not None:
            run.at_submit = self.terminal.snapshot()
        now = time.monotonic()
        run.turn.submitted_at = now
        due = tracker.keys_out(now)
        run.sync()
        if due is not None:
            run.verify_timer = self._loop.call_later(due - now, self._verify_due, run)

    def _verify_due(self, run: TurnRun) -> None:
        """The tool has not shown it took the prompt in time: accept a turn that visibly ran,
        else press the submit keys again, else give up."""
        run.verify_timer = None
        tracker = run.tracker
        if tracker.verified or run.phase_done() or self._run is not run:
            return
        now = time.monotonic()
        moved = tracker.output_at is not None and self._screen_moved(run)
        step = tracker.verify_fired(now, moved)
        if step is VerifyStep.ACCEPT:
            self._schedule_eval()
        elif step is VerifyStep.FAIL:
            self._fail(run, f"the tool did not take the prompt after {tracker.retries + 1} tries")
        elif step is VerifyStep.RESEND:
            run.turn.retries += 1  # (the pool's retries on another instance count too)
            recipe = self.spec.submit
            self._loop.create_task(self._write_all(
                key_writes(recipe.keys, gap_ms=self.spec.terminal.key_gap_ms)))
            assert tracker.verify_due is not None
            run.verify_timer = self._loop.call_later(tracker.verify_due - now,
                                                     self._verify_due, run)

    def _screen_moved(self, run: TurnRun) -> bool:
        """Whether the screen shows the tool took the prompt without showing busy: it changed
        since the submit keys went out (compared with the screen *after typing*, so that an
        input box re-laid out by the typed text does not pass for a turn that ran), and the
        prompt no longer sits in the input line. Movement alone proves nothing: the echo of
        the typing may arrive after the keys, and a tool still drawing its start-up (or
        hiding a hint a while after a key) moves the screen around a prompt it never took."""
        if self._stream:
            return True
        assert self.terminal is not None
        ref = run.at_submit or run.before
        assert ref is not None
        snap = self.terminal.snapshot()
        now = snap.lines
        if still_typed(now, snap.cursor[0], run.turn.prompt):
            return False
        row = ref.cursor[0]  # the input line itself may still change (the keys echo there)
        return [x for i, x in enumerate(now) if i != row] != \
            [x for i, x in enumerate(ref.lines) if i != row]

    def _fail(self, run: TurnRun, message: str) -> None:
        run.tracker.failed()
        run.sync()
        run.turn.status = TurnStatus.FAILED
        run.turn.error = message
        if self._run is run:
            self._run = None
        self._emit(TurnFinished(self.id, turn=run.turn.number, status="failed", error=message))
        error = self._error(SubmitFailed, message)
        run.end_phase("failed", error)
        run.resolve(error)
        # The tool may be idle after all: let detection settle the state.
        self._schedule_eval_idle()

    def _schedule_eval_idle(self) -> None:
        if self._state is State.BUSY:
            self._schedule_eval()

    async def _write_all(self, writes: Sequence[Write]) -> None:
        assert self.terminal is not None
        for w in writes:
            if w.pause_s > 0:
                await asyncio.sleep(w.pause_s)
            self.terminal.write(w.data)

    def _await_turn(self, run: TurnRun, timeout: float | None) -> Turn:
        limit = timeout if timeout is not None else self.spec.turn_timeout_s

        async def wait() -> str:
            return await asyncio.wait_for(asyncio.shield(run.future), limit)

        fut = asyncio.run_coroutine_threadsafe(wait(), self._loop)
        try:
            outcome = fut.result(limit + 5.0)
        except TimeoutError:
            run.turn.status = TurnStatus.TIMEOUT
            raise self._error(TurnTimeout, f"turn {run.turn.number} not done after {limit:g}s") \
                from None
        if outcome == "waiting":
            self._ioloop.run_sync(run.renew)
            run.turn.status = TurnStatus.WAITING
        elif outcome == "exited":
            raise self._exit_error(f"exited during turn {run.turn.number}")
        return run.turn

    # -- control ------------------------------------------------------------------------------------

    def write(self, data: bytes | str) -> None:
        """Raw bytes to the tool, as if typed (no state change)."""
        if self.terminal is None:
            raise self._error(NotReady, "not started")
        self.terminal.write(data.encode("utf-8") if isinstance(data, str) else data)

    def answer(self, keys: str | Sequence[str]) -> None:
        """Answer the question the session is WAITING on: text, or a list of key names/text."""
        seq = parse_keys(keys)

        def go() -> None:
            if self._state is not State.WAITING:
                raise self._error(NotReady, "no question is pending")
            question = self.question or ""
            asked_at = self._state_since
            verdict = self.last_verdict
            if verdict is not None and verdict.state == "waiting":
                self._answered = verdict.matched
            self.question = None
            event = QuestionAnswered(self.id, rule="caller", question=question,
                                     keys=describe_keys(seq))
            self._emit(event)
            if self._run is not None:
                self._run.turn.answered.append(event)
                self._run.tracker.answered()
            self._set_state(State.BUSY, "answered by caller")
            self._loop.create_task(self._write_all(self._answer_writes(seq, asked_at)))

        self._ioloop.run_sync(go)

    def interrupt(self) -> None:
        """Send the adapter's interrupt keys; the turn ends INTERRUPTED when the tool is idle."""
        def go() -> None:
            run = self._run
            if run is not None:
                run.tracker.interrupt()
                run.sync()
            self._loop.create_task(self._write_all(key_writes(
                self.spec.interrupt, gap_ms=self.spec.terminal.key_gap_ms)))

        self._ioloop.run_sync(go)

    def attach(self) -> None:
        """A person takes the keyboard: automation pauses (ATTACHED) until :meth:`detach`."""
        def go() -> None:
            self._cancel_settle()
            self._set_state(State.ATTACHED, "attached")

        self._ioloop.run_sync(go)

    def detach(self) -> State:
        """Give the instance back, at its own size; it returns in the state its screen
        shows."""
        if (self.rows, self.cols) != self._own_size:
            self._set_size(*self._own_size)

        def go() -> State:
            lines, row, title = self._view()
            verdict = self.detector.evaluate(lines, row, title)
            new = {"idle": State.IDLE, "waiting": State.WAITING}.get(verdict.state or "",
                                                                    State.BUSY)
            if new is State.WAITING:
                self.question = verdict.text
            self._set_state(new, "detached", verdict.rule_name, verdict.text)
            if new is State.BUSY:
                self._schedule_eval()
            return new

        return self._ioloop.run_sync(go)

    def resize(self, rows: int, cols: int) -> None:
        """Set the terminal size. While a person is attached the size is theirs, for the
        time being; otherwise it becomes the instance's own (kept across restarts)."""
        if self._state is not State.ATTACHED:
            self._own_size = (rows, cols)
        self._set_size(rows, cols)

    def _set_size(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        if self.terminal is not None:
            self.terminal.resize(rows, cols)

    def backoff(self, reason: str) -> None:
        self._ioloop.run_sync(self._set_state, State.BACKOFF, reason)

    def fatal(self, reason: str) -> None:
        self._ioloop.run_sync(self._set_state, State.FATAL, reason)

    def cancel_backoff(self, reason: str) -> None:
        """BACKOFF -> EXITED (a restart by hand overrides the back-off); else nothing."""
        def go() -> None:
            if self._state is State.BACKOFF:
                self._set_state(State.EXITED, reason)

        self._ioloop.run_sync(go)

    def close(self) -> None:
        """Nothing to let go of: the process is stopped, and a stopped session holds only
        its last screen, which goes with the object."""

    def kill(self) -> None:
        """SIGKILL the tool's process group now: for when a polite stop failed."""
        terminal = self.terminal
        if terminal is not None and terminal.child is not None:
            terminal.child.signal_group(9)

    def stop(self, timeout: float | None = None) -> str:
        """Quit politely with the exit recipe, then escalate; no process of it survives."""
        terminal = self.terminal
        if terminal is None or not terminal.alive:
            if terminal is not None and terminal.child is not None:
                terminal.child.wait_group(2.0)
            return "exited"

        def mark() -> None:
            if self._state in LIVE_STATES and self._state is not State.STOPPING:
                self._set_state(State.STOPPING, "stop requested")
            self._cancel_settle()

        was = self._state
        self._ioloop.run_sync(mark)
        recipe = self.spec.exit
        exit_timeout = recipe.timeout_s if timeout is None else min(recipe.timeout_s, timeout)
        gap = self.spec.terminal.key_gap_ms
        writes = key_writes(recipe.keys, gap_ms=gap)
        if was in (State.BUSY, State.WAITING) and writes:
            # A tool in the middle of a turn or a question rarely takes its quit command:
            # interrupt it first, as a person would.
            first = writes[0]
            writes = key_writes(self.spec.interrupt, gap_ms=gap) + \
                [Write(first.data, max(first.pause_s, gap / 1000)), *writes[1:]]
        how = terminal.stop(exit_keys=[(w.data, w.pause_s) for w in writes],
                            exit_timeout=exit_timeout,
                            grace=recipe.signal_grace_s,
                            key_gap=self.spec.terminal.key_gap_ms / 1000)
        self.wait_state(State.EXITED, State.BACKOFF, State.FATAL, timeout=5.0)
        return how

    def restart(self, *, wait: bool = True) -> State:
        if self._state in LIVE_STATES:
            self.stop()
        return self.start(wait=wait)

    # -- views --------------------------------------------------------------------------------------

    def add_output_listener(self, listener: Callable[[bytes, float], None]) -> Callable[[], None]:
        """Raw output as it arrives (on the reader loop); returns a function that removes it."""
        if self.terminal is None:
            raise self._error(NotReady, "not started")
        return self.terminal.add_output_listener(listener)

    def flush_transcript(self) -> None:
        """Write out what the transcript holds in its buffer (readers see it at once)."""
        terminal = self.terminal
        if terminal is not None and terminal.transcript is not None:
            terminal.transcript.flush()

    def render_screen(self) -> bytes:
        """Bytes that redraw the current screen on a real terminal (for attaching clients)."""
        return self.terminal.render_ansi() if self.terminal else b""

    def screen_lines(self) -> list[str]:
        return self.terminal.lines() if self.terminal else []

    def screen_tail(self, n: int = 15) -> list[str]:
        """The last ``n`` non-blank lines of the screen (for an error message)."""
        return self.terminal.tail(n) if self.terminal is not None else []

    def screen_text(self) -> str:
        return "\n".join(self.screen_lines())

    def status(self) -> dict[str, Any]:
        return {"id": self.id, "adapter": self.spec.name, "state": self._state.value,
                "pid": self.pid, "turns": self.turns_done, "starts": self.starts,
                "since": self._state_since, "question": self.question, "host": None}

    def bytes_in(self) -> int:
        """Output bytes read from the tool in this run."""
        terminal = self.terminal
        return terminal.bytes_in if terminal is not None else 0

    def events(self) -> Iterator[Event]:
        return iter(list(self.history))

    def __enter__(self) -> Session:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.spec.name} {self._state}>"

