#!/usr/bin/env python3
"""Fake CLI: an input box that is drawn, and echoes keys, before it takes Enter.

Like an Ink TUI starting up: the box (a rule, ``❯ <typed text>``, a rule, a mode line) is on
screen from the first frame, while a welcome line above it is animated every ``FAKE_FRAME_S``
seconds (default 0.1) for ``FAKE_DEAF_S`` seconds (default 1.0). Typed characters are echoed
into the box all along, but an Enter that arrives in that time is dropped. After it, Enter
submits: the box empties, the mode line says ``esc to interrupt`` for ``FAKE_THINK`` seconds
(default 0.3), then ``● reply: <text>`` is printed above the box. Ctrl-C exits 130, Ctrl-D
on an empty box exits 0.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty

GLYPHS = "·✢*✶✻✽"
RULE = "─" * 40
BOX = 20  # the box's first row (1-based): rule, input, rule, mode line


def out(text: str) -> None:
    os.write(1, text.encode("utf-8"))


def row(n: int, text: str) -> str:
    return f"\x1b[{n};1H\x1b[2K{text}"


def box(line: str, mode: str) -> str:
    return (row(BOX, RULE) + row(BOX + 1, f"❯ {line}") + row(BOX + 2, RULE)
            + row(BOX + 3, mode) + f"\x1b[{BOX + 1};{3 + len(line)}H")


def run() -> int:
    frame_s = float(os.environ.get("FAKE_FRAME_S") or 0.1)
    deaf_until = time.monotonic() + float(os.environ.get("FAKE_DEAF_S") or 1.0)
    think = float(os.environ.get("FAKE_THINK") or 0.3)
    idle = "  ? for shortcuts"
    transcript: list[str] = []
    line = ""
    k = 0
    out("\x1b[2J" + box(line, idle))
    while True:
        now = time.monotonic()
        animating = now < deaf_until
        if animating:
            out(row(1, f" {GLYPHS[k % len(GLYPHS)]} Welcome to late-input") + box(line, idle))
            k += 1
        ready, _, _ = select.select([0], [], [], frame_s if animating else None)
        if not ready:
            continue
        data = os.read(0, 1024)
        if not data:
            return 0
        for ch in data.decode("utf-8", errors="replace"):
            if ch in "\r\n":
                if time.monotonic() < deaf_until or not line:
                    continue  # not listening for Enter yet
                out(box("", "  esc to interrupt"))
                time.sleep(think)
                transcript += [f"❯ {line}", f"● reply: {line}"]
                out("".join(row(3 + i, t) for i, t in enumerate(transcript)) + box("", idle))
                line = ""
            elif ch in "\x7f\x08":
                line = line[:-1]
                out(box(line, idle))
            elif ch == "\x15":
                line = ""
                out(box(line, idle))
            elif ch == "\x03":
                return 130
            elif ch == "\x04" and not line:
                return 0
            elif ch >= " ":
                line += ch
                out(box(line, idle))


def main() -> int:
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        return run()
    finally:
        termios.tcsetattr(0, termios.TCSAFLUSH, saved)


if __name__ == "__main__":
    sys.exit(main())
