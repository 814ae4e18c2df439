"""The typed reads job files and plan files share: each mistake a ConfigError at its line
(or, for data handed over in Python, without one), worded alike in both.

:class:`FileChecker` adds to the cluster file's :class:`~aimterm.config.Checker` what both
kinds of file need: text without NUL characters, bounded lists, adapter names, JSON data.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection
from typing import Any

from aimterm.adapter.schema import NAME_PATTERN
from aimterm.adapter.yamlfile import KeyPath, YamlFile, format_key
from aimterm.config import Checker, got
from aimterm.errors import ConfigError

__all__ = ["FileChecker", "json_tabs"]

_NAME_RE = re.compile(NAME_PATTERN)
_NAME_HELP = "an adapter name (lowercase letters, digits, '.', '_' or '-')"


class FileChecker(Checker):
    """``lines``: False for data handed over in Python (no line is meaningful); ``tools``:
    the adapter names a ``tool`` may take (None: any well-formed name)."""

    def __init__(self, doc: YamlFile, *, lines: bool, tools: Collection[str] | None) -> None:
        super().__init__(doc)
        self.lines = lines
        self.tools = None if tools is None else frozenset(tools)

    def fail(self, key: KeyPath, message: str) -> ConfigError:
        if self.lines:
            return super().fail(key, message)
        return ConfigError(message, path=self.doc.path, key=format_key(key) or None)

    def string(self, value: Any, key: KeyPath) -> str:
        text = super().string(value, key)
        if "\x00" in text:  # no command, path or terminal takes one
            raise self.fail(key, "expected text without NUL characters")
        return text

    def optional(self, value: Any, key: KeyPath) -> str | None:
        return None if value is None else self.string(value, key)

    def bounded(self, value: Any, key: KeyPath, most: int, what: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list of {what}, got {got(value)}")
        if len(value) > most:
            raise self.fail(key + (most,), f"expected at most {most} {what}, got {len(value)}")
        return value

    def strings(self, value: Any, key: KeyPath, most: int, what: str) -> tuple[str, ...]:
        items = self.bounded(value, key, most, what)
        return tuple(self.string(item, key + (i,)) for i, item in enumerate(items))

    def tool(self, value: Any, key: KeyPath) -> str:
        if not isinstance(value, str) or not _NAME_RE.match(value):
            raise self.fail(key, f"expected {_NAME_HELP}, got {got(value)}")
        if self.tools is not None and value not in self.tools:
            raise self.fail(key, f"no adapter named {value!r} (expected one of: "
                                 f"{', '.join(sorted(self.tools)) or 'none'})")
        return value

    def data(self, value: Any, key: KeyPath) -> Any:
        """``value`` if it is JSON data (it goes into records, results and over the wire)."""
        if isinstance(value, dict):
            return {name: self.data(item, key + (name,)) for name, item in value.items()}
        if isinstance(value, list):
            return [self.data(item, key + (i,)) for i, item in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):  # only from Python data
            raise self.fail(key, f"expected a finite number, got {value}")
        if value is None or isinstance(value, (str, int, float)):
            return value
        # A YAML date (2025-11-21) is the usual way here; JSON has none.
        raise self.fail(key, f"expected JSON data (text, numbers, true/false, null, lists, "
                             f"mappings), got {type(value).__name__} {value!s}; quote it")

    def clean(self, value: Any, key: KeyPath) -> Any:
        """Text as one string per character: YAML leaves a JSON surrogate pair
        (``\\ud83d\\ude00``) as two halves, which no terminal or file takes. Python callers'
        tuples and paths become lists and strings."""
        if isinstance(value, str):
            if any("\ud800" <= ch <= "\udfff" for ch in value):
                try:
                    return value.encode("utf-16", "surrogatepass").decode("utf-16")
                except UnicodeDecodeError:
                    raise self.fail(key, "expected text, got a lone UTF-16 surrogate") from None
            return value
        if isinstance(value, dict):
            out = {}
            for name, item in value.items():
                fixed = self.clean(name, key) if isinstance(name, str) else name
                if not isinstance(fixed, str):
                    raise self.fail(key, f"expected text keys, got {got(fixed)}")
                out[fixed] = self.clean(item, key + (name,))
            return out
        if isinstance(value, (list, tuple)):
            return [self.clean(item, key + (i,)) for i, item in enumerate(value)]
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        return value

    def free(self, value: Any, key: KeyPath) -> dict[str, Any]:
        """A mapping of JSON data (metadata)."""
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {got(value)}")
        out: dict[str, Any] = self.data(value, key)
        return out


def json_tabs(text: str) -> str:
    """JSON indented with tabs, made readable as YAML (which refuses tabs as indentation).
    Valid JSON has a tab only between tokens, so spaces in their place change nothing."""
    if "\t" not in text or text.lstrip()[:1] not in ("{", "["):
        return text
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return text  # not JSON: the YAML reader says what is wrong
    return text.replace("\t", " ")
