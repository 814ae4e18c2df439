"""aider's record of its conversation: the markdown chat history, and the LLM log beside it.

Findings (aider-chat 0.86.2, the pin, and 0.80.4: the same format, except that 0.86.2 also
makes missing parent folders and survives an unwritable LLM log; aider's ``io.py``,
``coders/base_coder.py``, ``utils.py``, ``args.py``):

* **Where.** ``--chat-history-file PATH`` (env ``AIDER_CHAT_HISTORY_FILE``; default
  ``<git root>/.aider.chat.history.md``, or ``./.aider.chat.history.md`` outside a repository).
  The default is shared by every aider that runs in the repository, appended line by line, with
  no session or instance id in it: two instances in one folder interleave. So this recorder
  gives each instance its own file in its private dir (:data:`CHAT_FILE`), passed on the
  command line so it beats the user's config and environment. ``--llm-history-file PATH``
  (default none) logs every request and response; the recorder points it at
  :data:`LLM_FILE` beside it (unless the user set ``AIDER_LLM_HISTORY_FILE``: theirs is then
  read, never truncated).
* **Chat history format** (``InputOutput.append_chat_history``; every write opens the file
  in append mode)::

      \\n# aider chat started at 2026-12-06 22:04:18\\n\\n       (each start)
      > tool output, confirmations, warnings  \\n             (two trailing spaces)
      \\n#### the prompt, one "#### " line per line  \\n      (user_input, as typed)
      \\nthe model's text, markdown as written (stripped)\\n\\n    (ai_output, one per request)
      > Tokens: 766 sent, 12 received. Cost: $0.00079 message, $0.00079 session.  \\n

  The text is raw markdown (backticks kept, lines unwrapped); aider adds nothing to it but
  its own reasoning tags (``<thinking-content-…>``) for models that stream reasoning. It is
  not delimited: a model line that looks like aider's own ("> …  ", "#### …  ") is
  ambiguous — aider's ``--restore-chat-history`` parser has the same limit. Usage is one
  "Tokens:" line per request, the figures the screen shows: the provider's usage when its
  stream reports it, else aider's own count (so with the fake model, which is not asked for
  usage); over 999 rounded (``1.2k``, ``12k``); "cache write"/"cache hit" parts where reported.
  "Cost:" only when aider knows the model's prices, about two significant digits, on its own
  unquoted line when both cache parts are there. A request per turn, more when aider
  reflects (a malformed edit, files it offered to add, lint errors): each adds a text and a
  Tokens line, with no new "####" line. ``/ask X`` (``/code``, ``/architect``) adds "#### X".
* **LLM log format** (``InputOutput.log_llm_history``): ``TO LLM <iso time>`` then every
  message of the request as ``-------`` and ``ROLE line`` lines, then ``LLM RESPONSE <iso
  time>`` and each line of the response as ``ASSISTANT <line>``. Exact and unambiguous (the
  role prefix is on every line; indentation and trailing spaces kept; only the line breaks at
  either end are lost), but no usage, and big: each request logs the whole context again. So
  the text comes from here when the chat history holds the same text at the turn's place (a
  check that also keeps out anything not of this turn, and finds "####" lines of the model's
  that look like prompts), and from the chat history alone otherwise. The recorder empties
  its own log at each start and once all of it is read.
* **When.** aider writes the log, then the text, then the Tokens line, all before its final
  render of the reply: measured at 24×80 with the fake model, each turn's Tokens line was in
  the file 5-9 ms before the screen's last output and ~105 ms before the session saw IDLE
  (settle 100 ms): the first poll finds it. Nothing is written after the prompt is back.
* **One instance.** The private paths above: no file is shared, nothing is guessed. This run
  reads from where the file ended when the recorder was made, so earlier runs' turns (kept
  for resume) are never taken for this run's.
* **Resume.** The adapter's ``resume: [--restore-chat-history]`` makes aider read the chat
  history file it is given — this instance's own, so an instance resumes its own conversation,
  not a mix of all instances in the folder. aider re-sends it as context and writes nothing
  back. The user's ``.aider.chat.history.md`` in the repository is no longer written by
  instances with this record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aimterm.records.base import RecordContext, RecordedReply, Recorder, TurnQuery, same_prompt
from aimterm.records.tail import FileTail

__all__ = ["CHAT_FILE", "LLM_FILE", "AiderRecorder", "ChatHistory", "ChatTurn", "LlmLog",
           "parse_count", "parse_usage", "split_turns", "turn_reply"]

CHAT_FILE = "aider.chat.history.md"
LLM_FILE = "aider.llm.history"

#: The tags aider itself puts around streamed reasoning (aider/reasoning_tags.py).
_REASONING_TAG = "thinking-content-7bbeb8e1441453ad999a0bbba8a46d4b"
_REASONING = re.compile(f"<{_REASONING_TAG}>.*?</{_REASONING_TAG}>", re.DOTALL)
_USER = re.compile(r"^#### .*  $")
_TOKENS = re.compile(
    r"^> Tokens: (?P<sent>[\d.]+k?) sent"
    r"(?:, (?P<cache_write>[\d.]+k?) cache write)?(?:, (?P<cache_hit>[\d.]+k?) cache hit)?"
    r", (?P<received>[\d.]+k?) received\.")
_COST = re.compile(r"Cost: \$(?P<message>[\d.]+) message, \$(?P<session>[\d.]+) session\.")
_LLM_HEADER = re.compile(r"^(?:TO LLM|LLM RESPONSE) \d{4}-\d\d-\d\dT")


# -- the LLM log --------------------------------------------------------------------------------


class LlmLog:
    """The responses of an LLM log, in order, fed line by line (the requests are skipped)."""

    def __init__(self) -> None:
        self.responses: list[list[str]] = []
        self._in_response = False

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            if _LLM_HEADER.match(line):
                self._in_response = line.startswith("LLM RESPONSE")
                if self._in_response:
                    self.responses.append([])
            elif self._in_response and line.startswith("ASSISTANT "):
                self.responses[-1].append(line[len("ASSISTANT "):])

    def texts(self) -> list[str]:
        return ["\n".join(lines) for lines in self.responses]

    def drop(self, n: int) -> None:
        """Forget the first ``n`` responses (read, or never to be read)."""
        keep_open = self._in_response and n >= len(self.responses)
        del self.responses[:n]
        if keep_open:
            self.responses.append([])


# -- the chat history ---------------------------------------------------------------------------


@dataclass
class ChatTurn:
    """One "####" prompt block of the chat history."""

    prompt: str
    #: Where its first "####" line starts in :attr:`ChatHistory.text`.
    start: int
    #: Where the lines after its "####" lines start.
    body: int


class ChatHistory:
    """The chat history of this run as one text, fed line by line, and the prompt blocks in
    it that are not read yet. A prompt line ends with aider's two spaces and its block follows
    a blank line; a model's "#### heading" has neither as a rule, and one that does is found
    out when the LLM log's text spans it (:func:`turn_reply`)."""

    def __init__(self) -> None:
        self.text = ""
        self.turns: list[ChatTurn] = []
        self._previous: str | None = None
        self._in_prompt = False

    def feed(self, lines: Iterable[str]) -> None:
        pieces: list[str] = []
        pos = len(self.text)
        for line in lines:
            if _USER.match(line) and (self._in_prompt or self._previous in (None, "")):
                prompt = line[len("#### "):].removesuffix("  ")
                if self._in_prompt:
                    self.turns[-1].prompt += "\n" + prompt
                    self.turns[-1].body = pos + len(line) + 1
                else:
                    self.turns.append(ChatTurn(prompt, pos, pos + len(line) + 1))
                self._in_prompt = True
            else:
                self._in_prompt = False
            pieces.append(line + "\n")
            pos += len(line) + 1
            self._previous = line
        self.text += "".join(pieces)

    def end_of(self, i: int) -> int:
        """Where turn ``i``'s part of the text ends (the next prompt block, or the end)."""
        return self.turns[i + 1].start if i + 1 < len(self.turns) else len(self.text)

    def forget(self, n: int) -> None:
        """Drop the first ``n`` turns and the text before the next one."""
        cut = self.end_of(n - 1)
        del self.turns[:n]
        self.text = self.text[cut:]
        for turn in self.turns:
            turn.start -= cut
            turn.body -= cut


