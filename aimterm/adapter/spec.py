"""Typed adapter objects: what a loaded, validated, ``extends``-resolved adapter file is.

The loader (:mod:`aimterm.adapter.loader`) builds these from YAML; nothing else should
construct them from raw data. All regexes are compiled here once, at load time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

StateName = Literal["idle", "busy", "waiting"]
DetectMode = Literal["screen", "stream"]


@dataclass(frozen=True)
class Region:
    """Where on the screen a rule looks.

    ``all`` (default), ``top:N``, ``bottom:N``, ``rows:A-B`` (1-based, inclusive), ``cursor``
    (the cursor's line) or ``cursor:N`` (N lines ending at the cursor's line). In stream mode
    the "screen" is the text the tool printed since the turn began, split in lines.
    """

    kind: Literal["all", "top", "bottom", "rows", "cursor"] = "all"
    start: int = 0  # rows: first row (1-based); top/bottom/cursor: N
    end: int = 0  # rows: last row (1-based, inclusive)

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "rows":
            return f"rows:{self.start}-{self.end}"
        if self.kind == "cursor" and self.start == 1:
            return "cursor"
        return f"{self.kind}:{self.start}"

    def select(self, lines: Sequence[str], cursor_row: int = -1) -> list[str]:
        """Pick this region's lines out of ``lines`` (``cursor_row`` is 0-based). Only
        those rows are read: ``lines`` may render each as it is read."""
        if self.kind == "all":
            return list(lines)
        if self.kind == "top":
            return list(lines[: self.start])
        if self.kind == "bottom":
            return list(lines[-self.start :]) if self.start else []
        if self.kind == "rows":
            return list(lines[self.start - 1 : self.end])
        row = cursor_row if cursor_row >= 0 else len(lines) - 1
        return list(lines[max(0, row - self.start + 1) : row + 1])


ALL = Region()


@dataclass(frozen=True)
class KeyItem:
    """One write to the terminal: a named key, literal text, a bracketed paste, or a pause."""

    kind: Literal["key", "text", "paste", "wait"]
    value: str = ""
    ms: int = 0

    def __str__(self) -> str:
        if self.kind == "key":
            return f"<{self.value}>"
        if self.kind == "wait":
            return f"<wait {self.ms}ms>"
        if self.kind == "paste":
            return f"<paste {self.value!r}>"
        return repr(self.value)


KeySeq = tuple[KeyItem, ...]


def describe_keys(keys: KeySeq) -> str:
    return " ".join(str(k) for k in keys)


@dataclass(frozen=True)
class StateRule:
    """``state`` holds when every given condition holds.

    ``any`` and ``title`` form one alternative group: at least one ``any`` pattern matches in
    the region, or the window title matches ``title``. ``all``: every pattern matches in the
    region. ``not``: no pattern matches in the region. Lines are matched with trailing blanks
    removed, joined by ``\\n``, with ``re.MULTILINE``. Highest ``priority`` is tried first;
    ties keep file order.
    """

    state: StateName
    name: str
    priority: int = 0
    region: Region = ALL
    any: tuple[re.Pattern[str], ...] = ()
    all: tuple[re.Pattern[str], ...] = ()
    not_: tuple[re.Pattern[str], ...] = ()
    title: re.Pattern[str] | None = None
    line: int = 0  # where the rule stands in its file, for reports
    source: str = ""


@dataclass(frozen=True)
class Dialog:
    """A start-up dialog: when ``match`` is seen while STARTING, send ``send``."""

    name: str
    match: re.Pattern[str]
    send: KeySeq
    region: Region = ALL
    line: int = 0


@dataclass(frozen=True)
class StartupSpec:
    timeout_s: float = 60.0
    dialogs: tuple[Dialog, ...] = ()
    #: How long the screen must be still before the *first* IDLE (None: ``settle_ms``). Some
    #: CLIs show their input box before they finish loading, then redraw everything.
    settle_ms: int | None = None


@dataclass(frozen=True)
class SubmitRecipe:
    """How to hand the tool a prompt.

    Type the text (``paste: none``) or paste it (``paste: bracketed``), wait ``delay_ms``,
    send ``keys`` as separate writes, then confirm the tool took it (``verify``): ``busy`` — a
    busy rule fired, or the turn visibly ran and ended; ``output`` — the tool printed
    anything; ``none``. If not confirmed within ``verify_timeout_ms``, send ``keys`` again, up
    to ``retry`` times. ``clear`` is sent before the text to empty the input line. With
    ``after_echo``, the keys go out as soon as the typed text shows in the input line, and
    ``delay_ms`` is only the longest wait for it: an echo proves the tool read the text, so
    the keys arrive in a read of their own, which a fixed pause only makes likely.
    """

    paste: Literal["none", "bracketed"] = "none"
    keys: KeySeq = (KeyItem("key", "enter"),)
    delay_ms: int = 0
    verify: Literal["busy", "output", "none"] = "busy"
    verify_timeout_ms: int = 3000
    retry: int = 1
    clear: KeySeq = ()
    after_echo: bool = False


@dataclass(frozen=True)
class AnswerRule:
    """While busy, when ``match`` is seen in ``region`` and every named group in ``when``
    matches its pattern, send ``send``. A question no rule answers makes the session WAITING."""

    name: str
    match: re.Pattern[str]
    send: KeySeq
    when: tuple[tuple[str, re.Pattern[str]], ...] = ()
    region: Region = ALL
    line: int = 0


@dataclass(frozen=True)
class ReplySpec:
    """How to cut the reply out of what the tool showed during a turn.

    ``from``: ``screen-delta`` (lines that are new on the screen and in its scrollback since
    the turn began), ``stream`` (text printed since the turn began) or ``none``. ``strip``
    removes the ``echo`` of the prompt, the idle ``prompt`` line, ``chrome`` — every line
    matching a pattern in ``chrome`` — and ``redraws``: a line the next one starts with (a
    half-drawn frame of a streamed answer left above the finished one). ``start`` and ``end``
    begin it at the first line matching one and end it before the last line matching one.
    ``region`` limits screen-delta to part of the screen. ``trim`` patterns are cut from the
    start of each remaining line.
    """

    from_: Literal["screen-delta", "stream", "none"] = "screen-delta"
    strip: tuple[Literal["prompt", "echo", "chrome", "redraws"], ...] = ("prompt", "echo",
                                                                          "chrome")
    chrome: tuple[re.Pattern[str], ...] = ()
    #: The reply starts at the first line (after the echo) matching one of these: where a
    #: tool marks its answer (``'^● '``), for an echo the screen cannot show as typed.
    start: tuple[re.Pattern[str], ...] = ()
    #: The reply ends before the last line matching one of these (what the tool draws
    #: between its answer and its input area: a rule, the files in the chat).
    end: tuple[re.Pattern[str], ...] = ()
    region: Region = ALL
    #: Removed from the start of every reply line where it matches (a tool's bullet or
    #: indent, e.g. ``'^(✦ |  )'``), after the lines are chosen.
    trim: tuple[re.Pattern[str], ...] = ()
    #: The tool's own record of the conversation to take the reply (and its tokens and cost)
    #: from, by the name of its reader (:data:`aimterm.records.RECORDERS`); the screen is the
    #: fallback. None: the screen only.
    record: str | None = None
    #: How long after the screen settles the record may take to hold the turn's reply.
    record_wait_ms: int = 2000


@dataclass(frozen=True)
class ExitRecipe:
    """Polite quit: send ``keys``, wait ``timeout_s``; then SIGHUP, SIGTERM, SIGKILL to the
    process group, ``signal_grace_s`` apart."""

    keys: KeySeq = ()
    timeout_s: float = 5.0
    signal_grace_s: float = 1.0


@dataclass(frozen=True)
class TerminalSpec:
    rows: int = 40
    cols: int = 120
    term: str = "xterm-256color"
    key_gap_ms: int = 25  # pause between separate writes of a key sequence
    scrollback: int = 2000  # lines of scrollback kept as text


#: What a job recipe's text may name (:class:`JobRecipe`): the job's prompt, its files
#: (space-separated), its working directory, and the running interpreter (as in ``command``).
JOB_PLACEHOLDERS = ("prompt", "files", "cwd", "python")
#: One file, in the ``files`` turn only (it is sent once per file).
FILE_PLACEHOLDER = "file"
#: In the one-shot form only: the prompt as the prompt turn would send it (``prompt_with_files``
#: when the job names files), for a tool that takes no file arguments.
MESSAGE_PLACEHOLDER = "message"
#: An argument of ``oneshot`` that is exactly this becomes one argument per job file.
FILES_ARGS = "{files...}"

_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def template_fields(text: str) -> list[str]:
    """The placeholder names in ``text``, in order; ``{{`` and ``}}`` are literal braces.

    Raises ValueError on a brace that is neither doubled nor part of ``{name}``. The loader
    checks the names against what each key allows; :func:`fill_template` fills them in.
    """
    names = []
    for found in _TEMPLATE.finditer(text):
        token = found.group(0)
        if found.group(1) is not None:
            names.append(found.group(1))
        elif token in ("{", "}"):
            raise ValueError(f"lone {token!r} at position {found.start()} (write "
                             f"{token * 2!r} for a literal brace)")
    return names


def fill_template(text: str, values: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` replaced by ``values[name]``, in one pass (a value that
    holds braces is left as it is). Raises ValueError on a name not in ``values`` or a lone
    brace, which a loaded adapter cannot have."""
    def one(found: re.Match[str]) -> str:
        token = found.group(0)
        name = found.group(1)
        if name is not None:
            if name not in values:
                raise ValueError(f"unknown placeholder {token} in {text!r} (expected "
                                 f"{', '.join('{' + key + '}' for key in values)})")
            return values[name]
        if token in ("{{", "}}"):
            return token[0]
        raise ValueError(f"lone {token!r} in {text!r} (write {token * 2!r} for a literal "
                         f"brace)")

    return _TEMPLATE.sub(one, text)


