#!/usr/bin/env python3
"""Fake CLI: asks the terminal for the cursor position at start and dies if nobody answers.

Writes ``ESC[6n`` and waits up to 1 s (raw mode) for ``ESC[r;cR``. No answer: prints
``no answer to cursor query`` to stderr and exits 3. Otherwise prints ``cursor at <r>;<c>``
and runs a minimal raw-mode prompt ``$ `` that echoes typed characters and answers Enter
with ``ok: <line>``; ``quit`` exits 0.
"""

from __future__ import annotations

import os
import re
import select
import sys
import termios
import time
import tty

CPR = re.compile(rb"\x1b\[(\d+);(\d+)R")


def out(text: str) -> None:
    os.write(1, text.encode("utf-8"))


def run() -> int:
    out("\x1b[6n")
    deadline = time.monotonic() + 1.0
    buf = b""
    while not CPR.search(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            return 3
        ready, _, _ = select.select([0], [], [], left)
        if ready:
            data = os.read(0, 1024)
            if not data:
                return 3
            buf += data
    m = CPR.search(buf)
    assert m is not None
    out(f"cursor at {int(m.group(1))};{int(m.group(2))}\r\n$ ")
    line = ""
    pending = (buf[: m.start()] + buf[m.end() :]).decode("utf-8", errors="replace")
    while True:
        for ch in pending:
            if ch in "\r\n":
                if line == "quit":
                    out("\r\n")
                    return 0
                out(f"\r\nok: {line}\r\n$ ")
                line = ""
            elif ch >= " " and ch != "\x7f":
                line += ch
                out(ch)
        data = os.read(0, 1024)
        if not data:
            return 0
        pending = data.decode("utf-8", errors="replace")


def main() -> int:
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        code = run()
    finally:
        termios.tcsetattr(0, termios.TCSAFLUSH, saved)
    if code == 3:
        print("no answer to cursor query", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
