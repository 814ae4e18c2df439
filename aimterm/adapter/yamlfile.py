"""Plain YAML files read with the line of every key, for config files outside the adapters.

:func:`parse_yaml` returns the data (plain dicts, lists and scalars, as written) and a map
from key paths (``("instances", 0, "count")``) to 1-based lines, so a checker in a higher
layer can report ``path:line: key: what was expected`` without importing YAML itself.
The adapter loader builds on the same :class:`LineBuilder`: keys are kept as written (``on:``
stays the string ``"on"``), duplicate keys and self-referencing aliases are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from aimterm.errors import ConfigError

__all__ = ["KeyPath", "LineBuilder", "YamlFile", "dump_yaml", "format_key", "node_line",
           "parse_yaml", "yaml_config_error"]

KeyPath = tuple["str | int", ...]


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
    """``("instances", 0, "count")`` → ``instances[0].count``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
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
                return self._constructor.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise yaml_config_error(exc, self.path) from None
            except ValueError as exc:
                raise ConfigError(f"bad value: {exc}", path=self.path, line=node_line(node),
                                  key=format_key(key) or "yaml") from None
        finally:
            self._active.discard(id(node))


def yaml_config_error(exc: yaml.YAMLError, path: str) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 1
        return ConfigError(exc.problem or exc.context or "invalid YAML", path=path, line=line,
                           key="yaml")
    return ConfigError(str(exc), path=path, line=1, key="yaml")


def parse_yaml(text: str, path: str) -> YamlFile:
    """Parse one YAML document; an empty one is ``None``. Raises :class:`ConfigError`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise yaml_config_error(exc, path) from None
    builder = LineBuilder(path)
    data = None if root is None else builder.build(root, ())
    return YamlFile(data=data, lines=builder.lines, path=path)


def dump_yaml(data: Any) -> str:
    """``data`` as a YAML document in the style of the files people write: keys in their
    order, text as is (no ``\\u`` escapes), lines up to 100 columns. Higher layers (``aimterm
    adapter show``) print YAML through this, so PyYAML stays in this layer."""
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))