def split_turns(lines: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Each prompt of the chat history ``lines`` with the lines up to the next one (lines
    before the first prompt — aider's start-up messages — belong to no turn)."""
    history = ChatHistory()
    history.feed(lines)
    return [(t.prompt, history.text[t.body:history.end_of(i)].splitlines())
            for i, t in enumerate(history.turns)]


def parse_count(text: str) -> int:
    """aider's token count: ``766``, ``1.2k``, ``12k`` (rounded above 999)."""
    if text.endswith("k"):
        return round(float(text[:-1]) * 1000)
    return int(float(text))


def parse_usage(lines: Sequence[str]) -> tuple[dict[str, int], float | None]:
    """The tokens and cost of the "> Tokens:" reports among ``lines``, summed (one report per
    request of the turn)."""
    tokens: dict[str, int] = {}
    cost: float | None = None
    names = {"sent": "input", "received": "output", "cache_write": "cache_write",
             "cache_hit": "cache_read"}
    for i, line in enumerate(lines):
        m = _TOKENS.match(line)
        if not m:
            continue
        for group, name in names.items():
            if m[group] is not None:
                tokens[name] = tokens.get(name, 0) + parse_count(m[group])
        # "Cost:" follows on the same line, or alone on the next when both cache parts show.
        c = _COST.search(line[m.end():]) or (
            _COST.match(lines[i + 1]) if i + 1 < len(lines) else None)
        if c:
            cost = round((cost or 0.0) + float(c["message"]), 10)
    return tokens, cost


def _clean(text: str) -> str:
    """A text as the model wrote it: aider's reasoning block (its own tags) and the line breaks
    around the text go; spaces stay (indentation, a trailing space)."""
    if _REASONING_TAG in text:
        text = _REASONING.sub("", text)
        closing = f"</{_REASONING_TAG}>"
        if closing in text:
            text = text.split(closing, 1)[1]
        text = text.lstrip()
    return text.strip("\n") if text.strip() else ""


def _ends_block(line: str, previous: str) -> bool:
    # After the text aider writes a blank line and then its own lines ("> …  ").
    return previous == "" and (line.startswith("> Tokens: ")
                               or (line.startswith(">") and line.endswith("  ")))


def _guess_texts(lines: Sequence[str], closed: bool) -> list[str] | None:
    """The model's texts among a turn's lines from the chat history alone: each starts at the
    first line that is not aider's and runs until aider's next line after a blank one. None
    while the last text may still be growing."""
    texts: list[str] = []
    current: list[str] | None = None
    for line in lines:
        if current is None:
            if line == "" or line.startswith(">") or _COST.match(line):
                continue
            current = [line]
        elif _ends_block(line, current[-1]):
            texts.append("\n".join(current))
            current = None
        else:
            current.append(line)
    if current is not None:
        if not closed:
            return None
        texts.append("\n".join(current))
    return texts


def _find_text(history: ChatHistory, i: int, text: str, pos: int) -> int:
    """Where ``text`` (stripped, as aider wrote it) ends in the chat history as a block that
    starts in turn ``i`` at or after ``pos`` and that aider closed — its own next line
    follows, or the end of a turn that is over; -1 if it is not there (yet)."""
    full, limit = history.text, history.end_of(i)
    needle = "\n" + text + "\n"
    at = full.find(needle, pos - 1)
    while 0 <= at < limit:
        end = at + 1 + len(text)
        after = full[end:end + 3]
        if after == "\n\n>":
            return end
        # The last thing in a turn that is over (aider wrote no usage line after it).
        if i + 1 < len(history.turns) and not full[end:limit].strip():
            return end
        at = full.find(needle, at + 1)
    return -1


def turn_reply(history: ChatHistory, i: int,
               responses: Sequence[str]) -> tuple[list[str], int, dict[str, int],
                                                  float | None] | None:
    """Turn ``i``'s texts, how many of ``responses`` (the LLM log's, oldest first, none of an
    earlier turn) they used up, and its tokens and cost; None while it is not all written.

    A response is this turn's when the chat history holds it, stripped, as a block of this
    turn. A prompt block inside it was the model's text, not a prompt: it is dropped. Responses
    before the first one found were never written to the chat history (empty ones) and are
    used up with it. Without any, the texts come from the chat history alone."""
    turn = history.turns[i]
    # "/ask X" (/code, /architect, /context) writes X as a "####" block of its own.
    command = turn.prompt.split(None, 1) if turn.prompt.startswith("/") else []
    while len(command) == 2 and i + 1 < len(history.turns) and \
            same_prompt(history.turns[i + 1].prompt, command[1]):
        del history.turns[i + 1]
        command = []
    texts: list[str] = []
    spans: list[tuple[int, int]] = []
    used, pos = 0, turn.body
    for k, response in enumerate(responses):
        text = response.strip()
        if not text:
            continue
        end = _find_text(history, i, text, pos)
        if end < 0:
            if texts:
                break
            continue
        texts.append(response)
        spans.append((end - len(text), end))
        used, pos = k + 1, end
        # "####" lines the text holds were not prompts.
        while i + 1 < len(history.turns) and history.turns[i + 1].start < end:
            del history.turns[i + 1]
    limit = history.end_of(i)
    outside, at = [], turn.body
    for a, b in spans:
        outside.append(history.text[at:a])
        at = b
    outside.append(history.text[at:limit])
    lines = "".join(outside).splitlines()
    if not texts:
        guessed = _guess_texts(history.text[turn.body:limit].splitlines(),
                               i + 1 < len(history.turns))
        if guessed is None:
            return None
        texts = guessed
    tokens, cost = parse_usage(lines)
    return texts, used, tokens, cost


# -- the recorder -------------------------------------------------------------------------------


class AiderRecorder(Recorder):
    """Each instance's own chat history (and LLM log) in its private dir (see the module doc)."""

    name = "aider"

    def __init__(self, ctx: RecordContext) -> None:
        super().__init__(ctx)
        self.chat_path = ctx.private_dir / CHAT_FILE
        user_log = ctx.env.get("AIDER_LLM_HISTORY_FILE")
        self._own_log = not user_log
        if user_log:
            self.llm_path = Path(ctx.cwd, user_log)
            self._llm = FileTail.at_end(self.llm_path, keep_blank=True)
        else:
            self.llm_path = ctx.private_dir / LLM_FILE
            try:  # a log of this run only: it repeats the whole context at every request
                self.llm_path.write_bytes(b"")
            except OSError:
                pass
            self._llm = FileTail(self.llm_path, keep_blank=True)
        self._chat = FileTail.at_end(self.chat_path, keep_blank=True)
        self._log = LlmLog()
        self._history = ChatHistory()
        self._passed = 0  # prompt blocks of this run read (or passed by) and forgotten

    def launch_args(self) -> list[str]:
        args = ["--chat-history-file", str(self.chat_path)]
        if self._own_log:
            args += ["--llm-history-file", str(self.llm_path)]
        return args

    def _update(self) -> bool:
        # The chat history first: aider writes a response to its log before the chat
        # history, so a text seen there is complete in the log read after it.
        got = self._chat.read()
        if got is None:
            return False
        lines, restarted = got
        if restarted:
            self._history, self._passed = ChatHistory(), 0
        self._history.feed(_text(lines))
        logged = self._llm.read()
        if logged is not None:
            if logged[1]:
                self._log = LlmLog()
            self._log.feed(_text(logged[0]))
        # More of a file than one call reads: decide on the next poll, with all of it.
        return not (self._chat.behind or self._llm.behind)

    def _find(self, turn: TurnQuery) -> int | None:
        turns = self._history.turns
        forms = _typed_forms(turn.prompt)
        # The turn's own number first (a prompt typed twice), then the next matching one
        # (something else was typed in between).
        ordinal = turn.number - 1 - self._passed
        if 0 <= ordinal < len(turns) and _matches(turns[ordinal].prompt, forms):
            return ordinal
        for i, candidate in enumerate(turns):
            if _matches(candidate.prompt, forms):
                return i
        return None

    def _use(self, n: int, responses: int) -> None:
        self._log.drop(responses)
        self._history.forget(n)
        self._passed += n

    def reply(self, turn: TurnQuery) -> RecordedReply | None:
        if not self._update():
            return None
        while (index := self._find(turn)) is not None and index > 0:
            # An earlier turn never asked for: its texts are used up first (and a "prompt"
            # found inside one of them was not a prompt).
            earlier = turn_reply(self._history, 0, self._log.texts())
            if earlier is None:
                return None
            self._use(1, earlier[1])
        if index is None:
            return None
        found = turn_reply(self._history, 0, self._log.texts())
        if found is None:
            return None
        texts, used, tokens, cost = found
        text = "\n\n".join(t for t in map(_clean, texts) if t)
        if not text:
            return None
        self._use(1, used)
        self._trim_log()
        return RecordedReply(text=text, tokens=tokens, cost_usd=cost,
                             source=str(self.llm_path if used else self.chat_path))

    def _trim_log(self) -> None:
        # Empty our own log once all of it is read: aider appends (O_APPEND) and writes
        # nothing while its prompt waits, which is when a reply is read.
        if not self._own_log or any(self._log.responses) or not self._llm.at_line_end:
            return
        try:
            if self.llm_path.stat().st_size == self._llm.offset:
                os.truncate(self.llm_path, 0)
                self._llm.offset = 0
                self._log = LlmLog()
        except OSError:
            pass


def _typed_forms(prompt: str) -> list[str]:
    """The typed prompt, and without aider's "{" … "}" multi-line wrapper (its "####" lines
    hold only what is between)."""
    forms = [prompt]
    lines = prompt.strip().splitlines()
    if len(lines) >= 2:
        tag = lines[0].strip()[1:] if lines[0].strip().startswith("{") else None
        if tag is not None and (tag == "" or tag.isalnum()) and lines[-1].strip() == tag + "}":
            forms.append("\n".join(lines[1:-1]))
    return forms


def _matches(recorded: str, forms: list[str]) -> bool:
    return any(same_prompt(recorded, form) for form in forms)


def _text(lines: list[bytes]) -> list[str]:
    return [line.decode("utf-8", "replace") for line in lines]
