"""Gemini CLI's own record of a conversation: its chat session file.

Findings (checked with @google/gemini-cli 0.61.0, 0.60.0, 0.51.0, 0.45.2 and 0.30.0, on the
fake model; the source read is the installed bundle, ``chatRecordingService.ts``,
``sessionOperations.ts``, ``storage.ts``/``projectRegistry.ts`` and the ``--session-id``
option in ``config.ts``, plus ``docs/cli/session-management.md``):

- **Where.** ``<home>/.gemini/tmp/<project>/chats/session-<YYYY-MM-DDTHH-MM>-<id[:8]>.jsonl``,
  with ``<home>`` = ``$GEMINI_CLI_HOME`` or else ``$HOME``. ``<project>`` is a slug of the
  project root's folder name (``work``, then ``work-1``, ... on a clash), kept in
  ``~/.gemini/projects.json`` and in a ``.project_root`` marker; before 0.3x it was a SHA-256
  of the path. The project root is the working directory. The file is found here by the
  session id in its name and its first line, so the slug does not matter. Subagents write
  ``chats/<parent id>/<agent id>.jsonl``: not read.
- **Format.** JSON lines, appended with ``appendFileSync``, one whole line each (0.40 onwards;
  0.30 rewrote one ``.json`` object whole on every message, read here too, bounded).
  Line 1: ``{sessionId, projectHash, startTime, lastUpdated, kind}``. Then messages
  ``{id, timestamp, type, content, ...}``: ``type`` ``user`` (``content`` a list of parts:
  ``{text}`` for a prompt, ``{functionResponse}`` for a tool result; ``displayContent`` when
  what was typed differs, e.g. ``@file``), ``gemini`` (``content`` the model's text as one
  string, ``tokens {input, output, cached, thoughts, tool, total}``, ``model``, ``thoughts``,
  and ``toolCalls [{id, name, args, result, status, ...}]`` once its tools ran), ``info``,
  ``error``, ``warning``. A message written again with the same ``id`` replaces the earlier
  line (tool calls are added that way). ``{"$set": {...}}`` updates metadata; ``$set.messages``
  replaces the whole list; ``{"$rewindTo": id}`` cuts it. No cost is recorded.
- **The text** is the model's own (markdown unrendered, lines unwrapped), except that Gemini
  trims it and deletes zero-width characters (U+200B-U+200D, U+FEFF, U+200E/F — so an emoji
  joined with U+200D loses the joiner) and HTML comments before recording it.
- **When.** A model answer is recorded once its stream has ended (not piece by piece); the
  line is in the file 10-20 ms before the turn's last screen output, so 300-350 ms before
  aimterm sees the screen settle (settle_ms 300), at every size and in every version checked.
  A text before a tool call is one message, its ``toolCalls`` added a moment later.
- **One instance's own.** ``--session-id <uuid>`` (0.41 onwards; 0.40.1 and older exit on
  it) names the session, hence the file: each instance gets a uuid of its own, so instances
  sharing a folder and a HOME never read each other's file. The id is kept in the instance's
  private folder for a later resume.
- **Resume.** ``--resume`` cannot be combined with ``--session-id`` (Gemini exits), so on a
  resume nothing is added and the adapter's ``--resume latest`` picks the project's session
  with the latest start time, keeping its id and file (a legacy ``.json`` becomes ``.jsonl``;
  a second file with the same id and no turn is left from the start-up: the newest file,
  the one a turn was just written to, is read).
  The file of the id this instance stored is read: if ``latest`` was another instance's, this
  one's file gets no new turn and the screen gives the replies.
- **Deleted under a running instance.** At start-up Gemini deletes every session file of the
  project it cannot resume (``cleanupExpiredSessions``, on by default: no user message yet,
  or no ``sessionId`` line) — other running instances' included. The owner then goes on
  appending to the same name, re-creating the file without its first line, which the next
  start deletes again. So a file named with the session's short id and no ``sessionId`` is
  taken as the session's, and the file is held open: what it got before a deletion is read
  to its end before the re-created one. ``--resume latest`` does not see such a session.
- **History rewrites.** When Gemini sets its history (a refused tool call; compression, even
  between a tool's result and the answer) it writes the messages it keeps again under new
  ids and fresh times (model ones without ``model`` or ``tokens``), then lists them in
  ``$set.messages``. So messages are kept here in the order they first appeared; a turn is
  the first unclaimed prompt recorded after it was typed, it runs to the next prompt that no
  ``$set.messages`` listed, and copies are not its text. ``/clear`` starts another session
  id: the rest of the run falls back to the screen.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimterm.records.base import RecordContext, RecordedReply, Recorder, TurnQuery, same_prompt
from aimterm.records.tail import FileTail, iso_timestamp

__all__ = ["Conversation", "GeminiRecorder", "Message", "find_session_file", "gemini_version",
           "message_from", "turn_reply"]

#: The first version with ``--session-id``.
SESSION_ID_SINCE = (0, 41)
#: Bytes read from a record per read, reads per call (a huge session is caught up with over a
#: few calls), and the longest line kept (longer ones hold a tool's output, never a reply).
READ_CHUNK = 8 << 20
READS_PER_CALL = 4
MAX_LINE = 16 << 20
#: A legacy whole-file record bigger than this is not read.
MAX_LEGACY = 32 << 20
#: Messages kept per session (the oldest are dropped: a turn is always among the last ones).
MAX_MESSAGES = 5000
#: The record's timestamps have millisecond precision: a prompt recorded a moment before the
#: turn's ``submitted_at`` (rounding) still counts.
CLOCK_SLACK_S = 0.05
#: How often the session's file is looked for again (it is not there yet, or a newer one
#: with the same id may have started).
RESCAN_S = 0.5
ID_FILE = "gemini-session-id"
_TOKEN_KINDS = {"input": "input", "output": "output", "cached": "cache_read",
                "thoughts": "reasoning", "tool": "tool_input", "total": "total"}


@dataclass
class Message:
    """One message of a session, reduced to what a reply needs."""

    id: str
    type: str
    text: str = ""
    #: Wall-clock seconds, None when the record gives no readable timestamp.
    at: float | None = None
    #: A user message that is something typed (has text, is no tool result).
    prompt: bool = False
    tokens: dict[str, int] = field(default_factory=dict)
    #: The statuses of the message's tool calls (``success``, ``error``, ``cancelled``, ...).
    tool_calls: tuple[str, ...] = ()
    #: A model message Gemini wrote again when it set its history (no model, no tokens):
    #: not part of the turn it was written in.
    copy: bool = False
    #: Listed by a ``$set.messages``: a user message Gemini wrote again is one (a prompt of
    #: a later turn is not, by the time that turn is read).
    listed: bool = False


def _parts_text(content: Any) -> tuple[str, bool]:
    """The text of a message's ``content`` (a string or a list of parts, thoughts left out)
    and whether it holds a tool result."""
    if isinstance(content, str):
        return content, False
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return "", False
    texts: list[str] = []
    result = False
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            if "functionResponse" in part:
                result = True
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                texts.append(part["text"])
    return "".join(texts), result


def _tokens(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {kind: raw[key] for key, kind in _TOKEN_KINDS.items()
            if isinstance(raw.get(key), int) and not isinstance(raw.get(key), bool)}


def message_from(record: Any) -> Message | None:
    """A message line of the record as a :class:`Message` (None: not a message)."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return None
    mtype = record.get("type")
    if not isinstance(mtype, str):
        return None
    text, result = _parts_text(record.get("content"))
    msg = Message(id=record["id"], type=mtype, text=text, at=iso_timestamp(record.get("timestamp")))
    if mtype == "user":
        shown, _ = _parts_text(record.get("displayContent"))
        if shown.strip():
            text = shown
        msg.text, msg.prompt = text, bool(text.strip()) and not result
    elif mtype == "gemini":
        msg.tokens = _tokens(record.get("tokens"))
        msg.copy = "model" not in record and not msg.tokens
        calls = record.get("toolCalls")
        if isinstance(calls, list):
            msg.tool_calls = tuple(str(c.get("status", "")) if isinstance(c, dict) else ""
                                   for c in calls)
    return msg


