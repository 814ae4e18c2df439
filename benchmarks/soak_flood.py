#!/usr/bin/env python3
"""A line tool that floods its terminal, for ``benchmarks/soak.py``.

Prints ``flood> `` and reads a line (cooked tty mode):

* ``flood SECONDS``: writes numbered 100-byte lines as fast as the terminal takes them (or at
  ``FLOOD_RATE_MB`` MB/s when that is set and > 0) for SECONDS, then
  ``flooded <bytes> bytes`` and the prompt again;
* ``exit`` (or EOF): exits 0;
* anything else: ``ok: <line>`` and the prompt.

A write blocks while the terminal's reader (the daemon) is behind, so "as fast as the
terminal takes them" is as fast as the daemon reads.
"""

from __future__ import annotations

import os
import sys
import time

CHUNK_LINES = 160  # about 16 KiB per write


def flood(seconds: float, rate_mb: float) -> int:
    out = sys.stdout.fileno()
    end = time.monotonic() + seconds
    start = time.monotonic()
    n = 0
    sent = 0
    while True:
        now = time.monotonic()
        if now >= end:
            return sent
        if rate_mb > 0:
            ahead = sent / (rate_mb * 1e6) - (now - start)
            if ahead > 0:
                time.sleep(min(ahead, end - now))
                continue
        chunk = "".join(f"flood {n + k:09d} {'x' * 83}\n" for k in range(CHUNK_LINES))
        n += CHUNK_LINES
        data = chunk.encode()
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]
        sent += len(data)


def main() -> int:
    rate_mb = float(os.environ.get("FLOOD_RATE_MB") or 0)
    out = sys.stdout
    out.write("flood> ")
    out.flush()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        line = line.strip()
        if line == "exit":
            return 0
        words = line.split()
        if len(words) == 2 and words[0] == "flood":
            try:
                seconds = float(words[1])
            except ValueError:
                seconds = 0.0
            out.flush()
            sent = flood(seconds, rate_mb)
            out.write(f"flooded {sent} bytes\nflood> ")
        else:
            out.write(f"ok: {line}\nflood> ")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
