#!/usr/bin/env python3
"""Fake CLI: a line-oriented echo REPL in cooked tty mode (the latency benchmark peer).

Prints ``ready> ``, reads a line, prints ``echo: <line>`` and the prompt again. ``exit`` or
EOF quits with 0. ``FAKE_THINK`` (seconds, default 0) sleeps before each reply. Nothing else
happens per turn so the measured latency is the terminal layer's, not this program's.

``--resume`` (the adapter's resume flag) prints ``resumed previous session`` first; with
``FAKE_RESUME_FAIL=1`` it exits 1 instead, like a tool with nothing to resume.
"""

from __future__ import annotations

import os
import sys
import time


def main() -> int:
    think = float(os.environ.get("FAKE_THINK") or 0)
    out = sys.stdout
    if "--resume" in sys.argv[1:]:
        if os.environ.get("FAKE_RESUME_FAIL") == "1":
            sys.stderr.write("no session to resume\n")
            return 1
        out.write("resumed previous session\n")
    out.write("ready> ")
    out.flush()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.rstrip("\r\n")
        if line == "exit":
            return 0
        if think > 0:
            time.sleep(think)
        out.write(f"echo: {line}\nready> ")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
