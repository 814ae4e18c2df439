"""One run of a tool's non-interactive form (``claude -p``, ``bash -c``) for one job.

A job goes one-shot when its tool has no pooled instances for it: the adapter's
``jobs.oneshot`` argv (:func:`aimterm.jobs.recipe.oneshot_argv`) runs once, under a real
terminal, because agent CLIs behave differently without one and some die when nobody answers
their cursor-position query — the terminal layer answers those. What the program printed comes
back as plain text; whether the job worked is for its acceptance commands to say, not for this
module.

A run ends when the program exits, at its timeout, or when its ``cancel`` event is set; then
the whole process group gets SIGTERM and, 2 s later, SIGKILL. Whatever is left in the
program's session when it exits (a background child) is ended by the terminal layer. Either
way nothing outlives :func:`run_oneshot`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aimterm.adapter.launch import Launch
from aimterm.adapter.spec import AdapterSpec
from aimterm.errors import StopTimeout
from aimterm.jobs.recipe import oneshot_env_values
from aimterm.jobs.spec import Job
from aimterm.term.child import PtyChild
from aimterm.term.matcher import TextTail
from aimterm.term.terminal import Terminal

__all__ = ["KILL_GRACE_S", "MAX_OUTPUT", "OneShotRun", "oneshot_cwd", "oneshot_env",
           "run_oneshot"]

#: The most text a run gives back (its end: where errors and summaries are).
MAX_OUTPUT = 256 * 1024
#: Raw bytes kept while the program runs: escape sequences and redrawn lines take room, so
#: more than the text given back, and bounded however much the program prints.
_RAW_KEEP = 4 * MAX_OUTPUT
#: Between SIGTERM and SIGKILL to the process group.
KILL_GRACE_S = 2.0
#: How long the group may take to be gone after SIGKILL (or after the program exited).
_REAP_S = 5.0
#: How often a run with a ``cancel`` event looks at it: a thread cannot wait on two events
#: at once, and a twentieth of a second is well inside what cancelling a job needs.
_CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class OneShotRun:
    """How one run went. ``exit_code`` is None when a signal ended the program (then
    ``signal`` says which); ``timed_out``/``cancelled`` say that this module sent it."""

    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    #: What the program printed, escape sequences removed, as text (the last
    #: :data:`MAX_OUTPUT` bytes at most), trailing blank lines dropped.
    output: str
    timed_out: bool
    cancelled: bool
    duration_s: float


class _Output:
    """The tail of the program's raw output, bounded, turned into text at the end."""

    def __init__(self, keep: int) -> None:
        self._buf = bytearray()
        self._keep = keep
        self._lock = threading.Lock()

    def add(self, data: bytes, _now: float) -> None:  # on the reader loop
        with self._lock:
            self._buf += data
            if len(self._buf) > 2 * self._keep:
                # Cut at a line start: no escape sequence or overwritten line is cut in two.
                start = len(self._buf) - self._keep
                newline = self._buf.find(b"\n", start)
                del self._buf[: newline + 1 if newline >= 0 else start]

    def text(self) -> str:
        with self._lock:
            raw = bytes(self._buf)
        tail = TextTail(max_lines=len(raw) + 1)  # dumb-terminal rendering: \r, backspace
        tail.feed(raw)
        lines = tail.lines()
        while lines and not lines[-1]:
            lines.pop()
        text = "\n".join(lines)
        data = text.encode("utf-8")
        if len(data) > MAX_OUTPUT:
            text = data[-MAX_OUTPUT:].decode("utf-8", "ignore")
            newline = text.find("\n")
            if newline >= 0:
                text = text[newline + 1:]  # no half line at the top
        return text


def _end(child: PtyChild) -> None:
    """SIGTERM to the group, SIGKILL after :data:`KILL_GRACE_S`; raise if even that fails."""
    child.signal_group(signal.SIGTERM)
    child.signal_group(signal.SIGCONT)  # a stopped process acts on SIGTERM only once resumed
    if child.wait(KILL_GRACE_S):
        return
    child.signal_group(signal.SIGKILL)
    if not child.wait(_REAP_S):
        raise StopTimeout(f"process {child.pid} ({child.argv[0]}) survived SIGKILL")


def run_oneshot(argv: Sequence[str], *, cwd: str | None, env: Mapping[str, str],
                timeout_s: float, rows: int = 40, cols: int = 200,
                cancel: threading.Event | None = None) -> OneShotRun:
    """Run ``argv`` once under a PTY of ``rows`` x ``cols`` in ``cwd`` with exactly ``env``;
    return when it and its process group are gone.

    Raises :class:`~aimterm.errors.SpawnError` when the program cannot be started (missing,
    not executable, no such cwd), ValueError for a ``timeout_s`` that is not positive, and
    :class:`~aimterm.errors.StopTimeout` if the group survives SIGKILL. Blocks: call it from
    a worker thread, never from the reader loop.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    command = tuple(argv)
    started = time.monotonic()
    if cancel is not None and cancel.is_set():
        return OneShotRun(command, None, None, "", timed_out=False, cancelled=True,
                          duration_s=0.0)
    output = _Output(_RAW_KEEP)
    # A lazy screen: the text comes from the stream; the screen is drawn only to answer a
    # query (the cursor position is asked of the screen as it is at the query).
    term = Terminal(command, env=env, cwd=cwd, rows=rows, cols=cols, scrollback=0,
                    lazy_screen=True)
    term.add_output_listener(output.add)
    term.start()
    child = term.child
    assert child is not None
    timed_out = cancelled = False
    try:
        deadline = started + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if child.wait(min(left, _CANCEL_POLL_S) if cancel is not None else left):
                break
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
    finally:
        if child.alive:
            _end(child)
        elif timed_out or cancelled:
            timed_out = cancelled = False  # it ended on its own just then
        if not child.wait_group(_REAP_S):
            raise StopTimeout(f"processes left by {command[0]} (pid {child.pid}) survived "
                              "SIGKILL")
    return OneShotRun(command, child.returncode, child.signal, output.text(),
                      timed_out=timed_out, cancelled=cancelled,
                      duration_s=time.monotonic() - started)


def _launch(adapter: AdapterSpec, job: Job) -> Launch:
    # A one-shot run is no instance; the job's id stands in where an instance id would.
    return Launch(adapter, instance=job.id, cwd=job.cwd)


def oneshot_env(adapter: AdapterSpec, job: Job) -> dict[str, str]:
    """The environment of ``job``'s one-shot run: this process's, less the adapter's
    ``env_remove``, plus its ``env`` and ``TERM`` (as a session start has them), then the
    recipe's ``oneshot_env``, then the job's ``env``."""
    env = _launch(adapter, job).environ()
    env.pop("AIMTERM_INSTANCE", None)
    env.update(oneshot_env_values(adapter.jobs, job))
    env.update(job.env)
    return env


def oneshot_cwd(adapter: AdapterSpec, job: Job) -> str | None:
    """Where ``job``'s one-shot run starts: the job's cwd, else the adapter's, else (None)
    this process's."""
    return _launch(adapter, job).workdir()
