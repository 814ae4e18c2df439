#!/usr/bin/env python3
"""Fake CLI: hard to stop, and leaves a grandchild behind.

Cooked-mode prompt ``slow> ``. SIGHUP and SIGTERM are ignored, so only SIGKILL works, unless
``FAKE_HONOUR_TERM=1``: then SIGTERM exits (code 143) after 0.2 s. At start it forks a
grandchild in the same process group that ignores SIGHUP/SIGTERM and sleeps 1000 s (its stdio
is moved to /dev/null so it does not keep the terminal open), and prints ``grandchild <pid>``
before the first prompt. ``quit`` sleeps ``FAKE_EXIT_DELAY`` seconds (default 3) then exits 0,
leaving the grandchild running on purpose: stopping must kill the whole group. Other lines
are answered with ``ok: <line>``; EOF exits 0 at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType


def _term_later(_signo: int, _frame: FrameType | None) -> None:
    time.sleep(0.2)
    sys.stdout.flush()
    os._exit(143)


def main() -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        # Grandchild: inherits the ignored signals; only SIGKILL (to it or the group) ends it.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        time.sleep(1000)
        os._exit(0)
    if os.environ.get("FAKE_HONOUR_TERM") == "1":
        signal.signal(signal.SIGTERM, _term_later)
    delay = float(os.environ.get("FAKE_EXIT_DELAY") or 3)
    out = sys.stdout
    out.write(f"grandchild {pid}\nslow> ")
    out.flush()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.rstrip("\r\n")
        if line == "quit":
            time.sleep(delay)
            return 0
        out.write(f"ok: {line}\nslow> ")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
