"""Which questions were answered a moment ago: so a question is answered once, not on every
redraw, and again if its keys were lost. Pure, on the caller's clock."""

from __future__ import annotations

from collections.abc import Sequence

#: How long an answered question is remembered even if it leaves the screen (redraw flicker).
MARK_HOLD_S = 1.0
#: An answered question still on screen after this long is answered again (keys were lost).
ANSWER_RETRY_S = 3.0


class AnswerMarks:
    """Rule name -> (what it answered, when), until the question leaves the screen."""

    def __init__(self, hold_s: float = MARK_HOLD_S, retry_s: float = ANSWER_RETRY_S) -> None:
        self.hold_s = hold_s
        self.retry_s = retry_s
        self._marks: dict[str, tuple[str, float]] = {}

    def __len__(self) -> int:
        return len(self._marks)

    def clear(self) -> None:
        self._marks.clear()

    def take(self, rule: str, seen: str, now: float) -> bool:
        """Whether to answer ``seen`` (what the rule's pattern matched) now; if so, it is
        marked answered. False while this very question was answered less than ``retry_s``
        ago: the tool has not redrawn yet. (Still there after that, its keys were lost —
        some CLIs drop keys that arrive while they are still drawing the dialog.)"""
        mark = self._marks.get(rule)
        if mark is not None and mark[0] == seen and now - mark[1] < self.retry_s:
            return False
        self._marks[rule] = (seen, now)
        return True

    def forget_gone(self, lines: Sequence[str], now: float) -> None:
        """An answered question that left the screen may be answered again if it comes back —
        but not when it only flickered away during a redraw right after the answer (Ink-based
        CLIs redraw whole regions), so a mark is kept ``hold_s`` after its answer."""
        if not self._marks:
            return
        text = "\n".join(lines)
        for rule, (seen, at) in list(self._marks.items()):
            if seen not in text and now - at > self.hold_s:
                del self._marks[rule]
