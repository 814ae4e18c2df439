"""Plain YAML files read with the line of every key, for config files outside the adapters.

:func:`parse_yaml` returns the data (plain dicts, lists and scalars, as written) and a map
from key paths (``("instances", 0, "count")``) to 1-based lines, so a checker in a higher
layer can report ``path:line: key: what was expected`` without importing YAML itself.
The adapter loader builds on the same :class:`LineBuilder`: keys are kept as written (``on:``
stays the string ``"on"``), duplicate keys and self-referencing aliases are errors.

Every file read here is bounded while it is read and composed, before memory grows: at most
:data:`MAX_YAML_BYTES`, :data:`MAX_YAML_DEPTH` levels of mappings and lists, and
:data:`MAX_YAML_NODES` values once every alias is expanded (so an alias "bomb" is refused
after a few thousand steps, not after gigabytes). Non-finite numbers (``.nan``, ``.inf``,
``1e999``) are refused too: no setting of either format takes one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from aimterm.errors import ConfigError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "KeyPath", "LineBuilder",
           "YamlFile", "build_yaml", "compose_yaml", "dump_yaml", "format_key", "node_line",
           "parse_yaml", "read_yaml_file", "yaml_config_error"]

KeyPath = tuple["str | int", ...]

#: The largest adapter or cluster file read; the shipped ones are under 10 KiB.
MAX_YAML_BYTES = 1 << 20
#: The deepest nesting of mappings and lists; the formats themselves nest at most 6 levels.
MAX_YAML_DEPTH = 64
#: The most values (mappings, lists and scalars) a document may expand into, every use of an
#: alias counting as a copy of what it names; the shipped files have under 200.
MAX_YAML_NODES = 10_000

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1


@dataclass
class YamlFile:
    """The data of a YAML file and the line of every key path in it (``()`` is line 1)."""

    data: Any
    lines: dict[KeyPath, int]
    path: str

    def line(self, key: KeyPath) -> int:
        """The line of ``key``, or of its nearest ancestor that has one."""
        while key not in self.lines:
            key = key[:-1]
        return self.lines[key]


def format_key(path: KeyPath) -> str:
    """``("instances", 0, "count")`` → ``instances[0].count``; a key that is not printable
    text is quoted (``env['A\\nB']``), so a message stays on one line."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.isprintable():
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def node_line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class LineBuilder:
    """Turns a composed YAML node tree into plain data plus a key-path -> line map."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: dict[KeyPath, int] = {(): 1}
        self._constructor = SafeConstructor()
        self._active: set[int] = set()

    def _bad_number(self, node: Node, key: KeyPath, expected: str) -> ConfigError:
        text = str(node.value)
        text = text if len(text) <= 40 else text[:37] + "..."
        return ConfigError(f"expected {expected}, got {text}", path=self.path,
                           line=node_line(node), key=format_key(key) or "yaml")

    def build(self, node: Node, key: KeyPath) -> Any:
        if id(node) in self._active:
            raise ConfigError("a YAML alias refers to itself", path=self.path,
                              line=node_line(node), key=format_key(key) or "yaml")
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                out: dict[str, Any] = {}
                for key_node, value_node in node.value:
                    if not isinstance(key_node, ScalarNode):
                        raise ConfigError("expected a plain text key", path=self.path,
                                          line=node_line(key_node), key=format_key(key) or None)
                    name = str(key_node.value)
                    sub = key + (name,)
                    if name in out:
                        raise ConfigError(f"duplicate key {name!r}", path=self.path,
                                          line=node_line(key_node), key=format_key(sub))
                    self.lines[sub] = node_line(key_node)
                    out[name] = self.build(value_node, sub)
                return out
            if isinstance(node, SequenceNode):
                items = []
                for index, child in enumerate(node.value):
                    self.lines[key + (index,)] = node_line(child)
                    items.append(self.build(child, key + (index,)))
                return items
            try:
                value = self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise yaml_config_error(exc, self.path) from None
            except (ValueError, OverflowError) as exc:
                raise ConfigError(f"bad value: {exc}", path=self.path, line=node_line(node),
                                  key=format_key(key) or "yaml") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise self._bad_number(node, key, "a finite number")
            # Hex and binary integers escape Python's limit on digits; past 64 bits even
            # printing one in a message fails, and no setting counts that far.
            if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
                raise self._bad_number(node, key, "an integer of at most 64 bits")
            return value
        finally:
            self._active.discard(id(node))


class _Refused(yaml.MarkedYAMLError):  # type: ignore[misc]
    """A document past one of the bounds, raised by the composer at the node that crossed it."""


class _BoundedLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A SafeLoader whose composer counts, as it goes, the nesting depth and the values the
    document expands into, and stops at the first node past a bound.

    The stock composer shares an aliased node, so composing a bomb is cheap; the cost comes
    when the tree is built into data, one copy per use. Each anchored node's expanded size and
    height is therefore kept, and a use of its alias adds them to the running totals.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0  # mappings and lists open around the node being composed
        self._deepest = 0  # the deepest level reached, aliases expanded, in the open node
        self._count = 0  # values so far, aliases expanded
        self._sizes: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (values, height)

    def _grow(self, values: int, depth: int, mark: Any) -> None:
        self._count += values
        self._deepest = max(self._deepest, depth)
        if depth > MAX_YAML_DEPTH:
            raise _Refused(problem=f"nested more than {MAX_YAML_DEPTH} levels deep "
                                   f"(expected at most {MAX_YAML_DEPTH} levels of mappings "
                                   "and lists)", problem_mark=mark)
        if self._count > MAX_YAML_NODES:
            raise _Refused(problem=f"expands into more than {MAX_YAML_NODES} values, every "
                                   f"use of an alias counted (expected at most "
                                   f"{MAX_YAML_NODES})", problem_mark=mark)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                if id(target) not in self._sizes:  # still open: the alias is inside it
                    raise _Refused(problem="a YAML alias refers to itself",
                                   problem_mark=event.start_mark)
                values, height = self._sizes[id(target)]
                self._grow(values, self._depth + height, event.start_mark)
            return super().compose_node(parent, index)
        levels = int(isinstance(event, (MappingStartEvent, SequenceStartEvent)))
        before, outer = self._count, self._deepest
        self._depth += levels
        self._deepest = self._depth
        self._grow(1, self._depth, event.start_mark)
        node: Node = super().compose_node(parent, index)
        if event.anchor is not None:
            self._sizes[id(node)] = (self._count - before, self._deepest - self._depth + levels)
        self._depth -= levels
        self._deepest = max(outer, self._deepest)
        return node


def _line_at(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _too_big(path: str, line: int) -> ConfigError:
    return ConfigError(f"the file goes on past {MAX_YAML_BYTES} bytes (expected at most "
                       f"{MAX_YAML_BYTES / (1 << 20):g} MiB of YAML)", path=path, line=line,
                       key="yaml")


def read_yaml_file(path: str, what: str = "file") -> str:
    """The text of the ``what`` at ``path``, reading at most :data:`MAX_YAML_BYTES` (and one
    byte more to tell it goes on). Raises :class:`ConfigError`."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what}: {exc.strerror or exc}", path=path) from None
    if len(data) > MAX_YAML_BYTES:
        raise _too_big(path, data.count(b"\n", 0, MAX_YAML_BYTES) + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", path=path,
                          line=data.count(b"\n", 0, exc.start) + 1) from None


