#!/usr/bin/env python3
"""Fake CLI: a cooked-mode prompt that asks a yes/no question before doing something.

Prompt ``cmd> ``. ``do <thing>`` asks ``Proceed with <thing>? (y/n) `` and reads a line:
``y`` prints ``did <thing>``, anything else ``skipped <thing>``. Other lines print
``unknown: <line>``. ``quit`` or EOF exits 0.
"""

from __future__ import annotations

import sys


def main() -> int:
    out = sys.stdout
    while True:
        out.write("cmd> ")
        out.flush()
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.rstrip("\r\n")
        if line == "quit":
            return 0
        if line.startswith("do "):
            thing = line[3:]
            out.write(f"Proceed with {thing}? (y/n) ")
            out.flush()
            answer = sys.stdin.readline()
            if not answer:
                return 0
            verdict = "did" if answer.strip() == "y" else "skipped"
            out.write(f"{verdict} {thing}\n")
        else:
            out.write(f"unknown: {line}\n")


if __name__ == "__main__":
    sys.exit(main())
