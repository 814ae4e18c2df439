"""The adapter's recipes turned into bytes and text: keys to send, replies to cut, metrics.

The session (L3) decides *when*, with :mod:`aimterm.adapter.tracker`; this module knows
*how*: how a key sequence becomes writes with pauses, how the reply is cut out of the screen
or the stream, how metrics are read.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from aimterm.adapter.spec import AdapterSpec, KeyItem, KeySeq
from aimterm.term.keys import bracketed_paste, is_key, key_bytes


@dataclass(frozen=True)
class Write:
    """One write to the terminal, after waiting ``pause_s``."""

    data: bytes
    pause_s: float = 0.0


def key_writes(keys: KeySeq, *, gap_ms: int, paste_ok: bool = True) -> list[Write]:
    """Turn a key sequence into writes: each item its own write, ``gap_ms`` apart.

    Separate writes matter: several CLIs treat an Enter that arrives in the same read as text
    as part of a paste and insert a newline instead of submitting.
    """
    writes: list[Write] = []
    pause = 0.0
    for item in keys:
        if item.kind == "wait":
            pause += item.ms / 1000.0
            continue
        data = _item_bytes(item, paste_ok)
        if not data:
            continue
        if writes and pause == 0.0:
            pause = gap_ms / 1000.0
        writes.append(Write(data, pause))
        pause = 0.0
    return writes


def _item_bytes(item: KeyItem, paste_ok: bool) -> bytes:
    if item.kind == "key":
        return key_bytes(item.value)
    if item.kind == "paste":
        return bracketed_paste(item.value) if paste_ok else item.value.encode("utf-8")
    return item.value.encode("utf-8")


def parse_keys(keys: str | Sequence[str]) -> KeySeq:
    """Keys given by a caller: a string is literal text; in a list, a known key name is that
    key and anything else is text (``["y", "enter"]``)."""
    if isinstance(keys, str):
        return (KeyItem("text", keys),)
    return tuple(KeyItem("key", k.lower()) if is_key(k) else KeyItem("text", k) for k in keys)


#: The key part of each submit recipe, by recipe (checked by identity): the same every turn.
_FIXED: dict[int, tuple[object, int, tuple[Write, ...], tuple[Write, ...]]] = {}


def _fixed_writes(spec: AdapterSpec) -> tuple[tuple[Write, ...], tuple[Write, ...]]:
    """(writes that clear the input, writes that submit): built once per recipe."""
    recipe = spec.submit
    gap = spec.terminal.key_gap_ms
    hit = _FIXED.get(id(recipe))
    if hit is not None and hit[0] is recipe and hit[1] == gap:
        return hit[2], hit[3]
    clear = tuple(key_writes(recipe.clear, gap_ms=gap)) if recipe.clear else ()
    keys = key_writes(recipe.keys, gap_ms=gap)
    if keys:
        keys[0] = Write(keys[0].data, recipe.delay_ms / 1000.0)
    if len(_FIXED) >= 256:  # recipes come and go (tests, reloads): keep it small
        _FIXED.clear()
    _FIXED[id(recipe)] = (recipe, gap, clear, tuple(keys))
    return clear, tuple(keys)


def submit_writes(spec: AdapterSpec, prompt: str, *, paste_ok: bool) -> tuple[list[Write],
                                                                                list[Write]]:
    """(writes that put the prompt in the input, writes that submit it)."""
    recipe = spec.submit
    gap = spec.terminal.key_gap_ms
    clear, keys = _fixed_writes(spec)
    body = list(clear)
    if (recipe.paste == "bracketed" or "\n" in prompt) and paste_ok:
        data = bracketed_paste(prompt)
    else:
        data = prompt.replace("\n", "\r").encode("utf-8")
    body.append(Write(data, gap / 1000.0 if body else 0.0))
    return body, list(keys)


# -- replies ------------------------------------------------------------------------------------


#: The echo of the prompt is looked for among the first lines of a reply only.
_ECHO_WITHIN = 60
#: A marker a tool puts before the echoed prompt ("> ", "❯ ", "│ > "): this many characters
#: at most, none of them a word character.
_MARKER_MAX = 8
_BOX_SIDES = "│┃|"


#: Marks a TUI renders away when it echoes a prompt as markdown (inline code, emphasis):
#: not compared either.
_RENDERED = frozenset("`*")


def _squash(text: str) -> str:
    return "".join(c for c in text if not c.isspace() and c not in _RENDERED)


def _echo_piece(line: str, want: str, got: str) -> str | None:
    """The part of ``line`` that continues the echo ``got`` of the prompt ``want`` (both
    without whitespace): the line less a leading marker and a trailing box side; None when
    it does not continue it."""
    text = _squash(line)
    for cut in range(min(len(text), _MARKER_MAX) + 1):
        if cut and (text[cut - 1].isalnum() or text[cut - 1] == "_"):
            break
        body = text[cut:]
        for piece in (body, body.rstrip(_BOX_SIDES)):
            if piece and want.startswith(got + piece, 0):
                return piece
    return None


def echo_span(lines: Sequence[str], prompt: str) -> tuple[int, int] | None:
    """Where the echo of ``prompt`` is in ``lines``: ``(first, end)`` of the run of lines
    that shows it back, however the tool wrapped it (at words, mid-word, with an indent or a
    marker on each line, inside a box), or None. Whitespace and the marks of rendered markdown
    are not compared: a TUI rewraps, and may render the prompt it echoes."""
    want = _squash(prompt)
    if not want:
        return None
    for first in range(min(len(lines), _ECHO_WITHIN)):
        got = ""
        for end in range(first, len(lines)):
            piece = _echo_piece(lines[end], want, got)
            if piece is None:
                break
            got += piece
            if got == want:
                return first, end + 1
    return None


#: How much of the prompt's end (without whitespace) an input line must show to still hold it.
_TYPED_TAIL = 16


def still_typed(lines: Sequence[str], row: int, prompt: str) -> bool:
    """Whether the input line ``row`` (the cursor's) still ends with ``prompt``: typed, and
    not taken — a tool that took a prompt clears its input. The line may be the last of a
    wrapped prompt, holding only its end; whitespace and a box side are not compared."""
    want = _squash(prompt)
    if not want or not 0 <= row < len(lines):
        return False
    text = _squash(lines[row]).rstrip(_BOX_SIDES)
    return text.endswith(want[-_TYPED_TAIL:]) or (len(text) >= 4 and want.endswith(text))


def clean_reply(spec: AdapterSpec, lines: Sequence[str], prompt: str,
                idle_patterns: Sequence[re.Pattern[str]] = ()) -> str:
    """Apply the adapter's ``reply.strip`` to the lines a turn produced."""
    out = [line.rstrip() for line in lines]
    strip = spec.reply.strip
    if "echo" in strip:
        span = echo_span(out, prompt)
        if span is not None:
            # What is above this turn's echo is the end of the turn before, laid out again.
            del out[:span[1]]
    if spec.reply.start:
        first = next((i for i, line in enumerate(out) if _any_search(spec.reply.start, line)),
                     None)
        if first is not None:
            del out[:first]
    if spec.reply.end:
        # The last such line after some of the reply (the same line drawn above the echo, at
        # the top of the turn, is not an end).
        ends = [_any_search(spec.reply.end, line) for line in out]
        first_text = next((i for i, line in enumerate(out) if line.strip() and not ends[i]),
                          len(out))
        last = max((i for i in range(first_text, len(out)) if ends[i]), default=None)
        if last is not None:
            del out[last:]
    if "redraws" in strip and out:
        out = [line for line, after in zip(out, [*out[1:], ""], strict=True)
               if not (line.strip() and after.startswith(line) and after != line)]
    if "prompt" in strip and idle_patterns:
        while out and (not out[-1].strip() or _any_search(idle_patterns, out[-1])):
            out.pop()
    if "chrome" in strip and spec.reply.chrome:
        chrome = spec.reply.chrome
        out = [line for line in out if not _any_search(chrome, line)]
        # Chrome between paragraphs leaves its blank lines behind: one is enough.
        out = [line for i, line in enumerate(out)
               if line.strip() or i == 0 or out[i - 1].strip()]
    for pattern in spec.reply.trim:
        out = [_cut_start(pattern, line) for line in out]
    while out and not out[0].strip():
        out.pop(0)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)


