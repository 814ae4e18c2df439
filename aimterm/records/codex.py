"""Codex CLI's record of its conversation: the JSONL "rollout" file of each session.

Findings (@openai/codex 0.169.0, the pin; 0.171.0, the newest; 0.150.0; codex's
``codex-rs/rollout/src/recorder.rs``, ``codex resume --help``):

* **Where.** ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-<YYYY-MM-DDTHH-MM-SS>-<uuid>.jsonl``
  (``CODEX_HOME`` defaults to ``~/.codex``): the folder is the creation date, the uuid (v7)
  the session id; the working directory is only inside the file, so all the sessions of a
  HOME share the day folders. The file is created at the first turn, not at start ("defers
  file creation/open until an explicit persist()", recorder.rs).
* **Format.** A JSON object a line, ``{"timestamp": ISO UTC ms, "type", "payload"}``: first
  ``session_meta`` (``id``, ``cwd``, ``cli_version``, base instructions: 20-50 KB); per turn
  ``event_msg`` ``task_started``, ``response_item`` user messages (codex's context wrappers,
  then the prompt as typed), ``response_item`` ``message`` role ``assistant`` (``output_text``:
  the model's text exactly, markdown and line breaks as written) before and after each
  ``function_call``/``function_call_output``, ``event_msg`` ``item_completed``
  (``UserMessage``/``AgentMessage``, the same texts), ``event_msg`` ``token_count``
  (``info.total_token_usage``: ``input_tokens``, ``cached_input_tokens``, ``output_tokens``,
  ``reasoning_output_tokens``, ``total_tokens``), ``event_msg`` ``task_complete``
  (``last_agent_message``) last; ``turn_context``, ``world_state``... are ignored. No cost.
* **Versions.** 0.169.0 and 0.171.0 write the same entries, with ``token_usage_record``
  (``turn_token_usage``, also ``cache_write_input_tokens``) and ``ordinal``; 0.150.0 has
  neither (tokens: the growth of ``total_token_usage`` over the turn). Older files (a bare
  response item a line; ``user_message``/``agent_message`` events) are read too.
* **When.** With the fake model (24×80 and 40×120, five turns, all three versions) the turn's
  ``task_complete`` was in the file 150-250 ms *before* the session saw the screen idle
  (settle 150 ms). Nothing of a turn is written after.
* **One instance.** No flag or config key names a new session's id or file. The codex process
  (the native child of the node launcher) keeps its rollout open, so the file is found in
  ``/proc/<pid>/fd`` of the tool's process tree once the first turn made it: exact with a
  shared HOME and folder. Without
  that, a file is taken only if written since the run began, its ``session_meta`` cwd is the
  instance's, no live recorder of another instance in this process claimed it, and it holds
  the prompt. The turn is the first unread one with the typed prompt begun after it was typed.
* **Resume.** ``codex resume --last`` (the adapter's ``resume``) reopens in append mode the
  latest session *of the folder*: with a shared HOME, another instance's — measured: after it
  exited, its session was resumed and appended to; while it still ran, codex stopped at
  "This conversation is open in another app" (its writer lock). ``codex resume <id>`` reopens
  one session (with ``--last``, a positional argument is taken as the PROMPT):
  :meth:`CodexRecorder.resume_args` gives that for this instance's last session. Replies come
  from whichever file the process holds, its earlier turns skipped by time.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimterm.records.base import RecordContext, RecordedReply, Recorder, TurnQuery, same_prompt
from aimterm.records.tail import FileTail, iso_timestamp

__all__ = ["SESSION_FILE", "CodexRecorder", "RolloutParser", "RolloutTurn", "codex_home",
           "held_rollouts", "session_meta", "turn_tokens"]

#: This instance's last session id, in its private folder (for ``resume <id>``).
SESSION_FILE = "codex.session"
#: A file larger than this when first read is read from its last MAX_BACKLOG bytes: the turn
#: asked for is at its end (a long resumed session), and polls must stay cheap.
MAX_BACKLOG = 64 << 20
#: Bytes read per call, at most (a huge backlog takes a few polls), in reads of READ_CHUNK.
READ_BUDGET = 32 << 20
READ_CHUNK = 8 << 20
#: A line longer than this is dropped (a tool's huge output, never a reply's whole turn).
MAX_LINE = 16 << 20
#: The first line (session_meta, with the base instructions) is read up to this many bytes.
MAX_META = 4 << 20
#: A turn counts as this run's when it began at most this long before the prompt was typed
#: (the clocks are the same; the record's timestamps have millisecond precision).
SLACK_S = 1.0
#: How often the tool's open files are looked at again while no file gives the turn.
RESCAN_S = 0.2

_ROLLOUT = re.compile(r"/sessions/\d{4}/\d\d/\d\d/rollout-[^/]*\.jsonl$")
_TOKEN_KEYS = {"input_tokens": "input", "output_tokens": "output",
               "cached_input_tokens": "cache_read", "cache_write_input_tokens": "cache_write",
               "reasoning_output_tokens": "reasoning", "total_tokens": "total"}

#: Files claimed by the recorders of this process: path -> (instance, pid of its tool).
_CLAIMS: dict[str, tuple[str, int | None]] = {}
_CLAIMS_LOCK = threading.Lock()


def codex_home(env: Mapping[str, str]) -> Path:
    """``$CODEX_HOME``, else ``$HOME/.codex`` of the tool's environment."""
    if env.get("CODEX_HOME"):
        return Path(env["CODEX_HOME"])
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".codex"


