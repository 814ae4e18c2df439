#!/usr/bin/env python3
"""Fake CLI: prints ``ready> ``; each line read is a number N, answered with N lines
``line 0`` … ``line N-1`` and the prompt again (a reply longer than the scrollback)."""

import sys


def main() -> int:
    sys.stdout.write("ready> ")
    sys.stdout.flush()
    for line in sys.stdin:
        count = int(line.strip() or 0)
        sys.stdout.write("".join(f"line {i}\n" for i in range(count)) + "ready> ")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
