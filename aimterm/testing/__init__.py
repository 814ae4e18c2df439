"""Test helpers for driving real agent CLIs offline.

:class:`FakeModel` is a local HTTP server that speaks the model APIs the agent CLIs use
(OpenAI chat completions, the OpenAI responses API, Anthropic messages and Gemini
``generateContent``) and answers deterministically. See :mod:`aimterm.testing.fakemodel`.
"""

from __future__ import annotations

from .fakemodel import (
    EDIT_TOOL_NAMES,
    PARAM_NAMES,
    SHELL_TOOL_NAMES,
    DeclaredTool,
    FakeModel,
    RecordedRequest,
    ToolCall,
    default_reply,
    iter_sse,
)

__all__ = [
    "EDIT_TOOL_NAMES",
    "PARAM_NAMES",
    "SHELL_TOOL_NAMES",
    "DeclaredTool",
    "FakeModel",
    "RecordedRequest",
    "ToolCall",
    "default_reply",
    "iter_sse",
]
