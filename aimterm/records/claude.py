"""Claude Code's record of its conversation: the session transcript, one JSONL file a session.

Findings (Claude Code 2.1.330, the pin; 2.1.197 and 2.1.332, the newest published: the same
entries; ``claude --help``, the strings of the installed binary):

* **Where.** ``<config>/projects/<project>/<session id>.jsonl``. ``<config>`` is
  ``$CLAUDE_CONFIG_DIR``, else ``~/.claude`` (``$HOME``). ``<project>`` is the working
  directory with every character outside ``[A-Za-z0-9]`` replaced by ``-`` (per UTF-16 unit),
  cut to 200 characters plus ``-<base36 of a 32-bit string hash>`` when longer; 2.1.330 also
  takes ``$CLAUDE_CODE_PROJECT_DIR_NAME`` when ``CLAUDE_CONFIG_DIR`` is set. Every instance in
  one folder and one HOME writes to the same project folder, one file per session; the file
  appears with the first prompt (none for a run without turns).
* **One instance.** ``--session-id <uuid>`` names the session, so the file: the recorder
  makes a fresh uuid per start and reads only that file (found under the computed project
  folder, else by its name under ``projects/*``), never another instance's.
* **Format.** One JSON object a line, appended as the session goes (entries are written
  whole, a line at a time). The file's order is not the conversation's: 2.1.197, on a busy
  machine, was seen to append a turn's answer and its ``turn_duration`` *before* the prompt
  and its attachments (in the same write or the next one; about 1 run in 6 with two busy loops
  on 2 cores). Each line's ``parentUuid`` names the line it follows — Claude Code rebuilds the
  conversation from those links itself — so the reader orders lines by them
  (:func:`in_order`), and a line whose parent is not read yet stays where the file put it.
  Read here: ``type: user`` with ``message.content`` a string (or
  text blocks) — the prompt, exactly as typed (multi-line and non-Latin text kept), with
  ``promptSource: typed``; ``isMeta`` ones are Claude Code's own, ``[Request interrupted by
  user…]`` ends an interrupted turn; a ``tool_result`` block is a tool's answer. ``type:
  assistant``: one line per content block of an API message (``text``, ``thinking``,
  ``tool_use``), each with the message's ``id``, ``stop_reason`` (``end_turn``, ``tool_use``
  — already set on every block in these versions) and ``usage`` (``input_tokens``,
  ``output_tokens``, ``cache_read_input_tokens``, ``cache_creation_input_tokens``; 2.1.330
  adds ``output_tokens_details.thinking_tokens``), repeated on each block of the message.
  ``type: system, subtype: turn_duration`` ends every completed turn. Ignored: ``attachment``,
  ``file-history-snapshot``, ``api-request*`` (the request, prompt text included),
  ``mode``, ``permission-mode``, ``last-prompt``, ``tools-used``, ``cost-state`` and any other.
  ``isSidechain`` entries are a sub-agent's.
* **Cost.** Not per turn: 2.1.330 appends ``cost-state`` (the session's running
  ``totalCostUSD``) only when it exits; 2.1.197 writes none. ``cost_usd`` stays None.
* **When.** The turn's last assistant block and ``turn_duration`` are in the file before the
  screen settles: measured with the fake model (a thread polling the file every 2 ms), 130-150
  ms before the session saw IDLE in 2.1.197 and 2.1.330, 150-290 ms in 2.1.332 (settle 250
  ms; at 40×120); through the session (24×80) the first poll finds the reply, 1-7 ms after
  IDLE, in all three versions. Blocks are written whole, so a reply is never read half-written; until a
  turn is closed (``turn_duration``, a final stop reason, the next prompt) it is no reply.
* **Resume.** ``--resume <id>`` continues that session in the same file (same id); it exits
  1 ("No conversation found with session ID") for an id without a file, and ``--session-id``
  cannot go with ``--resume``/``--continue`` (exit 1, "also needs --fork-session"). The
  adapter's ``--continue`` takes the most recent session *of the folder* — with several
  instances in one folder, another instance's — and it wins over a ``--resume`` beside it.
  So the recorder keeps its session id in the private dir once the file exists, and on a
  resume asks for ``--resume <that id>`` (:meth:`ClaudeRecorder.resume_args`): the
  adapter's own resume arguments must then be left out, or Claude Code continues the
  folder's latest session and this record gets nothing (the screen answers). A resume with
  no session of its own adds nothing and reads nothing.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimterm.records.base import RecordContext, RecordedReply, Recorder, TurnQuery, same_prompt
from aimterm.records.tail import FileTail, iso_timestamp

__all__ = ["ID_FILE", "ClaudeRecorder", "Entry", "Line", "config_dir", "find_session_file",
           "in_order", "parse_line", "project_dir_name", "read_line", "turn_reply"]

#: This instance's session id, in its private dir, once the session has a file.
ID_FILE = "claude-session-id"
#: Reads of the file per call at most (each of at most ``tail.READ_CHUNK`` bytes): a huge
#: session is caught up with over a few polls.
READS_PER_CALL = 4
#: Lines kept per run; older ones are dropped (their turns were read long ago).
MAX_ENTRIES = 20_000
#: A prompt recorded this long before the turn was typed is an earlier turn's. Both times
#: come from this machine's clock (the record's cut to the millisecond), and an earlier turn's
#: prompt is older by at least the settle time and the model's answer.
CLOCK_SLACK_S = 0.2
#: Stop reasons that end a turn (``tool_use`` does not: a tool runs, the model goes on).
ENDING_STOPS = frozenset({"end_turn", "stop_sequence", "max_tokens", "refusal"})

PROMPT, TEXT, TOOL, THOUGHT, RESULT, END, INTERRUPT = (
    "prompt", "text", "tool", "thought", "result", "end", "interrupt")
_INTERRUPTED = "[Request interrupted by user"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_USAGE_KEYS = (("input_tokens", "input"), ("output_tokens", "output"),
               ("cache_read_input_tokens", "cache_read"),
               ("cache_creation_input_tokens", "cache_write"))


# -- where -------------------------------------------------------------------------------------


def config_dir(env: Mapping[str, str]) -> Path:
    """Claude Code's config folder for a process with environment ``env``."""
    explicit = (env.get("CLAUDE_CONFIG_DIR") or "").strip()
    if explicit:
        return Path(explicit)
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".claude"


