#!/usr/bin/env python3
"""Fake CLI: an echo REPL that can flood its terminal.

Prints ``flood> ``; ``flood N`` writes N MiB of numbered 100-character lines as fast as the
terminal takes them, then ``flooded N`` and the prompt; any other line is echoed.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    fd = sys.stdout.fileno()
    os.write(fd, b"flood> ")
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["flood"] and len(words) == 2 and words[1].isdigit():
            mib = int(words[1])
            block = b"".join(b"%08d " % i + b"x" * 90 + b"\r\n" for i in range(1024 * 10))
            for _ in range(mib * 1024 * 1024 // len(block) + 1):
                os.write(fd, block)
            os.write(fd, b"flooded %d\r\nflood> " % mib)
        elif line.strip() == "exit":
            return 0
        else:
            os.write(fd, b"echo: " + line.strip().encode() + b"\r\nflood> ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
