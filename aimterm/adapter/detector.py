"""Rule evaluation: which state a screen shows, which dialog or question is on it.

Pure functions of (adapter, lines, cursor row, title): no processes, no clocks, so the live
session and the replay of a recording (``adapter explain``) run the very same code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from aimterm.adapter.spec import AdapterSpec, AnswerRule, Dialog, Region, StateRule
from aimterm.term.matcher import line_of


class Verdict(NamedTuple):
    """What the rules say the screen shows. ``state`` is None when no rule fires. (A named
    tuple: made on every screen update, and cheaper than a frozen dataclass.)"""

    state: str | None
    rule: StateRule | None = None
    text: str = ""  # the line the deciding pattern matched (or the title)
    matched: str = ""  # just what the pattern matched: the question's identity, without echo

    @property
    def rule_name(self) -> str | None:
        return self.rule.name if self.rule else None


NO_VERDICT = Verdict(None)


@dataclass(frozen=True)
class Found:
    """A dialog or answer rule whose pattern is on screen."""

    rule: Dialog | AnswerRule
    match: re.Match[str]
    text: str  # the whole line(s) the match touches


#: How much of the end of each stream line the rules see (``TextTail.tails``). A prompt, a
#: spinner or a question is short and sits at the end of its line; a line of megabytes with no
#: newline yet (a tool dumping a file) would otherwise be searched whole on every read, in time
#: that grows with its square. (A screen's lines are as long as it is wide.)
MATCH_TAIL = 4096


def _region_text(region: Region, lines: Sequence[str], cursor_row: int,
                 cache: dict[int, str]) -> str:
    # Keyed by identity: hashing a frozen dataclass costs more than the lookup saves.
    text = cache.get(id(region))
    if text is None:
        text = "\n".join(region.select(lines, cursor_row))
        cache[id(region)] = text
    return text


class Detector:
    """Evaluates one adapter's rules. Cheap to call on every screen update."""

    def __init__(self, spec: AdapterSpec) -> None:
        self.spec = spec
        self._rules = spec.rules_by_priority()
        self.idle_patterns = tuple(p for r in spec.states if r.state == "idle" for p in r.any)

    def evaluate(self, lines: Sequence[str], cursor_row: int = -1, title: str = "") -> Verdict:
        cache: dict[int, str] = {}
        for rule in self._rules:
            text = _region_text(rule.region, lines, cursor_row, cache)
            hit = _rule_hit(rule, text, title)
            if hit is not None:
                return Verdict(rule.state, rule, hit[0], hit[1])
        return NO_VERDICT

    def find_dialog(self, lines: Sequence[str], cursor_row: int = -1) -> Found | None:
        found = self.find_dialogs(lines, cursor_row)
        return found[0] if found else None

    def find_dialogs(self, lines: Sequence[str], cursor_row: int = -1) -> list[Found]:
        """Every start-up dialog on screen, in file order (one screen can match several: a
        later dialog may quote an earlier one's text)."""
        return self._find(self.spec.startup.dialogs, lines, cursor_row)

    def find_answer(self, lines: Sequence[str], cursor_row: int = -1) -> Found | None:
        """The first answer rule whose pattern matches and whose ``when`` conditions hold."""
        found = self.find_answers(lines, cursor_row)
        return found[0] if found else None

    def find_answers(self, lines: Sequence[str], cursor_row: int = -1) -> list[Found]:
        return self._find(self.spec.answers, lines, cursor_row)

    def _find(self, rules: Sequence[Dialog | AnswerRule], lines: Sequence[str],
              cursor_row: int) -> list[Found]:
        cache: dict[int, str] = {}
        out: list[Found] = []
        for rule in rules:
            text = _region_text(rule.region, lines, cursor_row, cache)
            m = rule.match.search(text)
            if m is None:
                continue
            if isinstance(rule, AnswerRule) and not _when_holds(rule, m):
                continue
            out.append(Found(rule, m, line_of(text, m)))
        return out


def _rule_hit(rule: StateRule, text: str, title: str) -> tuple[str, str] | None:
    """(the line, the matched text) that made ``rule`` fire, or None if it does not."""
    hit: tuple[str, str] | None = None
    if rule.any or rule.title is not None:
        for pattern in rule.any:
            m = pattern.search(text)
            if m:
                hit = (line_of(text, m), m.group(0))
                break
        if hit is None and rule.title is not None and rule.title.search(title):
            hit = (f"title: {title}", title)
        if hit is None:
            return None
    for pattern in rule.all:
        m = pattern.search(text)
        if m is None:
            return None
        if hit is None:
            hit = (line_of(text, m), m.group(0))
    for pattern in rule.not_:
        if pattern.search(text):
            return None
    return hit if hit is not None else ("", "")


def _when_holds(rule: AnswerRule, m: re.Match[str]) -> bool:
    groups = m.groupdict()
    for name, pattern in rule.when:
        value = groups.get(name)
        if value is None or not pattern.search(value):
            return False
    return True
