"""The bundled demo agent: a real full-screen terminal program shaped like an AI coding-agent CLI.

This module owns the ``aimterm-demo-agent`` program used by the demo, the tests and the
benchmarks. It behaves the way agent CLIs do where it matters for driving them: it needs a
TTY, puts the terminal in raw mode, enables bracketed paste, asks the terminal for the cursor
position at start-up (and dies if nobody answers), redraws the whole screen with cursor
addressing in one write per frame, shows a spinner in the status line and window title while
"thinking", asks for confirmation before editing a file, shows a first-run trust dialog, and
treats a fast burst of typed text followed by Enter as a paste rather than a submit.
``-p PROMPT`` (``--print``) answers one prompt without any of that, like ``claude -p``: the
one-shot form jobs use.

Everything is deterministic (replies are derived from the prompt) and runs in one select loop;
there are no threads.

Screen strings (adapters match these exactly):

* status idle: ``  ? for shortcuts``
* status busy: ``<spinner> Thinking… (<n>s · esc to interrupt)``
* status waiting: ``  Apply edit to <path>? (y)es/(n)o``
* status after one Ctrl-C: ``  Press Ctrl-C again to exit``
* titles: ``✳ demo-agent`` (idle), ``<spinner> demo-agent`` (busy), ``? demo-agent``
  (waiting), ``demo-agent setup`` (first-run dialog)
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import select
import signal
import sys
import tempfile
import termios
import time
import tty
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SPIN_INTERVAL = 0.08
#: How long a lone ESC waits for the rest of an escape sequence before it counts as the key.
ESC_TIMEOUT = 0.05
CTRL_C_WINDOW = 2.0
CPR_TIMEOUT = 2.0

STATUS_IDLE = "  ? for shortcuts"
STATUS_CTRL_C = "  Press Ctrl-C again to exit"
TITLE_IDLE = "✳ demo-agent"
TITLE_DIALOG = "demo-agent setup"

PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
_CPR = re.compile(rb"\x1b\[(\d+);(\d+)R")
_EDIT = re.compile(r"^edit\s+(\S+?):\s?(.*)$", re.DOTALL)
_LINES = re.compile(r"^lines\s+(\d+)\s*$")

# Key tokens produced by the input parser (printable characters are passed as themselves).
K_ENTER = "<enter>"
K_BACKSPACE = "<bs>"
K_ESC = "<esc>"
K_CTRL_C = "<c-c>"
K_CTRL_D = "<c-d>"
K_CTRL_U = "<c-u>"
K_UP = "<up>"
K_DOWN = "<down>"


class _Signalled(Exception):
    """Raised from the SIGTERM/SIGHUP handler so every frame unwinds through the restore code."""

    def __init__(self, signo: int) -> None:
        super().__init__(signo)
        self.signo = signo


class _Exit(Exception):
    """Raised by key handlers to leave the main loop with an exit code."""

    def __init__(self, code: int, bye: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.bye = bye


def _raise_signalled(signo: int, _frame: FrameType | None) -> None:
    raise _Signalled(signo)


def _wake_only(_signo: int, _frame: FrameType | None) -> None:
    # The wakeup fd already carries the news to the select loop; nothing to do here.
    return None


class Terminal:
    """Raw-mode stdin/stdout with a guaranteed restore, and byte-exact writes."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.saved: list[Any] | None = None
        self.paste_enabled = False

    def enter(self) -> None:
        self.saved = termios.tcgetattr(self.fd_in)
        tty.setraw(self.fd_in)
        self.paste_enabled = True
        self.write(b"\x1b[?2004h")

    def restore(self) -> None:
        # Each step may fail once the terminal is gone (SIGHUP): the rest must still run.
        if self.paste_enabled:
            self.paste_enabled = False
            try:
                self.write(b"\x1b[?2004l")
            except OSError:
                pass
        if self.saved is not None:
            saved, self.saved = self.saved, None
            try:
                termios.tcsetattr(self.fd_in, termios.TCSAFLUSH, saved)
            except (OSError, termios.error):
                pass

    def write(self, data: bytes) -> None:
        # One call in practice; the loop only matters if the kernel takes a partial write.
        view = memoryview(data)
        while view:
            n = os.write(self.fd_out, view)
            view = view[n:]

    def size(self) -> tuple[int, int]:
        try:
            cols, rows = os.get_terminal_size(self.fd_out)
        except OSError:
            cols, rows = 80, 24
        return max(rows, 1), max(cols, 1)