class Conversation:
    """The messages of one session in the order they first appeared; a message written
    again (same id) is updated in place. Rewinds and ``$set.messages`` never move or drop a
    message seen before: a turn is looked for among what was written, not what Gemini keeps."""

    def __init__(self) -> None:
        self.session_id: str | None = None
        self._messages: dict[str, Message] = {}

    def apply(self, record: Any) -> None:
        if not isinstance(record, dict):
            return
        if self.session_id is None and isinstance(record.get("sessionId"), str):
            self.session_id = record["sessionId"]
        msg = message_from(record)
        if msg is not None:
            self._put(msg)
            return
        updates = record.get("$set")
        if isinstance(updates, dict) and isinstance(updates.get("messages"), list):
            for item in updates["messages"]:
                found = message_from(item)
                if found is not None:
                    found.listed = True
                    self._put(found)

    def apply_legacy(self, record: Any) -> None:
        """A whole-file record (Gemini CLI 0.30 and older): ``{sessionId, messages: [...]}``."""
        if isinstance(record, dict):
            self.apply({k: v for k, v in record.items() if k != "messages"})
            if isinstance(record.get("messages"), list):
                for item in record["messages"]:
                    self.apply(item)

    def _put(self, msg: Message) -> None:
        old = self._messages.get(msg.id)
        if old is not None:
            if msg.at is None:
                msg.at = old.at
            msg.listed = msg.listed or old.listed
            self._messages[msg.id] = msg  # keeps its place
            return
        self._messages[msg.id] = msg
        while len(self._messages) > MAX_MESSAGES:
            del self._messages[next(iter(self._messages))]

    @property
    def messages(self) -> list[Message]:
        return list(self._messages.values())