def _any_search(patterns: Sequence[re.Pattern[str]], line: str) -> bool:
    for pattern in patterns:
        if pattern.search(line):
            return True
    return False


def join_wrapped(lines: Sequence[str], cols: int) -> list[str]:
    """Undo soft wraps: a line that fills every column continues on the next one.

    The screen does not say which line breaks were the tool's and which the terminal's; a
    full-width line is taken as wrapped, which is right for prose and prompts (a line that is
    exactly as wide as the screen by design is joined too: rare, and harmless for matching).
    """
    out: list[str] = []
    carry = ""
    for line in lines:
        if len(line) >= cols and not _is_rule(line):
            carry += line
            continue
        out.append(carry + line)
        carry = ""
    if carry:
        out.append(carry)
    return out


def join_scrollback(scrolled: Sequence[str], screen: Sequence[str]) -> list[str]:
    """The lines that scrolled off the screen, then the screen, without drawing twice what a
    tool redrew: a live area taller than the screen scrolls its top off, where it cannot be
    erased, and the tool draws it again on screen. A screen that starts with the last two or
    more non-blank lines of the scrollback repeats them."""
    for k in range(min(len(scrolled), len(screen)), 1, -1):
        head = list(screen[:k])
        if head == list(scrolled[-k:]) and sum(1 for line in head if line.strip()) >= 2:
            return [*scrolled, *screen[k:]]
    return [*scrolled, *screen]


def _cut_start(pattern: re.Pattern[str], line: str) -> str:
    m = pattern.match(line)
    return line[m.end():] if m else line


def _is_rule(line: str) -> bool:
    """A full-width line of one drawing character (─, ═, -, …) is a border, not wrapped text."""
    return len(set(line)) == 1 or all("\u2500" <= c <= "\u257f" for c in line)


def screen_delta(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """Lines of ``after`` that are new relative to ``before``, in order."""
    matcher = difflib.SequenceMatcher(None, list(before), list(after), autojunk=False)
    ops = matcher.get_opcodes()
    new: list[str] = []
    for k, (tag, _i1, _i2, j1, j2) in enumerate(ops):
        if tag in ("insert", "replace"):
            new.extend(after[j1:j2])
        elif (tag == "equal" and 0 < k < len(ops) - 1
              and not any(line.strip() for line in after[j1:j2])
              and ops[k - 1][0] in ("insert", "replace")
              and ops[k + 1][0] in ("insert", "replace")):
            # Blank lines between two new runs matched blank rows of the old screen: they
            # are the new text's own paragraph breaks.
            new.extend(after[j1:j2])
    return new


def read_metrics(spec: AdapterSpec, text: str) -> dict[str, dict[str, str]]:
    """The last match of each metric pattern in ``text``, as its named groups."""
    found: dict[str, dict[str, str]] = {}
    for name, pattern in spec.metrics:
        last = None
        for m in pattern.finditer(text):
            last = m
        if last is not None:
            found[name] = {k: v for k, v in last.groupdict().items() if v is not None}
    return found