class InputParser:
    """Turns raw bytes into key tokens, pastes and typed characters, across read boundaries."""

    def __init__(self) -> None:
        self.pending = b""
        self.in_paste = False
        self.paste_buf = b""
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        #: When set, an incomplete escape sequence is pending until this monotonic time.
        self.esc_deadline: float | None = None

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """Return events: ("key", token), ("char", ch) or ("paste", text)."""
        self.pending += data
        self.esc_deadline = None
        return self._drain(final=False)

    def timeout(self) -> list[tuple[str, str]]:
        """The escape timer ran out: a lone ESC is the Escape key, a partial sequence is dropped."""
        self.esc_deadline = None
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        buf = self.pending
        i = 0
        n = len(buf)
        while i < n:
            if self.in_paste:
                self.paste_buf += buf[i:]
                end = self.paste_buf.find(PASTE_END)
                if end < 0:
                    i = n
                    break
                text, rest = self.paste_buf[:end], self.paste_buf[end + len(PASTE_END) :]
                self.in_paste = False
                self.paste_buf = b""
                out.append(("paste", text.decode("utf-8", errors="replace")))
                buf, i, n = rest, 0, len(rest)
                continue
            b = buf[i]
            if b == 0x1B:
                if i + 1 >= n:
                    if final:
                        out.append(("key", K_ESC))
                        i += 1
                        continue
                    break
                nxt = buf[i + 1]
                if nxt == 0x5B:  # CSI
                    j = i + 2
                    while j < n and not 0x40 <= buf[j] <= 0x7E:
                        j += 1
                    if j >= n:
                        if final:
                            i = n  # incomplete and nothing more came: drop it
                            continue
                        break
                    params, fin = buf[i + 2 : j], buf[j]
                    i = j + 1
                    if fin == 0x7E and params == b"200":
                        self.in_paste = True
                        self.paste_buf = b""
                    elif fin == 0x41 and not params:
                        out.append(("key", K_UP))
                    elif fin == 0x42 and not params:
                        out.append(("key", K_DOWN))
                    # Everything else (other arrows, function keys, late CPR replies) is ignored.
                    continue
                if nxt == 0x4F:  # SS3: ESC O <char>
                    if i + 2 >= n:
                        if final:
                            i = n
                            continue
                        break
                    i += 3
                    continue
                # ESC followed by something else: the Escape key, then that byte on its own. A
                # driver that sends ESC and a key back to back means two keys, not Alt-<key>.
                out.append(("key", K_ESC))
                i += 1
                continue
            if b in (0x0D, 0x0A):
                out.append(("key", K_ENTER))
                # CR LF from a line-oriented sender is one Enter, not two.
                i += 2 if b == 0x0D and i + 1 < n and buf[i + 1] == 0x0A else 1
                continue
            if b in (0x7F, 0x08):
                out.append(("key", K_BACKSPACE))
                i += 1
                continue
            if b == 0x03:
                out.append(("key", K_CTRL_C))
                i += 1
                continue
            if b == 0x04:
                out.append(("key", K_CTRL_D))
                i += 1
                continue
            if b == 0x15:
                out.append(("key", K_CTRL_U))
                i += 1
                continue
            if b < 0x20:
                i += 1  # other control bytes have no binding
                continue
            j = i
            while j < n and buf[j] >= 0x20 and buf[j] != 0x7F:
                j += 1
            # The incremental decoder keeps a split UTF-8 sequence until its tail arrives.
            for ch in self.decoder.decode(buf[i:j]):
                out.append(("char", ch))
            i = j
        self.pending = buf[i:] if i < n else b""
        if self.pending and not final:
            self.esc_deadline = time.monotonic() + ESC_TIMEOUT
        return out


