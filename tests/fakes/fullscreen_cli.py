#!/usr/bin/env python3
"""Fake CLI: a line-oriented prompt that goes full-screen on demand, as Codex or an editor does.

Prints ``fs> `` and reads lines in cooked tty mode. ``full`` switches to the alternate screen
and turns on what full-screen agents leave on: bracketed paste, mouse reporting (button
events, SGR encoding) and a hidden cursor; it then draws ``FULL SCREEN`` and the prompt again.
Any other line is answered ``said: <line>``. ``quit`` or EOF leaves the alternate screen if
it is on, turns those modes off and exits 0.
"""

from __future__ import annotations

import sys

ENTER = "\x1b[?1049h\x1b[?2004h\x1b[?1002h\x1b[?1006h\x1b[?25l\x1b[H\x1b[2J"
LEAVE = "\x1b[?25h\x1b[?1006l\x1b[?1002l\x1b[?2004l\x1b[?1049l"


def main() -> int:
    out = sys.stdout
    full = False
    out.write("fs> ")
    out.flush()
    while True:
        line = sys.stdin.readline()
        if not line or line.strip() == "quit":
            if full:
                out.write(LEAVE)
            out.flush()
            return 0
        text = line.strip()
        if text == "full":
            full = True
            out.write(ENTER + "FULL SCREEN\r\n")
        elif text:
            out.write(f"said: {text}\n")
        out.write("fs> ")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