def yaml_config_error(exc: yaml.YAMLError, path: str, text: str | None = None) -> ConfigError:
    """``exc`` as one line ``path:line: yaml: problem`` (PyYAML's own text spans lines)."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = _line_at(text, exc.position) if text is not None else 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return ConfigError(f"unacceptable character #x{char:04x}: {exc.reason}",
                           path=path, line=line, key="yaml")
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        return ConfigError(exc.problem or exc.context or "invalid YAML", path=path, line=line,
                           key="yaml")
    return ConfigError(str(exc), path=path, line=1, key="yaml")


def _too_deep(path: str) -> ConfigError:
    # Only reached if a bound above is raised past what the interpreter's stack can take.
    return ConfigError("nested too deeply to read", path=path, line=1, key="yaml")


def compose_yaml(text: str, path: str) -> Node | None:
    """The node tree of one YAML document (``None`` when empty), within the bounds above.
    Raises :class:`ConfigError`."""
    if len(text) > MAX_YAML_BYTES:
        raise _too_big(path, _line_at(text, MAX_YAML_BYTES))
    if len(text) * 4 > MAX_YAML_BYTES:  # up to 4 bytes a character: measure it
        data = text.encode("utf-8", "surrogatepass")
        if len(data) > MAX_YAML_BYTES:
            raise _too_big(path, data.count(b"\n", 0, MAX_YAML_BYTES) + 1)
    try:
        loader = _BoundedLoader(text)  # checks the characters of a text at once
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise yaml_config_error(exc, path, text) from None
    except RecursionError:
        raise _too_deep(path) from None


def build_yaml(root: Node | None, path: str) -> YamlFile:
    """Plain data and key lines of a tree from :func:`compose_yaml`."""
    builder = LineBuilder(path)
    try:
        data = None if root is None else builder.build(root, ())
    except RecursionError:
        raise _too_deep(path) from None
    return YamlFile(data=data, lines=builder.lines, path=path)


def parse_yaml(text: str, path: str) -> YamlFile:
    """Parse one YAML document; an empty one is ``None``. Raises :class:`ConfigError`."""
    return build_yaml(compose_yaml(text, path), path)


def dump_yaml(data: Any) -> str:
    """``data`` as a YAML document in the style of the files people write: keys in their
    order, text as is (no ``\\u`` escapes), lines up to 100 columns. Higher layers (``aimterm
    adapter show``) print YAML through this, so PyYAML stays in this layer."""
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