def _words(text: str) -> int:
    return len(text.split())


def _wrap(line: str, width: int) -> list[str]:
    if width <= 0 or len(line) <= width:
        return [line]
    return [line[k : k + width] for k in range(0, len(line), width)]


def reply_for(prompt: str) -> list[str]:
    """The reply to a prompt that is not an edit: the same text in either mode."""
    if prompt.strip() == "fail":
        return ["Error: simulated failure"]
    m = _LINES.match(prompt.strip())
    if m:
        total = int(m.group(1))
        return [f"line {k} of {total}" for k in range(1, total + 1)]
    first, *rest = prompt.split("\n")
    return [f"Echo: {first}", *rest]


def write_edit(cwd: str, path: str, text: str) -> tuple[bool, list[str]]:
    """Write ``text`` and a newline to ``path`` (relative to ``cwd``); whether it worked, and
    the reply saying so."""
    target = Path(cwd) / path
    data = (text + "\n").encode("utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as exc:
        return False, [f"Error: cannot write {path}: {exc.strerror}"]
    return True, [f"Wrote {len(data)} bytes to {path}"]


def _inside(cwd: str, path: str) -> bool:
    """Whether ``path`` (relative to ``cwd``, links followed) names something inside ``cwd``."""
    root = os.path.realpath(cwd)
    full = os.path.realpath(os.path.join(root, path))
    return full != root and os.path.commonpath([root, full]) == root


def print_mode(prompt: str, think: float, trace: str | None = None) -> int:
    """``-p PROMPT``: one turn without the full-screen UI, like ``claude -p`` with edits
    allowed. Thinks as often as the interactive mode would for the same prompt (an edit: once
    before it, once after, where the interactive mode asks in between; anything else: once),
    so one ``--think`` is the same model time in both; applies an edit with no confirmation
    (but never outside the working directory), prints the reply the interactive mode would
    show, and exits: 0, or 1 when an edit was refused or failed. Needs no terminal and keeps
    no state. With ``trace``, appends one JSON line each time it starts and stops thinking,
    like the interactive mode's frames (``t`` monotonic, ``state``)."""
    _print_trace(trace, "busy")
    time.sleep(max(think, 0.0))
    m = _EDIT.match(prompt)
    if m is None:
        reply = reply_for(prompt)
        ok = True
    else:
        path, text = m.group(1), m.group(2)
        cwd = os.getcwd()
        if not _inside(cwd, path):
            _print_trace(trace, "idle")
            print(f"demo-agent: refusing to edit {path}: it is outside the working directory "
                  f"{cwd}", file=sys.stderr)
            return 1
        ok, reply = write_edit(cwd, path, text)
        time.sleep(max(think, 0.0))  # back to work for a moment, as after a confirmed edit
    _print_trace(trace, "idle")
    for line in reply:
        print(line)
    sys.stdout.flush()
    return 0 if ok else 1


def _print_trace(trace: str | None, state: str) -> None:
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"t": time.monotonic(), "frame": 0, "state": state,
                                 "print": True}) + "\n")