def _texts(content: Any, kinds: tuple[str, ...]) -> str:
    """The text parts of a message's content (a string, or a list of typed parts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(p["text"] for p in content if isinstance(p, dict)
                   and p.get("type") in kinds and isinstance(p.get("text"), str))


def _usage(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {name: value[key] for key, name in _TOKEN_KEYS.items()
            if isinstance(value.get(key), int) and not isinstance(value.get(key), bool)}


@dataclass
class RolloutTurn:
    """One turn of a rollout: from ``task_started`` (or its prompt) to ``task_complete``."""

    started: float | None = None  # epoch seconds of its first entry (None: no timestamps)
    user: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # assistant messages (response items)
    event_texts: list[str] = field(default_factory=list)  # the same, from events
    last_agent_message: str | None = None
    usage: dict[str, int] = field(default_factory=dict)  # last turn_token_usage (0.169+)
    #: ``total_token_usage`` before the turn (None: unknown) and at its last token_count.
    total_before: dict[str, int] | None = None
    total_after: dict[str, int] | None = None
    done: bool = False
    #: Legacy files mark no end: a turn is taken as over once its last item is text.
    open_call: bool = False

    @property
    def text(self) -> str:
        parts = self.texts or self.event_texts
        if not parts and self.last_agent_message:
            parts = [self.last_agent_message]
        return "\n\n".join(p for p in parts if p)


def turn_tokens(turn: RolloutTurn) -> dict[str, int]:
    """The turn's tokens: as recorded for the turn, else the growth of the session's total."""
    if turn.usage:
        return dict(turn.usage)
    after, before = turn.total_after, turn.total_before
    if after is None or before is None:
        return {}
    return {k: v - before.get(k, 0) for k, v in after.items()}


class RolloutParser:
    """The turns of one rollout file, fed its entries in order."""

    def __init__(self, *, from_start: bool = True) -> None:
        self.meta: dict[str, Any] | None = None
        self.turns: list[RolloutTurn] = []
        #: The file marks turns (task_started/task_complete): legacy files do not.
        self.task_events = False
        #: The session's token total so far (None: not known, e.g. read from the middle).
        self._total: dict[str, int] | None = {} if from_start else None

    def feed_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                self.feed(obj)

    def _turn(self, stamp: float | None, *, new: bool = False) -> RolloutTurn:
        last = self.turns[-1] if self.turns else None
        if new or last is None or last.done:
            if last is not None and not last.done and not last.texts:
                # A turn that never began (an empty start): the new one replaces it.
                self.turns.pop()
            last = RolloutTurn(started=stamp, total_before=self._total)
            self.turns.append(last)
        return last

    def feed(self, obj: Mapping[str, Any]) -> None:
        stamp = iso_timestamp(obj.get("timestamp"))
        kind, payload = obj.get("type"), obj.get("payload")
        if not isinstance(payload, dict):
            if kind not in ("message", "function_call", "custom_tool_call", "local_shell_call"):
                return
            kind, payload = "response_item", obj  # legacy: a bare response item
        if kind == "session_meta":
            if self.meta is None:  # later ones are copies from forked history
                self.meta = dict(payload)
        elif kind == "event_msg":
            self._event(payload, stamp)
        elif kind == "response_item":
            self._item(payload, stamp)
        elif kind == "token_usage_record":
            usage = _usage(payload.get("turn_token_usage"))
            if usage and self.turns and not self.turns[-1].done:
                self.turns[-1].usage = usage

    def _event(self, p: Mapping[str, Any], stamp: float | None) -> None:
        kind = p.get("type")
        if kind in ("task_started", "turn_started"):
            self.task_events = True
            self._turn(stamp, new=True)
        elif kind in ("task_complete", "turn_complete", "turn_aborted"):
            if self.turns and not self.turns[-1].done:
                turn = self.turns[-1]
                turn.done = True
                if isinstance(p.get("last_agent_message"), str):
                    turn.last_agent_message = p["last_agent_message"]
        elif kind == "token_count":
            info = p.get("info")
            total = _usage(info.get("total_token_usage")) if isinstance(info, dict) else {}
            if total:
                if self.turns and not self.turns[-1].done:
                    self.turns[-1].total_after = total
                self._total = total
        elif kind == "user_message" and isinstance(p.get("message"), str):
            self._turn(stamp).user.append(p["message"])
        elif kind == "agent_message" and isinstance(p.get("message"), str):
            self._turn(stamp).event_texts.append(p["message"])
        elif kind == "item_completed" and isinstance(p.get("item"), dict):
            item = p["item"]
            if item.get("type") == "UserMessage":
                self._turn(stamp).user.append(_texts(item.get("content"), ("text",)))
            elif item.get("type") == "AgentMessage":
                text = _texts(item.get("content"), ("Text", "text"))
                if text:
                    self._turn(stamp).event_texts.append(text)

    def _item(self, p: Mapping[str, Any], stamp: float | None) -> None:
        kind = p.get("type")
        if kind == "message" and p.get("role") == "user":
            text = _texts(p.get("content"), ("input_text", "text"))
            if text:
                # Without turn marks, a prompt after the model's text begins the next turn.
                last = self.turns[-1] if self.turns else None
                fresh = not self.task_events and last is not None and bool(last.texts)
                self._turn(stamp, new=fresh).user.append(text)
        elif kind == "message" and p.get("role") == "assistant":
            text = _texts(p.get("content"), ("output_text", "text"))
            if text:
                turn = self._turn(stamp)
                turn.texts.append(text)
                turn.open_call = False
        elif kind in ("function_call", "custom_tool_call", "local_shell_call"):
            if self.turns and not self.turns[-1].done:
                self.turns[-1].open_call = True


def session_meta(path: Path) -> dict[str, Any] | None:
    """The ``session_meta`` payload of a rollout file (its first line), or None."""
    try:
        with open(path, "rb") as f:
            line = f.readline(MAX_META)
    except OSError:
        return None
    parser = RolloutParser()
    parser.feed_lines([line.decode("utf-8", "replace")])
    return parser.meta


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/task") as tasks:
        for task in tasks:
            with contextlib.suppress(OSError, ValueError), \
                    open(f"{task.path}/children", encoding="ascii") as f:
                kids += [int(k) for k in f.read().split()]
    return kids


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the node launcher starts the native codex), from /proc."""
    tree: list[int] = []
    todo = [pid]
    while todo and len(tree) < 1000:
        p = todo.pop()
        if p not in tree and os.path.isdir(f"/proc/{p}"):
            tree.append(p)
            todo += _children(p)
    return tree


