"""The agent CLIs' own records of their conversations, read for exact replies.

:mod:`aimterm.records.base` says what a reader (a :class:`~aimterm.records.base.Recorder`)
does; one module per tool reads that tool's format; :mod:`aimterm.records.follow` is how a
session polls one for a turn's reply. An adapter selects one by name with ``reply: {record:
NAME}``; the screen stays the fallback.
"""

from __future__ import annotations

import importlib

from aimterm.records.base import RecordContext, RecordedReply, Recorder, TurnQuery, same_prompt

__all__ = ["RECORDERS", "RecordContext", "RecordedReply", "Recorder", "TurnQuery",
           "recorder_class", "same_prompt"]

#: Name (the adapter's ``reply.record``) -> where its reader is. Imported on first use, so a
#: session of a tool without a record loads none of them.
RECORDERS = {
    "claude": "aimterm.records.claude:ClaudeRecorder",
    "codex": "aimterm.records.codex:CodexRecorder",
    "gemini": "aimterm.records.gemini:GeminiRecorder",
    "aider": "aimterm.records.aider:AiderRecorder",
}


def recorder_class(name: str) -> type[Recorder]:
    """The reader registered as ``name``; KeyError for an unknown one."""
    module, _, attr = RECORDERS[name].partition(":")
    cls: type[Recorder] = getattr(importlib.import_module(module), attr)
    return cls