class DemoAgent:
    """The program state and its select loop."""

    def __init__(self, args: argparse.Namespace, term: Terminal, wake_fd: int) -> None:
        self.args = args
        self.term = term
        self.wake_fd = wake_fd
        self.think: float = args.think
        self.home = Path(args.home).expanduser()
        self.state_file = self.home / "state.json"
        self.cwd = os.getcwd()
        self.parser = InputParser()
        self.burst_guard = not args.no_burst_guard
        self.trace: TextIO | None = open(args.trace, "a", encoding="utf-8") if args.trace else None
        self.frame_no = 0

        self.mode = "idle"  # dialog | idle | busy | waiting
        self.dialog_sel = 0
        self.conversation: list[str] = []
        self.input = ""
        self.ctrl_c_until = 0.0
        # The running turn.
        self.prompt = ""
        self.busy_start = 0.0
        self.busy_until = 0.0
        self.pending_reply: list[str] | None = None
        self.edit_path = ""
        self.edit_text = ""
        self.next_spin = 0.0

    # -- state file ---------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"trusted": [], "turns": 0}
        return data if isinstance(data, dict) else {"trusted": [], "turns": 0}

    def _save_state(self, data: dict[str, Any]) -> None:
        # Temp file + rename so a reader (or a kill mid-write) never sees half a file.
        self.home.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.home, prefix=".state.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.state_file)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _count_turn(self) -> None:
        data = self._load_state()
        data["turns"] = int(data.get("turns", 0)) + 1
        data.setdefault("trusted", [])
        self._save_state(data)

    # -- drawing ------------------------------------------------------------------------------

    def _spinner(self, now: float) -> str:
        return SPINNER[int((now - self.busy_start) / SPIN_INTERVAL) % len(SPINNER)]

    def _status_and_title(self, now: float) -> tuple[str, str]:
        if self.mode == "busy":
            spin = self._spinner(now)
            elapsed = int(now - self.busy_start)
            return f"{spin} Thinking… ({elapsed}s · esc to interrupt)", f"{spin} demo-agent"
        if self.mode == "waiting":
            return f"  Apply edit to {self.edit_path}? (y)es/(n)o", "? demo-agent"
        if now < self.ctrl_c_until:
            return STATUS_CTRL_C, TITLE_IDLE
        return STATUS_IDLE, TITLE_IDLE

    def draw(self) -> None:
        now = time.monotonic()
        rows, cols = self.term.size()
        if self.mode == "dialog":
            title = TITLE_DIALOG
            lines = [
                "Welcome to demo-agent!",
                "",
                "Do you trust the files in this folder?",
                self.cwd,
                "",
                ("❯ " if self.dialog_sel == 0 else "  ") + "1. Yes, proceed",
                ("❯ " if self.dialog_sel == 1 else "  ") + "2. No, exit",
                "",
                "Enter to confirm · Esc to exit",
            ]
            screen = (lines + [""] * rows)[:rows]
            cursor = (min(6 + self.dialog_sel, rows), 1)
        else:
            status, title = self._status_and_title(now)
            area = max(rows - 5, 0)
            wrapped: list[str] = []
            for line in self.conversation:
                wrapped.extend(_wrap(line, cols))
            shown = wrapped[-area:] if area else []
            shown = shown + [""] * (area - len(shown))
            rule = "─" * cols
            typed = self.input.replace("\n", " ↵ ")
            room = max(cols - 3, 0)  # leave the last column for the cursor
            if len(typed) > room:
                typed = typed[len(typed) - room :] if room else ""
            screen = [f"demo-agent · {self.cwd}", *shown, rule, "❯ " + typed, rule, status]
            if rows < len(screen):  # tiny windows: keep the input and status rows visible
                screen = screen[len(screen) - rows :]
            cursor = (max(rows - 2, 1), min(3 + len(typed), cols))
        parts = [f"\x1b]0;{title}\x07\x1b[H"]
        for r, text in enumerate(screen, start=1):
            parts.append(f"\x1b[{r};1H\x1b[2K{text[:cols]}")
        parts.append(f"\x1b[{cursor[0]};{cursor[1]}H")
        self.term.write("".join(parts).encode("utf-8"))
        self.frame_no += 1
        if self.trace is not None:
            record = {"t": time.monotonic(), "frame": self.frame_no, "state": self.mode}
            self.trace.write(json.dumps(record) + "\n")
            self.trace.flush()

    # -- turns --------------------------------------------------------------------------------

    def _go_busy(self, now: float) -> None:
        self.mode = "busy"
        self.busy_start = now
        self.busy_until = now + max(self.think, 0.0)
        self.next_spin = now + SPIN_INTERVAL
        # Drawn right away so even a zero think time shows one busy frame before the reply.
        self.draw()

    def _submit(self, now: float) -> None:
        prompt = self.input
        self.input = ""
        cmd = prompt.strip()
        if cmd in ("/exit", "/quit"):
            raise _Exit(0, bye=True)
        if cmd == "/clear":
            self.conversation = []
            return
        first, *rest = prompt.split("\n")
        self.conversation.append(f"> {first}")
        self.conversation.extend(f"  {line}" for line in rest)
        self.prompt = prompt
        m = _EDIT.match(prompt)
        if m:
            self.edit_path, self.edit_text = m.group(1), m.group(2)
            self.pending_reply = None  # decided by the confirmation
        else:
            self.edit_path = ""
            self.pending_reply = reply_for(prompt)
        self._go_busy(now)

    def _finish_turn(self) -> None:
        reply = self.pending_reply or []
        self.conversation.extend(reply)
        sent = _words(self.prompt)
        received = sum(_words(line) for line in reply)
        cost = (sent + received) * 0.0001
        self.conversation.append(
            f"Tokens: {sent} sent, {received} received. Cost: ${cost:.4f} message."
        )
        self.conversation.append("")
        self.mode = "idle"
        self.pending_reply = None
        self.edit_path = ""
        self._count_turn()

    def _interrupt(self) -> None:
        self.conversation.append("Interrupted.")
        self.conversation.append("")
        self.mode = "idle"
        self.pending_reply = None
        self.edit_path = ""

    def _answer_edit(self, yes: bool, now: float) -> None:
        path = self.edit_path
        if yes:
            _, self.pending_reply = write_edit(self.cwd, path, self.edit_text)
        else:
            self.pending_reply = [f"Edit to {path} declined."]
        # Back to work for a moment before the reply, as a real agent would.
        self._go_busy(now)

    def _tick(self, now: float) -> bool:
        """Advance timers; return True when the screen needs a redraw."""
        dirty = False
        if self.mode == "busy" and now >= self.busy_until:
            if self.pending_reply is None and self.edit_path:
                self.mode = "waiting"
            else:
                self._finish_turn()
            dirty = True
        elif self.mode == "busy" and now >= self.next_spin:
            self.next_spin = now + SPIN_INTERVAL
            dirty = True
        if self.ctrl_c_until and now >= self.ctrl_c_until:
            self.ctrl_c_until = 0.0
            dirty = True
        return dirty

    # -- keys ---------------------------------------------------------------------------------

    def _dialog_event(self, kind: str, value: str) -> None:
        if kind == "key" and value == K_ENTER:
            if self.dialog_sel == 1:
                raise _Exit(1)
            data = self._load_state()
            trusted = list(data.get("trusted", []))
            if self.cwd not in trusted:
                trusted.append(self.cwd)
            self._save_state({"trusted": trusted, "turns": int(data.get("turns", 0))})
            self.mode = "idle"
        elif kind == "key" and value in (K_ESC, K_CTRL_C):
            raise _Exit(1)
        elif (kind == "char" and value == "1") or (kind == "key" and value == K_UP):
            self.dialog_sel = 0
        elif (kind == "char" and value == "2") or (kind == "key" and value == K_DOWN):
            self.dialog_sel = 1

    def _edit_input(self, kind: str, value: str) -> None:
        """Editing keys shared by idle and busy (typing ahead while the agent works)."""
        if kind == "char":
            self.input += value
        elif kind == "paste":
            self.input += value.replace("\r\n", "\n").replace("\r", "\n")
        elif value == K_BACKSPACE:
            self.input = self.input[:-1]
        elif value == K_CTRL_U:
            self.input = ""

    def _event(self, kind: str, value: str, now: float, typed_run: int) -> None:
        if self.mode == "dialog":
            self._dialog_event(kind, value)
            return
        if self.mode == "waiting":
            if kind == "char" and value in "yY":
                self._answer_edit(True, now)
            elif (kind == "char" and value in "nN") or (kind == "key" and value == K_ESC):
                self._answer_edit(False, now)
            return
        if self.mode == "busy":
            if kind == "key" and value in (K_ESC, K_CTRL_C):
                self._interrupt()
            elif kind in ("char", "paste") or value in (K_BACKSPACE, K_CTRL_U):
                self._edit_input(kind, value)
            return  # Enter while busy is ignored
        # idle
        if kind == "key" and value == K_CTRL_C:
            if self.input:
                self.input = ""
                self.ctrl_c_until = 0.0
            elif now < self.ctrl_c_until:
                raise _Exit(0, bye=True)
            else:
                self.ctrl_c_until = now + CTRL_C_WINDOW
            return
        self.ctrl_c_until = 0.0
        if kind == "key" and value == K_CTRL_D:
            if not self.input:
                raise _Exit(0, bye=True)
            return
        if kind == "key" and value == K_ENTER:
            if self.burst_guard and typed_run >= 2:
                # Typed text and Enter in one read is how a paste without bracketing looks.
                self.input += "\n"
            elif self.input.strip():
                self._submit(now)
            return
        self._edit_input(kind, value)

    def _handle_events(self, events: list[tuple[str, str]]) -> None:
        typed_run = 0  # printable characters typed so far in this read, since the last Enter
        for kind, value in events:
            now = time.monotonic()
            self._event(kind, value, now, typed_run)
            if kind == "char":
                typed_run += 1
            elif kind == "key" and value == K_ENTER:
                typed_run = 0

    # -- main loop ----------------------------------------------------------------------------

    def _next_timeout(self, now: float) -> float | None:
        deadlines = []
        if self.mode == "busy":
            deadlines.append(min(self.busy_until, self.next_spin))
        if self.ctrl_c_until:
            deadlines.append(self.ctrl_c_until)
        if self.parser.esc_deadline is not None:
            deadlines.append(self.parser.esc_deadline)
        if not deadlines:
            return None
        return max(min(deadlines) - now, 0.0)

    def run(self, early_input: bytes) -> int:
        if not self.state_file.exists() and not self.args.no_first_run:
            self.mode = "dialog"
        if self.args.resume:
            turns = int(self._load_state().get("turns", 0))
            self.conversation.append(f"Resumed previous session ({turns} turns)")
        try:
            self.draw()
            if early_input:
                self._handle_events(self.parser.feed(early_input))
                self._tick(time.monotonic())
                self.draw()
            while True:
                timeout = self._next_timeout(time.monotonic())
                try:
                    ready, _, _ = select.select([self.term.fd_in, self.wake_fd], [], [], timeout)
                except InterruptedError:
                    ready = []
                dirty = False
                if self.wake_fd in ready:
                    try:
                        sigs = os.read(self.wake_fd, 512)
                    except BlockingIOError:
                        sigs = b""
                    if signal.SIGWINCH in sigs:
                        dirty = True
                if self.term.fd_in in ready:
                    data = os.read(self.term.fd_in, 4096)
                    if not data:
                        return 0  # the terminal went away
                    self._handle_events(self.parser.feed(data))
                    dirty = True
                now = time.monotonic()
                if (
                    self.parser.esc_deadline is not None
                    and now >= self.parser.esc_deadline
                    and self.term.fd_in not in ready
                ):
                    self._handle_events(self.parser.timeout())
                    dirty = True
                if self._tick(now):
                    dirty = True
                if self.mode == "busy" and dirty:
                    self.next_spin = now + SPIN_INTERVAL
                if dirty:
                    self.draw()
        except _Exit as ex:
            if ex.bye:
                self.term.write(b"\x1b]0;\x07\x1b[2J\x1b[HBye.\r\n")
            return ex.code
        finally:
            if self.trace is not None:
                self.trace.close()