def _alive(pid: int) -> bool:
    return os.path.isdir(f"/proc/{pid}")


def held_rollouts(pid: int) -> list[Path]:
    """The rollout files the process tree of ``pid`` holds open."""
    files: list[Path] = []
    for p in _tree(pid):
        with contextlib.suppress(OSError), os.scandir(f"/proc/{p}/fd") as fds:
            for fd in fds:
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    if _ROLLOUT.search(target) and Path(target) not in files:
                        files.append(Path(target))
    return files


def _day_dirs(home: Path, since: float) -> Iterator[Path]:
    """The day folders sessions started since ``since`` can be in (local time and UTC)."""
    seen: set[Path] = set()
    for t in (since - 60, time.time()):
        for stamp in (_dt.datetime.fromtimestamp(t),
                      _dt.datetime.fromtimestamp(t, _dt.timezone.utc)):
            day = home / "sessions" / f"{stamp:%Y}" / f"{stamp:%m}" / f"{stamp:%d}"
            if day not in seen:
                seen.add(day)
                yield day


def _claim(path: Path, instance: str, pid: int | None, *, force: bool = False,
           dry: bool = False) -> bool:
    """Whether ``path`` is free for ``instance`` (no live tool of another one claimed it);
    claims it unless ``dry``."""
    with _CLAIMS_LOCK:
        held = _CLAIMS.get(str(path))
        free = (force or held is None or held[0] == instance
                or held[1] is None or not _alive(held[1]))
        if free and not dry:
            _CLAIMS[str(path)] = (instance, pid)
        return free


