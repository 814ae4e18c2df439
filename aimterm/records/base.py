"""What every reader of a tool's own conversation record provides.

An agent CLI records its conversation on disk as structured data while it runs (Claude Code
and Codex CLI write JSONL session files, Gemini CLI its chat files, aider a markdown history).
That record holds the model's text exactly as it was written, before the TUI wrapped and
rendered it, and often the tokens and the cost of each turn. A :class:`Recorder` finds the
record of *one* instance's session — never another's, even when several share a folder — and
reads one turn's reply out of it.

A recorder lives for one run of the tool (one start). The session:

1. makes it with a :class:`RecordContext` before each start and adds
   :meth:`Recorder.launch_args` / :meth:`Recorder.launch_env` to the launch (a session id the
   tool will use, the path of a history file of this instance's own);
2. calls :meth:`Recorder.started` with the tool's pid once it runs;
3. at the end of each turn calls :meth:`Recorder.reply` — on a worker thread, never on the
   loop — for the reply of that turn, again for a short while if it returns None (the tool may
   write the record a moment after its screen settles).

A reply the record cannot give (no file, unreadable, not written yet, a format this version of
the tool changed) is None: the session falls back to the screen and the turn says so. A
recorder never raises for what it reads: a record it cannot make sense of is "no reply".
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RecordContext", "RecordedReply", "Recorder", "TurnQuery", "same_prompt"]


@dataclass(frozen=True)
class RecordContext:
    """What a recorder knows of the instance whose record it reads."""

    instance: str
    #: The tool's working directory (absolute).
    cwd: str
    #: The tool's environment as it is launched (HOME, XDG_*, CODEX_HOME, ...).
    env: Mapping[str, str]
    #: A folder of this instance's own, private (0700), that outlives one run: for a file the
    #: recorder asks the tool to write (aider's chat history).
    private_dir: Path
    #: The tool is started with the adapter's resume arguments (continues its last
    #: conversation): a recorder that pins a session id may resume that one instead.
    resume: bool = False


@dataclass(frozen=True)
class TurnQuery:
    """The turn whose reply is asked for."""

    #: The prompt as it was typed.
    prompt: str
    #: 1 for the first turn of this run of the tool, 2 for the next, ...
    number: int
    #: Wall-clock time (``time.time()``) just before the prompt was typed.
    submitted_at: float


@dataclass(frozen=True)
class RecordedReply:
    """One turn's reply as the tool recorded it."""

    #: The model's text for the turn, as it wrote it (markdown unrendered, lines unwrapped).
    #: Several assistant messages of one turn (text around tool calls) are joined by a blank
    #: line.
    text: str
    #: Token counts the record gives for the turn, by kind: ``input``, ``output``, and where
    #: the tool records them ``cache_read``, ``cache_write``, ``reasoning``, ``total``.
    tokens: Mapping[str, int] = field(default_factory=dict)
    #: The turn's cost in US dollars, where the tool records it.
    cost_usd: float | None = None
    #: Where the reply was read from (a path), for the turn's record and for debugging.
    source: str = ""


class Recorder(abc.ABC):
    """The record of one run of one instance's tool (see the module doc)."""

    #: The adapter's ``reply.record`` value that selects this recorder.
    name: str = ""

    def __init__(self, ctx: RecordContext) -> None:
        self.ctx = ctx
        self.pid: int | None = None

    def launch_args(self) -> list[str]:
        """Arguments added to the tool's command line for this run (default none)."""
        return []

    def launch_env(self) -> dict[str, str]:
        """Environment variables added for this run (default none)."""
        return {}

    def resume_args(self) -> list[str] | None:
        """On a resumed start: arguments that resume *this instance's own* conversation (by
        its session id), put where the adapter's ``resume`` arguments go, instead of them —
        those continue the folder's latest conversation, which may be another instance's.
        None (the default, or nothing of this instance's to resume): the adapter's."""
        return None

    def started(self, pid: int) -> None:
        """The tool runs, as process ``pid`` (the leader of its process group)."""
        self.pid = pid

    @abc.abstractmethod
    def reply(self, turn: TurnQuery) -> RecordedReply | None:
        """The reply of ``turn`` if the record holds all of it by now, else None. Called on a
        worker thread; must not raise for anything it reads (a record it cannot parse is
        None), and must stay cheap when called again and again (read only what was added)."""


def same_prompt(recorded: str, typed: str) -> bool:
    """Whether a user message of a record is the prompt that was typed: the tools trim it
    and may turn its line breaks into spaces, so whitespace is not compared."""
    return recorded.split() == typed.split()