def _wait_for_cpr(term: Terminal, timeout: float) -> bytes | None:
    """Ask for the cursor position. Return the other bytes that came meanwhile, or None."""
    term.write(b"\x1b[6n")
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        m = _CPR.search(buf)
        if m:
            return buf[: m.start()] + buf[m.end() :]
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            ready, _, _ = select.select([term.fd_in], [], [], left)
        except InterruptedError:
            continue
        if ready:
            data = os.read(term.fd_in, 4096)
            if not data:
                return None
            buf += data


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    env_think = os.environ.get("AIMTERM_DEMO_THINK")
    try:
        think_default = float(env_think) if env_think else 0.5
    except ValueError:
        think_default = 0.5
    p = argparse.ArgumentParser(
        prog="aimterm-demo-agent",
        description="A full-screen demo program that behaves like an AI coding-agent CLI.",
    )
    p.add_argument("--think", type=float, default=think_default, metavar="SECONDS",
                   help="how long each turn stays busy (env AIMTERM_DEMO_THINK, default 0.5)")
    p.add_argument("--home", default=os.environ.get("AIMTERM_DEMO_HOME")
                   or "~/.aimterm-demo-agent", metavar="DIR",
                   help="state directory (env AIMTERM_DEMO_HOME)")
    p.add_argument("--no-first-run", action="store_true", help="skip the first-run dialog")
    p.add_argument("--trace", default=os.environ.get("AIMTERM_DEMO_TRACE") or None,
                   metavar="FILE", help="append one JSON line per frame (env AIMTERM_DEMO_TRACE)")
    p.add_argument("--resume", action="store_true", help="show the previous session's turn count")
    p.add_argument("--no-burst-guard", action="store_true",
                   help="submit on an Enter that arrives with typed text in the same read")
    p.add_argument("-p", "--print", default=None, metavar="PROMPT", dest="print_prompt",
                   help="answer one prompt without the full-screen UI and exit (an edit is "
                        "applied without asking)")
    return p.parse_args(_glue_prompt(sys.argv[1:] if argv is None else argv))


