"""Finding the processes a test left behind.

While a :class:`LeakCheck` is active, every process started from this one inherits a token in
its environment (``AIMTERM_TEST_LEAK_TOKEN``), children of children and processes that escaped
with ``setsid`` included. Afterwards :meth:`LeakCheck.leftovers` lists the live processes that
still carry it, and :meth:`LeakCheck.kill` ends them so one leak cannot cascade into the next
test. Linux only (it reads ``/proc``), standard library only.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass
from types import TracebackType

__all__ = ["LEAK_ENV", "LeakCheck", "Leftover", "tagged_processes"]

LEAK_ENV = "AIMTERM_TEST_LEAK_TOKEN"
_PROC = "/proc"


@dataclass(frozen=True)
class Leftover:
    """A process that outlived its test; ``started`` (clock ticks after boot) tells it from a
    later process that reuses the pid."""

    pid: int
    started: int
    cmdline: str

    def __str__(self) -> str:
        return f"{self.pid} {self.cmdline}"


def _stat(pid: int) -> tuple[str, int] | None:
    """The state letter and start time of ``pid``, or None if it is gone."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # "pid (comm) state ..." — comm may hold spaces and parentheses: split after the last ")".
    fields = text[text.rfind(b")") + 2:].split()
    return fields[0].decode("ascii"), int(fields[19])


def _alive(proc: Leftover) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat[1] == proc.started and stat[0] not in ("Z", "X")


def tagged_processes(token: str) -> list[Leftover]:
    """Live processes (this one excepted) whose environment carries ``LEAK_ENV=token``."""
    wanted = f"{LEAK_ENV}={token}".encode()
    me = os.getpid()
    found = []
    for name in os.listdir(_PROC):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        try:
            with open(f"{_PROC}/{pid}/environ", "rb") as f:
                if wanted not in f.read().split(b"\0"):
                    continue
            with open(f"{_PROC}/{pid}/cmdline", "rb") as f:
                cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read: another user's process carries no token
            continue
        stat = _stat(pid)
        if stat is not None and stat[0] not in ("Z", "X"):
            found.append(Leftover(pid, stat[1], cmdline))
    return found


class LeakCheck:
    """Tags the processes started inside its ``with`` block; see the module docstring.

    ``grace_s``: a process reaped a moment ago may still be finishing its exit, so
    :meth:`leftovers` waits up to that long for the tagged processes to go."""

    def __init__(self, grace_s: float = 2.0) -> None:
        self.grace_s = grace_s
        self.token = uuid.uuid4().hex
        self._old: str | None = None

    def __enter__(self) -> LeakCheck:
        self._old = os.environ.get(LEAK_ENV)
        os.environ[LEAK_ENV] = self.token
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._old is None:
            os.environ.pop(LEAK_ENV, None)
        else:
            os.environ[LEAK_ENV] = self._old

    def leftovers(self) -> list[Leftover]:
        """The tagged processes still alive once the grace period is over (or gone sooner)."""
        deadline = time.monotonic() + self.grace_s
        left = tagged_processes(self.token)
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [p for p in left if _alive(p)]
        return left

    @staticmethod
    def kill(procs: list[Leftover]) -> None:
        """SIGKILL each one that is still the same process."""
        for proc in procs:
            if _alive(proc):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
