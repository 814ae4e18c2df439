#!/usr/bin/env python3
"""Fake CLI: a busy agent that redraws its whole screen many times a second (a redraw storm).

Full-screen and raw mode, standard library only. Idle, it shows the prompt ``❯ `` above the
status line ``  ? for shortcuts``; Enter submits the typed line. Busy, it redraws every row of
the screen ``--fps`` times a second with cursor addressing (``CSI row;1H``), SGR colours, a
spinner and the status line ``<spinner> Working… (<n>s · esc to interrupt)``; row 1 always
reads ``storm-agent · frame NNNNNN · turn K`` so a reader can tell which frame a screen
shows. When the busy time is over it prints ``● done: <prompt> (<frames> frames)`` and is
idle again; Esc while busy prints ``Interrupted.`` instead.

A prompt ``busy S`` (``busy forever``) sets that turn's busy time, otherwise ``--busy``.
``/exit`` or Ctrl-D (idle) exits 0; Ctrl-C exits 130.

Options (argv, or the environment variable in brackets):

* ``--rows R`` / ``--cols C`` (``STORM_ROWS`` / ``STORM_COLS``): the size drawn; default the
  terminal's, followed when it changes.
* ``--fps F`` (``STORM_FPS``, default 10): frames per second while busy.
* ``--frame-bytes B`` (``STORM_FRAME_BYTES``, default 0): the size of a busy frame; the body
  rows are filled with coloured words, then SGR resets, until the frame has B bytes (0: the
  rows filled to the width, whatever size that gives).
* ``--busy S|forever`` (``STORM_BUSY``, default 1): busy time per prompt; ``forever`` stays
  busy until Esc.
* ``--trace FILE`` (``STORM_TRACE``): append one JSON line per frame written, after the write:
  ``{"frame", "t" (time.monotonic()), "state" ("busy"|"idle"), "turn", "bytes"}``; the first
  idle frame after a turn (its last frame) also has ``"final": true`` and ``"prompt"``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import termios
import time
import tty
from typing import IO

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
WORDS = ("reading", "src/main.py", "tokens", "grep", "pattern", "diff", "+42", "-7", "tests",
         "passed", "context", "model", "stream", "tool_use", "edit", "apply", "ok", "▌")
COLOURS = ("31", "32", "33", "34", "35", "36", "90", "38;5;208", "38;5;141", "1;37")
STATUS_IDLE = "  ? for shortcuts"


def _options(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="a busy agent CLI that redraws its whole screen")
    p.add_argument("--rows", type=int, default=int(env("STORM_ROWS", "0")))
    p.add_argument("--cols", type=int, default=int(env("STORM_COLS", "0")))
    p.add_argument("--fps", type=float, default=float(env("STORM_FPS", "10")))
    p.add_argument("--frame-bytes", type=int, default=int(env("STORM_FRAME_BYTES", "0")))
    p.add_argument("--busy", default=env("STORM_BUSY", "1"))
    p.add_argument("--trace", default=env("STORM_TRACE") or None)
    return p.parse_args(argv)


def _busy_time(text: str) -> float | None:
    """Seconds; None is forever."""
    return None if text.strip() == "forever" else max(float(text), 0.0)


class Agent:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.period = 1.0 / opts.fps if opts.fps > 0 else 1.0
        self.default_busy = _busy_time(opts.busy)
        self.trace: IO[str] | None = open(opts.trace, "a", encoding="utf-8") if opts.trace else None
        self.frame = 0
        self.turn = 0
        self.typed = ""
        self.prompt = ""
        self.busy_since = 0.0
        self.busy_until: float | None = None  # None while busy: until Esc
        self.busy = False
        self.turn_frames = 0
        self.conversation: list[str] = ["storm-agent ready. Type a prompt; Enter submits."]
        self.final: dict[str, object] | None = None

    # -- drawing --------------------------------------------------------------------------------

    def size(self) -> tuple[int, int]:
        rows, cols = self.opts.rows, self.opts.cols
        if rows <= 0 or cols <= 0:
            try:
                ts = os.get_terminal_size(1)
                rows, cols = rows or ts.lines, cols or ts.columns
            except OSError:
                rows, cols = rows or 24, cols or 80
        return max(rows, 6), max(cols, 20)

    def _noise(self, row: int, cols: int, budget: int) -> str:
        """One body row of coloured words, changing with every frame."""
        parts: list[str] = []
        used = width = 0
        k = self.frame * 7 + row * 3
        while width < cols - 1 and used < budget:
            word = WORDS[k % len(WORDS)][: cols - 1 - width]
            seg = f"\x1b[{COLOURS[k % len(COLOURS)]}m{word} "
            parts.append(seg)
            used += len(seg.encode("utf-8"))
            width += len(word) + 1
            k += 1
        return "".join(parts) + "\x1b[0m"

    def draw(self, now: float) -> None:
        rows, cols = self.size()
        area = rows - 5
        state = "busy" if self.busy else "idle"
        self.frame += 1
        shown = self.conversation[-area:]
        if self.busy:
            spin = SPINNER[self.frame % len(SPINNER)]
            secs = int(now - self.busy_since)
            status = (f"\x1b[38;5;208m{spin}\x1b[0m \x1b[1mWorking…\x1b[0m "
                      f"({secs}s · esc to interrupt)")
            keep = area // 3
            shown = shown[-keep:] if keep else []
            noise_rows = area - len(shown)
            budget = cols * 4
            if self.opts.frame_bytes > 0:
                budget = max(self.opts.frame_bytes - 40 * rows - 2 * cols, 0) // max(noise_rows, 1)
            body = [f"\x1b[2m{text[:cols]}\x1b[0m" for text in shown]
            body += [self._noise(r, cols, budget) for r in range(noise_rows)]
        else:
            status = STATUS_IDLE
            body = [text[:cols] for text in shown] + [""] * (area - len(shown))
        typed = self.typed[-(cols - 3):]
        rule = "\x1b[90m" + "─" * cols + "\x1b[0m"
        head = f"\x1b[1;36mstorm-agent\x1b[0m · frame {self.frame:06d} · turn {self.turn} · {state}"
        screen = [head, *body, rule, "❯ " + typed, rule, status]
        out = ["\x1b[H"]
        for r, text in enumerate(screen[:rows], start=1):
            out.append(f"\x1b[{r};1H\x1b[2K{text}")
        data = "".join(out)
        tail = f"\x1b[{rows - 2};{3 + len(typed)}H"
        if self.busy and self.opts.frame_bytes > 0:
            short = self.opts.frame_bytes - len(data.encode("utf-8")) - len(tail)
            data += "\x1b[0m" * max(short // 4, 0)
        raw = (data + tail).encode("utf-8")
        _write_all(1, raw)
        if self.trace is not None:
            record: dict[str, object] = {"frame": self.frame, "t": time.monotonic(),
                                         "state": state, "turn": self.turn, "bytes": len(raw)}
            if self.final is not None:
                record.update(self.final)
                self.final = None
            self.trace.write(json.dumps(record) + "\n")
            self.trace.flush()
        if self.busy:
            self.turn_frames += 1

    # -- turns ----------------------------------------------------------------------------------

    def submit(self, now: float) -> bool:
        """Start a turn with the typed line; False (nothing changes) if nothing was typed."""
        prompt, self.typed = self.typed.strip(), ""
        if not prompt:
            return False
        if prompt == "/exit":
            raise SystemExit(0)
        busy_for = self.default_busy
        words = prompt.split()
        if words[0] == "busy" and len(words) > 1:
            try:
                busy_for = _busy_time(words[1])
            except ValueError:
                pass
        self.turn += 1
        self.prompt = prompt
        self.conversation.append(f"> {prompt}")
        self.busy, self.busy_since, self.turn_frames = True, now, 0
        self.busy_until = None if busy_for is None else now + busy_for
        return True

    def finish(self, interrupted: bool) -> None:
        if interrupted:
            self.conversation.append("Interrupted.")
        else:
            self.conversation.append(f"● done: {self.prompt} ({self.turn_frames} frames)")
        self.conversation.append("")
        self.busy = False
        self.final = {"final": True, "prompt": self.prompt, "interrupted": interrupted}

    def keys(self, data: bytes, now: float) -> bool:
        """Handle typed bytes; True if the screen changed."""
        text = data.decode("utf-8", "replace")
        i = 0
        changed = False
        while i < len(text):
            ch = text[i]
            i += 1
            if ch == "\x1b":
                if i < len(text) and text[i] in "[O":  # a key's escape sequence: skipped
                    i += 1
                    while i < len(text) and not ("@" <= text[i] <= "~"):
                        i += 1
                    i += 1
                elif self.busy:
                    self.finish(interrupted=True)
                    changed = True
            elif ch == "\x03":
                raise SystemExit(130)
            elif ch == "\x04" and not self.busy and not self.typed:
                raise SystemExit(0)
            elif ch in "\r\n":
                if not self.busy:
                    changed = self.submit(now) or changed
            elif ch == "\x15":
                self.typed, changed = "", True
            elif ch in "\x7f\b":
                self.typed, changed = self.typed[:-1], True
            elif ch >= " ":
                self.typed += ch
                changed = True
        return changed

    def run(self) -> int:
        self.draw(time.monotonic())
        next_frame = 0.0
        while True:
            now = time.monotonic()
            if self.busy and self.busy_until is not None and now >= self.busy_until:
                self.finish(interrupted=False)
                self.draw(now)
                continue
            timeout = None
            if self.busy:
                timeout = max(next_frame - now, 0.0)
                if self.busy_until is not None:
                    timeout = min(timeout, max(self.busy_until - now, 0.0))
            ready, _, _ = select.select([0], [], [], timeout)
            now = time.monotonic()
            if ready:
                data = os.read(0, 4096)
                if not data:
                    return 0
                was_busy = self.busy
                if self.keys(data, now) and (not self.busy or not was_busy):
                    self.draw(now)  # busy frames keep their own pace
                    next_frame = now + self.period
                continue
            if self.busy and now >= next_frame:
                if self.busy_until is not None and now >= self.busy_until:
                    continue  # the turn is over: the final frame is drawn above
                self.draw(now)
                next_frame += self.period
                if next_frame <= now:  # fell behind (a blocked write): drop the missed frames
                    next_frame = now + self.period


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    if not (os.isatty(0) and os.isatty(1)):
        print("storm_agent: needs a terminal", file=sys.stderr)
        return 2
    saved = termios.tcgetattr(0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tty.setraw(0)
    _write_all(1, b"\x1b[?1049h\x1b[H\x1b[2J")
    agent = Agent(opts)
    try:
        return agent.run()
    except SystemExit as stop:
        return int(stop.code or 0)
    except OSError:  # the terminal went away
        return 1
    finally:
        try:
            _write_all(1, b"\x1b[0m\x1b[?1049l")
            termios.tcsetattr(0, termios.TCSAFLUSH, saved)
        except OSError:
            pass
        if agent.trace is not None:
            agent.trace.close()


if __name__ == "__main__":
    sys.exit(main())
