#!/usr/bin/env python3
"""Fake CLI: a raw-mode prompt that shows a one-line spinner and a spinner title while busy.

Prompt ``> ``; typed characters are echoed by the program itself (raw mode). Enter submits
the line; then ``\\r<spinner> working (esc to interrupt)`` frames are drawn every 50 ms for
``FAKE_THINK`` seconds (default 0.3) with the title (OSC 0) ``<spinner> spinner-cli``; then the
line is cleared and ``result: <line>`` is printed with a new prompt, title ``spinner-cli``.
Esc while busy prints ``interrupted``. ``quit`` or Ctrl-D exits 0; Ctrl-C exits 130.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def out(text: str) -> None:
    os.write(1, text.encode("utf-8"))


def busy(think: float) -> bool:
    """Animate for ``think`` seconds; return False if Esc interrupted."""
    start = time.monotonic()
    k = 0
    while True:
        spin = SPINNER[k % len(SPINNER)]
        out(f"\x1b]0;{spin} spinner-cli\x07\r{spin} working (esc to interrupt)")
        k += 1
        left = start + think - time.monotonic()
        if left <= 0:
            return True
        ready, _, _ = select.select([0], [], [], min(0.05, left))
        if ready and b"\x1b" in os.read(0, 1024):
            return False


def run() -> int:
    think = float(os.environ.get("FAKE_THINK") or 0.3)
    out("\x1b]0;spinner-cli\x07> ")
    line = ""
    while True:
        data = os.read(0, 1024)
        if not data:
            return 0
        for ch in data.decode("utf-8", errors="replace"):
            if ch in "\r\n":
                if line == "quit":
                    out("\r\n")
                    return 0
                if busy(think):
                    out(f"\r\x1b[2K\x1b]0;spinner-cli\x07result: {line}\r\n> ")
                else:
                    out("\x1b]0;spinner-cli\x07\r\ninterrupted\r\n> ")
                line = ""
            elif ch in "\x7f\x08":
                if line:
                    line = line[:-1]
                    out("\b \b")
            elif ch == "\x03":
                return 130
            elif ch == "\x04" and not line:
                return 0
            elif ch >= " ":
                line += ch
                out(ch)


def main() -> int:
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        return run()
    finally:
        termios.tcsetattr(0, termios.TCSAFLUSH, saved)


if __name__ == "__main__":
    sys.exit(main())