def _js_hash(text: str) -> int:
    """Java's String.hashCode over UTF-16 units, as a signed 32-bit int (Claude Code's)."""
    data = text.encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = ((h << 5) - h + (data[i] | data[i + 1] << 8)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def project_dir_name(cwd: str) -> str:
    """The project folder Claude Code names after the working directory ``cwd``."""
    name = "".join(c if c.isascii() and c.isalnum() else "-" * (2 if ord(c) > 0xFFFF else 1)
                   for c in cwd)
    if len(name) <= 200:
        return name
    return f"{name[:200]}-{_base36(abs(_js_hash(cwd)))}"


def _project_dirs(ctx_cwd: str, env: Mapping[str, str]) -> list[str]:
    names = []
    override = (env.get("CLAUDE_CODE_PROJECT_DIR_NAME") or "").strip()
    if env.get("CLAUDE_CONFIG_DIR") and _PROJECT_NAME.match(override):
        names.append(override)
    for cwd in (ctx_cwd, os.path.realpath(ctx_cwd)):
        name = project_dir_name(cwd)
        if name not in names:
            names.append(name)
    return names


def find_session_file(config: Path, cwd: str, env: Mapping[str, str],
                      session_id: str) -> Path | None:
    """The file of session ``session_id``: in the working directory's project folder, else
    in whichever project folder holds it (a cwd Claude Code spelled differently)."""
    projects = config / "projects"
    wanted = f"{session_id}.jsonl"
    for name in _project_dirs(cwd, env):
        path = projects / name / wanted
        if path.is_file():
            return path
    try:
        with os.scandir(projects) as folders:
            for folder in folders:
                path = Path(folder.path) / wanted
                if folder.is_dir() and path.is_file():
                    return path
    except OSError:
        pass
    return None


# -- what -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """What one record line says about a turn (a line may give several: one per block)."""

    kind: str
    text: str = ""
    #: Wall-clock time of the line (``timestamp``), None where it has none.
    at: float | None = None
    #: The API message a block belongs to (its usage is repeated on each block).
    message: str = ""
    usage: Mapping[str, int] = field(default_factory=dict)
    stop: str | None = None
    #: The line's own ``uuid``: a line seen twice is counted once.
    uid: str = ""


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    out = {}
    for key, name in _USAGE_KEYS:
        value = _int(raw.get(key))
        if value is not None:
            out[name] = value
    details = raw.get("output_tokens_details")
    if isinstance(details, dict) and _int(details.get("thinking_tokens")) is not None:
        out["reasoning"] = details["thinking_tokens"]
    return out


def _user_entries(line: dict[str, Any], at: float | None, uid: str) -> list[Entry]:
    if line.get("isMeta") is True:
        return []  # Claude Code's own notes ("Caveat: ...", a command's output)
    message = line.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        blocks = [b for b in content if isinstance(b, dict)]
        if any(b.get("type") == "tool_result" for b in blocks):
            return [Entry(RESULT, at=at, uid=uid)]
        texts = [b["text"] for b in blocks if b.get("type") == "text" and
                 isinstance(b.get("text"), str)]
        if not texts:
            return []
        text = "\n".join(texts)
    else:
        return []
    if "toolUseResult" in line:
        return [Entry(RESULT, at=at, uid=uid)]
    if text.startswith(_INTERRUPTED):
        return [Entry(INTERRUPT, at=at, uid=uid)]
    return [Entry(PROMPT, text, at=at, uid=uid)]


def _assistant_entries(line: dict[str, Any], at: float | None, uid: str) -> list[Entry]:
    message = line.get("message")
    if not isinstance(message, dict):
        return []
    mid = _str(message.get("id")) or uid
    usage = _usage(message.get("usage"))
    stop = _str(message.get("stop_reason"))
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return []
    out = []
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        key = f"{uid}#{i}" if uid else ""
        if kind == "text" and isinstance(block.get("text"), str):
            out.append(Entry(TEXT, block["text"], at, mid, usage, stop, key))
        elif kind in ("tool_use", "server_tool_use"):
            out.append(Entry(TOOL, "", at, mid, usage, stop, key))
        else:  # thinking, redacted_thinking, a block type of a later version
            out.append(Entry(THOUGHT, "", at, mid, usage, stop, key))
    return out


@dataclass(frozen=True)
class Line:
    """One record line with a place in the conversation: its ``uuid``, its ``parentUuid``
    (the line it follows; "" for none) and its entries (none for an attachment, a meta note,
    a sub-agent's line: they still link the conversation up)."""

    uid: str
    parent: str
    entries: tuple[Entry, ...] = ()


def _entries(obj: dict[str, Any]) -> list[Entry]:
    if obj.get("isSidechain") is True:
        return []
    at = iso_timestamp(obj.get("timestamp"))
    uid = _str(obj.get("uuid")) or ""
    kind = obj.get("type")
    if kind == "user":
        return _user_entries(obj, at, uid)
    if kind == "assistant":
        return _assistant_entries(obj, at, uid)
    if kind == "system" and obj.get("subtype") == "turn_duration":
        return [Entry(END, at=at, uid=uid)]
    return []


def _load(line: str | bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def parse_line(line: str | bytes) -> list[Entry]:
    """The entries of one record line; none for a line that is not JSON, not a turn's, or
    of a kind this reader does not know."""
    obj = _load(line)
    return _entries(obj) if obj is not None else []


def read_line(line: str | bytes) -> Line | None:
    """One record line as a link of the conversation; None for one that is not part of it
    (neither a ``uuid`` nor an entry: ``mode``, ``file-history-snapshot``, ``last-prompt``,
    garbage)."""
    obj = _load(line)
    if obj is None:
        return None
    uid, entries = _str(obj.get("uuid")) or "", tuple(_entries(obj))
    if not uid and not entries:
        return None
    return Line(uid, _str(obj.get("parentUuid")) or "", entries)


def in_order(lines: Sequence[Line]) -> list[Entry]:
    """The entries of ``lines`` in conversation order: each line after the line it follows
    (its parent), lines with the same parent in file order. The file's order is not the
    conversation's — 2.1.197 on a busy machine appends the model's answer before the prompt it
    answers — but every line names its parent. A line whose parent is not (yet) read stays at
    its place in the file: before a prompt written after it, so it is in no turn until its
    parent shows up."""
    first: dict[str, int] = {}
    for i, line in enumerate(lines):
        if line.uid:
            first.setdefault(line.uid, i)
    children: dict[int, list[int]] = {}
    roots = []
    for i, line in enumerate(lines):
        parent = first.get(line.parent) if line.parent else None
        if parent is None or parent == i:
            roots.append(i)
        else:
            children.setdefault(parent, []).append(i)
    out: list[Entry] = []
    done = [False] * len(lines)

    def walk(root: int) -> None:
        stack = [root]
        while stack:  # (no recursion: a session is one long chain)
            i = stack.pop()
            if done[i]:
                continue
            done[i] = True
            out.extend(lines[i].entries)
            stack.extend(reversed(children.get(i, ())))

    for root in roots:
        walk(root)
    for i in range(len(lines)):  # lines in a loop of parents (a broken file): file order
        if not done[i]:
            walk(i)
    return out


def _finished(body: Sequence[Entry], next_prompt: bool) -> bool:
    if next_prompt or any(e.kind in (END, INTERRUPT) for e in body):
        return True
    last = next((e for e in reversed(body) if e.kind in (TEXT, TOOL, THOUGHT, RESULT)), None)
    # A version that writes no turn_duration: the model's last message ended the turn (a
    # block written before its message ended has no stop reason yet).
    return (last is not None and last.kind in (TEXT, THOUGHT)
            and (last.stop in ENDING_STOPS or last.stop is None))


def turn_reply(entries: Sequence[Entry], prompt: str, submitted_at: float,
               source: str = "") -> RecordedReply | None:
    """The reply of the turn whose prompt is ``prompt``, typed at ``submitted_at``: the
    first matching prompt entry recorded since then, and the assistant text after it up to
    the next prompt. None until the turn is over in the record (or if it is not there)."""
    start = None
    for i in range(len(entries) - 1, -1, -1):
        entry = entries[i]
        if entry.kind != PROMPT:
            continue
        if entry.at is not None and entry.at < submitted_at - CLOCK_SLACK_S:
            break  # this and older prompts are earlier turns'
        if same_prompt(entry.text, prompt):
            start = i  # the earliest since the turn was typed: the same prompt again is a later turn
    if start is None:
        return None
    end = next((j for j in range(start + 1, len(entries)) if entries[j].kind == PROMPT),
               len(entries))
    body = entries[start + 1:end]
    if not _finished(body, end < len(entries)):
        return None
    texts, seen = [], set()
    usage: dict[str, Mapping[str, int]] = {}
    for entry in body:
        if entry.uid and entry.uid in seen:
            continue
        seen.add(entry.uid)
        if entry.message and entry.usage:
            usage[entry.message] = entry.usage  # the message's last block has the final count
        if entry.kind == TEXT and entry.text.strip():
            texts.append(entry.text.strip())
    tokens: dict[str, int] = {}
    for counts in usage.values():
        for key, value in counts.items():
            tokens[key] = tokens.get(key, 0) + value
    return RecordedReply("\n\n".join(texts), tokens, None, source)


# -- reading ------------------------------------------------------------------------------------


class ClaudeRecorder(Recorder):
    """This instance's Claude Code session file, pinned with ``--session-id``."""

    name = "claude"

    def __init__(self, ctx: RecordContext) -> None:
        super().__init__(ctx)
        self._config = config_dir(ctx.env)
        self._id_file = ctx.private_dir / ID_FILE
        self._path: Path | None = None
        self._tail: FileTail | None = None
        self._lines: list[Line] = []
        #: The lines' entries in conversation order; None: to be worked out again.
        self._entries: list[Entry] | None = []
        self._remembered = False
        previous = self._stored_id() if ctx.resume else None
        found = self._locate(previous) if previous else None
        #: ``--resume <its id>`` when this instance has a session of its own to resume: it
        #: takes the place of the adapter's ``--continue`` (see resume_args).
        self._resume: list[str] | None = None
        self._args: list[str] = []
        self.session_id: str | None
        if found is not None:
            self.session_id = previous
            self._resume = ["--resume", str(previous)]
            self._path, self._tail = found, FileTail.at_end(found)  # this run's only
        elif ctx.resume:
            # Nothing of this instance's to resume: the adapter's resume arguments choose the
            # conversation, and a session id cannot go with them — no record this run.
            self.session_id, self._args = None, []
        else:
            self.session_id = str(uuid.uuid4())
            self._args = ["--session-id", self.session_id]

    def launch_args(self) -> list[str]:
        return list(self._args)

    def resume_args(self) -> list[str] | None:
        return list(self._resume) if self._resume is not None else None

    def _stored_id(self) -> str | None:
        try:
            text = self._id_file.read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            return None
        return text if _UUID.match(text) else None

    def _locate(self, session_id: str | None) -> Path | None:
        if session_id is None:
            return None
        return find_session_file(self._config, self.ctx.cwd, self.ctx.env, session_id)

    def _remember(self) -> None:
        """Keep the session id for a later resume, now that the session has a file."""
        if self._remembered or self.session_id is None:
            return
        try:
            tmp = self._id_file.with_name(self._id_file.name + ".tmp")
            tmp.write_text(self.session_id + "\n", encoding="ascii")
            os.replace(tmp, self._id_file)
            self._remembered = True
        except OSError:
            pass

    def _update(self) -> bool:
        if self._tail is None:
            self._path = self._locate(self.session_id)
            if self._path is None:
                return False
            self._tail = FileTail(self._path)
        for _ in range(READS_PER_CALL):
            got = self._tail.read()
            if got is None:
                return False
            lines, restarted = got
            if restarted:
                self._lines.clear()
                self._entries = None
            for raw in lines:
                line = read_line(raw)
                if line is not None:
                    self._lines.append(line)
                    self._entries = None
            if not self._tail.behind:
                break
        if len(self._lines) > MAX_ENTRIES:
            del self._lines[: len(self._lines) - MAX_ENTRIES // 2]
        self._remember()
        return True

    def reply(self, turn: TurnQuery) -> RecordedReply | None:
        if self.session_id is None or not self._update():
            return None
        if self._entries is None:  # only when lines came in: polls in between stay cheap
            self._entries = in_order(self._lines)
        return turn_reply(self._entries, turn.prompt, turn.submitted_at, str(self._path))
