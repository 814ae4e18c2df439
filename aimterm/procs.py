"""Whether a process still runs: for the records of runs whose owner may have died."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


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
