#!/usr/bin/env python3
"""Fake CLI: a REPL that renders its replies on screen and records them exactly in a file.

Prints ``rec> ``; each line typed gets the reply ``REPLY_TEXT`` (default: ``said `<line>` and
a line long enough to wrap on any terminal: …``), shown the way a TUI renders markdown — the
backticks gone, hard-wrapped at 30 columns — and appended exactly, as one JSON line
``{"user": <line>, "assistant": <reply>, "tokens": {...}, "cost_usd": ...}``, to the file in
``RECORD_FILE`` (if set), ``RECORD_DELAY`` seconds after the screen shows the prompt again.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time


def _record(path: str, entry: dict[str, object], delay: float) -> None:
    time.sleep(delay)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def main() -> int:
    path = os.environ.get("RECORD_FILE")
    delay = float(os.environ.get("RECORD_DELAY") or 0)
    out = sys.stdout
    out.write("rec> ")
    out.flush()
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if line == "exit":
            return 0
        reply = os.environ.get("REPLY_TEXT") or (
            f"said `{line}` and a line long enough to wrap on any terminal: "
            "alpha beta gamma delta epsilon zeta eta theta iota kappa")
        shown = textwrap.fill(reply.replace("`", ""), 30)
        out.write(shown + "\nrec> ")
        out.flush()
        if path:
            entry = {"user": line, "assistant": reply,
                     "tokens": {"input": len(line.split()), "output": len(reply.split())},
                     "cost_usd": 0.001}
            threading.Thread(target=_record, args=(path, entry, delay)).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