def turn_reply(messages: Sequence[Message], turn: TurnQuery,
               claimed: Iterable[str] = ()) -> tuple[str, RecordedReply] | None:
    """(id of the turn's user message, the turn's reply) if ``messages`` hold the whole
    reply of ``turn``, else None.

    The turn's user message is the first prompt, not yet claimed by another turn, recorded
    after the turn was typed and the same as its prompt. Its reply is the text of the model's
    messages after it, up to the next prompt (one Gemini wrote again when it set its history
    is none: those are listed by a ``$set.messages``), leaving out the model messages written
    again; it is whole once the model's last message asks for no more tools (or its tools
    were refused), or another prompt follows."""
    taken = set(claimed)
    since = turn.submitted_at - CLOCK_SLACK_S
    start = None
    for i, msg in enumerate(messages):
        if (msg.prompt and msg.id not in taken and (msg.at is None or msg.at >= since)
                and same_prompt(msg.text, turn.prompt)):
            start = i
            break
    if start is None:
        return None
    replies: list[Message] = []
    ended = False
    for msg in messages[start + 1:]:
        if msg.prompt and not msg.listed:
            ended = True
            break
        if msg.type == "gemini" and not msg.copy:
            replies.append(msg)
    if not replies:
        return None
    last = replies[-1]
    if not ended and last.tool_calls and not all(s == "cancelled" for s in last.tool_calls):
        return None  # the tools' results go back to the model, which answers again
    texts = [m.text.strip() for m in replies if m.text.strip()]
    if not texts:
        return None
    tokens: dict[str, int] = {}
    for msg in replies:
        for kind, count in msg.tokens.items():
            tokens[kind] = tokens.get(kind, 0) + count
    return messages[start].id, RecordedReply(text="\n\n".join(texts), tokens=tokens)


def _first_line(path: Path, limit: int = 1 << 16) -> Any:
    try:
        with open(path, "rb") as f:
            head = f.read(limit)
    except OSError:
        return None
    line = head.split(b"\n", 1)[0]
    try:
        return json.loads(line)
    except ValueError:
        return None