class _Followed:
    """One rollout file being read: its tail, its turns, and the turns given out."""

    def __init__(self, path: Path, held: bool) -> None:
        self.path = path
        self.held = held  # the tool's process holds it open: this instance's own
        self.tail: FileTail | None = None
        self.parser = RolloutParser()
        self.used = -1  # index of the last turn given out

    def poll(self) -> bool:
        """Read what was added; False if the file cannot be read."""
        if self.tail is None:
            try:
                size = self.path.stat().st_size
            except OSError:
                return False
            # A huge file is read from its last part; the line cut there is not JSON.
            start = max(0, size - MAX_BACKLOG)
            self.tail = FileTail(self.path, start, chunk=READ_CHUNK, max_line=MAX_LINE)
            self.parser = RolloutParser(from_start=start == 0)
        budget = READ_BUDGET
        while True:
            got = self.tail.read()
            if got is None:
                return False
            lines, restarted = got
            if restarted:
                self.parser, self.used = RolloutParser(), -1
            self.parser.feed_lines(line.decode("utf-8", "replace") for line in lines)
            budget -= READ_CHUNK
            if not self.tail.behind or budget <= 0:
                return True

    def find(self, turn: TurnQuery) -> tuple[int, RolloutTurn] | None:
        """The first turn after those given out whose prompt is ``turn``'s and which began
        after it was typed (any, in a file without timestamps that this process holds)."""
        since = turn.submitted_at - SLACK_S
        for index in range(self.used + 1, len(self.parser.turns)):
            t = self.parser.turns[index]
            if t.started is None and not self.held:
                continue
            if t.started is not None and t.started < since:
                continue
            if any(same_prompt(u, turn.prompt) for u in t.user):
                return index, t
        return None


def _finished(turn: RolloutTurn, task_events: bool) -> bool:
    if turn.done:
        return True
    # Legacy files mark no turns: one is over once its last item is text.
    return not task_events and bool(turn.texts) and not turn.open_call


