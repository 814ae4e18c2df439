"""Whether a process still runs, and which run of a pid it is: for the records of runs whose
owner may have died."""

from __future__ import annotations

import os
import signal

__all__ = ["kill_group_of", "pid_alive", "start_ticks"]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs. A killed process that its parent has not reaped yet (a
    zombie, until init gets to it) is dead, though signals still reach its pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows
            # the last ")".
            state = f.read().rpartition(b")")[2].split()[:1]
    except OSError:  # no /proc (not Linux): the signal's word stands
        return True
    return state != [b"Z"]


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``): with the pid,
    it names one process, where a pid alone may have been reused. None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rpartition(b")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def kill_group_of(pid: int, ticks: int | None, sig: int = signal.SIGKILL) -> bool:
    """Signal the process group led by ``pid`` if that is still the process that started at
    ``ticks``: the tools of a host that died are left to their parent, init, and must go."""
    if ticks is None or start_ticks(pid) != ticks:
        return False
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