@dataclass(frozen=True)
class JobRecipe:
    """How a job (:class:`aimterm.jobs.spec.Job`) is handed to this tool.

    Pooled (``pooled``: the tool can take jobs as turns on a running instance): one
    ``files`` turn per job file (``{file}``), then the ``prompt`` turn — ``prompt_with_files``
    instead when the job names files — then the ``after`` turns, whatever happened, so the
    next job on the instance starts clean. One-shot: ``oneshot`` is the argv of the tool's
    non-interactive form (None: it has none), run once per job with ``oneshot_env`` added to
    the environment. Texts use :data:`JOB_PLACEHOLDERS`; :mod:`aimterm.jobs.recipe` fills
    them in for one job. ``ignore``: glob patterns of the files the tool writes for itself
    (aider's ``.aider*``), matched against each part of a path: never counted as changed.
    ``pooled_args``: arguments added to the command of instances started to take jobs (not
    those of a cluster file): the mode in which the tool edits files without asking.
    """

    pooled: bool = True
    files: str | None = None
    prompt: str = "{prompt}"
    prompt_with_files: str | None = None
    after: tuple[str, ...] = ()
    oneshot: tuple[str, ...] | None = None
    oneshot_env: tuple[tuple[str, str], ...] = ()
    ignore: tuple[str, ...] = ()
    pooled_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    command: tuple[str, ...]
    source: str = "<memory>"
    origin: str = "memory"  # builtin | user | env | file | memory
    description: str = ""
    extends: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    env_remove: tuple[str, ...] = ()
    cwd: str | None = None
    terminal: TerminalSpec = field(default_factory=TerminalSpec)
    detect: DetectMode = "screen"
    states: tuple[StateRule, ...] = ()
    settle_ms: int = 300
    startup: StartupSpec = field(default_factory=StartupSpec)
    submit: SubmitRecipe = field(default_factory=SubmitRecipe)
    answers: tuple[AnswerRule, ...] = ()
    reply: ReplySpec = field(default_factory=ReplySpec)
    metrics: tuple[tuple[str, re.Pattern[str]], ...] = ()
    #: Versions of the tool this adapter was checked against (``adapter doctor`` says when the
    #: installed one is not among them).
    verified: tuple[str, ...] = ()
    exit: ExitRecipe = field(default_factory=ExitRecipe)
    interrupt: KeySeq = (KeyItem("key", "ctrl-c"),)
    resume: tuple[str, ...] = ()
    turn_timeout_s: float = 600.0
    #: Questions take no keys until they have been on screen this long (some CLIs drop keys
    #: that arrive while a dialog is still being drawn). Applies to rules and to answer().
    answer_delay_ms: int = 0
    #: How jobs are handed to the tool (pooled turns, a one-shot command).
    jobs: JobRecipe = field(default_factory=JobRecipe)

    def rules_by_priority(self) -> tuple[StateRule, ...]:
        return tuple(sorted(self.states, key=lambda r: -r.priority))