class CodexRecorder(Recorder):
    """Codex CLI's rollout of this instance's session (see the module doc)."""

    name = "codex"

    def __init__(self, ctx: RecordContext) -> None:
        super().__init__(ctx)
        self.home = codex_home(ctx.env)
        #: When this run began (``started``); files older than this are not this run's.
        self.started_at = time.time()
        self._files: dict[Path, _Followed] = {}
        self._pinned: _Followed | None = None
        self._next_scan = 0.0
        self._lock = threading.Lock()

    def started(self, pid: int) -> None:
        super().started(pid)
        self.started_at = time.time()

    def resume_args(self) -> list[str] | None:
        """``resume <id>`` of this instance's last session, if one is known: codex's own
        ``resume --last`` takes the folder's latest, which may be another instance's."""
        try:
            sid = (self.ctx.private_dir / SESSION_FILE).read_text().strip()
        except OSError:
            return None
        return ["resume", sid] if re.fullmatch(r"[0-9a-fA-F-]{36}", sid) else None

    def reply(self, turn: TurnQuery) -> RecordedReply | None:
        with self._lock:
            try:
                return self._reply(turn)
            except (OSError, ValueError):
                return None

    def _reply(self, turn: TurnQuery) -> RecordedReply | None:
        if self._pinned is not None:
            found, got = self._look(self._pinned, turn)
            if found:
                return got
        now = time.monotonic()
        if now >= self._next_scan:
            self._next_scan = now + RESCAN_S
            self._discover()
        for followed in [f for f in self._files.values() if f is not self._pinned]:
            found, got = self._look(followed, turn)
            if found:
                return got
        return None

    def _look(self, followed: _Followed, turn: TurnQuery) -> tuple[bool, RecordedReply | None]:
        """(whether the turn is in this file, its reply once it is over)."""
        if not followed.poll() or (found := followed.find(turn)) is None:
            return False, None
        index, t = found
        if not followed.held and not _claim(followed.path, self.ctx.instance, self.pid):
            return False, None
        if followed is not self._pinned:
            self._pin(followed)
        if not _finished(t, followed.parser.task_events):
            return True, None
        followed.used = index
        if not t.text:
            return True, None
        return True, RecordedReply(text=t.text, tokens=turn_tokens(t), cost_usd=None,
                                   source=str(followed.path))

    def _pin(self, followed: _Followed) -> None:
        self._pinned = followed
        sid = (followed.parser.meta or {}).get("id")
        if isinstance(sid, str):
            with contextlib.suppress(OSError):
                (self.ctx.private_dir / SESSION_FILE).write_text(sid + "\n")

    def _discover(self) -> None:
        """Follow the files this run may write: those its process holds, else candidates."""
        held = held_rollouts(self.pid) if self.pid is not None else []
        for path in held:
            followed = self._files.setdefault(path, _Followed(path, held=True))
            followed.held = True
            _claim(path, self.ctx.instance, self.pid, force=True)
        if not held:
            for path in self._candidates():
                self._files[path] = _Followed(path, held=False)

    def _candidates(self) -> list[Path]:
        """Rollouts written since this run began, in the instance's folder, not another
        recorder's: newest first."""
        cwd = os.path.realpath(self.ctx.cwd)
        out: list[tuple[float, Path]] = []
        for day in _day_dirs(self.home, self.started_at):
            try:
                entries = list(os.scandir(day))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.startswith("rollout-") or not entry.name.endswith(".jsonl"):
                    continue
                try:
                    mtime = entry.stat().st_mtime
                except OSError:
                    continue
                path = Path(entry.path)
                if (path in self._files or mtime < self.started_at - SLACK_S
                        or not _claim(path, self.ctx.instance, self.pid, dry=True)):
                    continue
                meta = session_meta(path)
                where = meta.get("cwd") if meta else None
                if isinstance(where, str) and os.path.realpath(where) == cwd:
                    out.append((mtime, path))
        return [p for _, p in sorted(out, reverse=True)]