def _legacy_id(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_LEGACY:
            return None
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data.get("sessionId") if isinstance(data, dict) else None


def gemini_homes(env: Mapping[str, str]) -> list[Path]:
    """The ``.gemini`` folders the tool run with ``env`` keeps its state in."""
    home = env.get("GEMINI_CLI_HOME") or env.get("HOME") or os.path.expanduser("~")
    homes = [Path(home) / ".gemini"]
    if env.get("SANDBOX") == "sandbox-exec":  # Gemini's macOS sandbox moves it
        homes.append(Path(env.get("HOME") or home) / ".cache" / ".gemini")
    return homes


def find_session_file(homes: Sequence[Path], session_id: str) -> Path | None:
    """The newest chat file of session ``session_id`` under ``homes`` (a reset chat starts a
    new file, under the same id, in a later minute)."""
    short = glob.escape(session_id[:8])
    for ext in ("jsonl", "json"):  # a legacy file only where no JSONL one is (resumed ones are)
        found: list[tuple[float, Path]] = []
        for home in homes:
            base = glob.escape(str(home / "tmp"))
            for name in glob.glob(f"{base}/*/chats/session-*-{short}.{ext}"):
                path = Path(name)
                if ext == "jsonl":
                    # A file Gemini re-created after deleting it starts with no sessionId:
                    # the id in its name is all there is. One naming another id is not ours.
                    head = _first_line(path)
                    sid = head.get("sessionId") if isinstance(head, dict) else None
                    if sid is not None and sid != session_id:
                        continue
                elif _legacy_id(path) != session_id:
                    continue
                try:
                    found.append((path.stat().st_mtime, path))
                except OSError:
                    continue
        if found:
            return max(found)[1]
    return None


def gemini_version(env: Mapping[str, str], command: str = "gemini") -> tuple[int, ...] | None:
    """The version of the Gemini CLI ``command`` finds on ``env``'s PATH, from its package's
    ``package.json`` (None when it cannot be told)."""
    found = shutil.which(command, path=env.get("PATH"))
    if found is None:
        return None
    folder = Path(os.path.realpath(found)).parent
    for _ in range(4):
        try:
            meta = json.loads((folder / "package.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and meta.get("name") == "@google/gemini-cli":
            m = re.match(r"(\d+)\.(\d+)\.(\d+)", str(meta.get("version", "")))
            return tuple(int(x) for x in m.groups()) if m else None
        folder = folder.parent
    return None


class HeldFile:
    """A :class:`FileTail` of a file held open (through ``/proc/self/fd``): when Gemini
    deletes the file (see the module doc) or replaces it, what was written to it stays
    readable to its end."""

    def __init__(self, path: Path) -> None:
        self.fd: int | None = None
        if os.path.isdir("/proc/self/fd"):
            self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            self.inode = os.fstat(self.fd).st_ino
            self._close = weakref.finalize(self, os.close, self.fd)
            path = Path(f"/proc/self/fd/{self.fd}")
        else:  # no /proc: the file by its name, lost if it is deleted
            self.inode = os.stat(path).st_ino
        self.tail = FileTail(path, chunk=READ_CHUNK, max_line=MAX_LINE)

    def close(self) -> None:
        if self.fd is not None:
            self._close()


class GeminiRecorder(Recorder):
    """Reads the turns of one instance's Gemini session, pinned with ``--session-id``."""

    name = "gemini"

    def __init__(self, ctx: RecordContext) -> None:
        super().__init__(ctx)
        self.homes = gemini_homes(ctx.env)
        self.session_id: str | None = None
        self._pass_id = False
        id_file = ctx.private_dir / ID_FILE
        if ctx.resume:
            try:
                stored = id_file.read_text(encoding="utf-8").strip()
            except OSError:
                stored = ""
            self.session_id = stored or None
        else:
            version = gemini_version(ctx.env)
            if version is None or version[:2] >= SESSION_ID_SINCE:
                self.session_id, self._pass_id = str(uuid.uuid4()), True
                try:
                    id_file.write_text(self.session_id + "\n", encoding="utf-8")
                except OSError:
                    pass  # a later resume then falls back to the screen
        self.path: Path | None = None
        self._held: HeldFile | None = None
        self._legacy_stat: tuple[int, int, int] | None = None
        # Kept across the files of the session (deleted and re-created, replaced, reset):
        # messages are updated by id, so reading one again does no harm.
        self._conversation = Conversation()
        self._claimed: set[str] = set()
        self._scanned = 0.0

    def launch_args(self) -> list[str]:
        return ["--session-id", self.session_id] if self._pass_id and self.session_id else []

    def reply(self, turn: TurnQuery) -> RecordedReply | None:
        if self.session_id is None:
            return None
        self._locate()
        if self.path is None or not self._refresh():
            return None
        found = turn_reply(self._conversation.messages, turn, self._claimed)
        if found is None:
            return None
        claimed, reply = found
        self._claimed.add(claimed)
        return RecordedReply(text=reply.text, tokens=reply.tokens, source=str(self.path))

    def _locate(self) -> None:
        now = time.monotonic()
        if now - self._scanned < (RESCAN_S if self.path is not None else RESCAN_S / 5):
            return
        self._scanned = now
        assert self.session_id is not None
        path = find_session_file(self.homes, self.session_id)
        if path is not None and path != self.path:
            if self._held is not None:
                self._read(self._held)  # the end of the old file first
                self._held.close()
            self.path, self._held, self._legacy_stat = path, None, None

    def _refresh(self) -> bool:
        """Read what was added to the session's file since the last call; False if there
        is nothing readable."""
        assert self.path is not None
        if self.path.suffix == ".json":
            return self._refresh_legacy()
        try:
            inode: int | None = os.stat(self.path).st_ino
        except OSError:
            inode = None
        held = self._held
        if held is not None and inode != held.inode:
            self._read(held)  # deleted or replaced: the rest of what it got
            if inode is None:
                return True  # Gemini re-creates it with its next line
            held.close()
            self._held = held = None
        if held is None:
            try:
                self._held = held = HeldFile(self.path)
            except OSError:
                return False
        return self._read(held)

    def _read(self, held: HeldFile) -> bool:
        for _ in range(READS_PER_CALL):
            got = held.tail.read()
            if got is None:
                return False
            for line in got[0]:
                try:
                    record = json.loads(line)
                except ValueError:  # (UnicodeDecodeError is one)
                    continue
                self._conversation.apply(record)
            if not held.tail.behind:
                break
        return True

    def _refresh_legacy(self) -> bool:
        assert self.path is not None
        try:
            st = self.path.stat()
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if key == self._legacy_stat:
                return True
            if st.st_size > MAX_LEGACY:
                return False
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return False
        self._legacy_stat = key
        self._conversation.apply_legacy(data)
        return True