def _glue_prompt(argv: list[str]) -> list[str]:
    """``-p TEXT`` as ``--print=TEXT``: argparse takes a prompt that starts with ``-`` for
    an option, and a prompt may start with anything."""
    out: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg in ("-p", "--print"):
            value = next(items, None)
            out.append(arg if value is None else "--print=" + value)
        elif arg == "--":
            out.append(arg)
            out.extend(items)
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.print_prompt is not None:
        return print_mode(args.print_prompt, args.think, args.trace)
    if not (os.isatty(0) and os.isatty(1)):
        print("demo-agent: stdin and stdout must be a terminal", file=sys.stderr)
        return 2

    term = Terminal(0, 1)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_handlers = {
        sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH)
    }
    old_wakeup = signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGWINCH, _wake_only)
    signal.signal(signal.SIGTERM, _raise_signalled)
    signal.signal(signal.SIGHUP, _raise_signalled)
    code: int
    failed_cpr = False
    try:
        term.enter()
        early = _wait_for_cpr(term, CPR_TIMEOUT)
        if early is None:
            failed_cpr = True
            code = 3
        else:
            code = DemoAgent(args, term, wake_r).run(early)
    except _Signalled as exc:
        code = 128 + exc.signo
    finally:
        # A second signal while restoring must not cut the restore short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        term.restore()
        signal.set_wakeup_fd(old_wakeup)
        for signo, handler in old_handlers.items():
            signal.signal(signo, handler if handler is not None else signal.SIG_DFL)
        os.close(wake_r)
        os.close(wake_w)
    if failed_cpr:
        print("demo-agent: the terminal did not answer the cursor position query", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
