"""The adapter schema checked without jsonschema: the keywords it uses, in jsonschema's words.

Importing jsonschema costs about 4.5 MB of a controller's memory (its referencing library and
every draft's meta-schema), which is a tenth of a fleet of a hundred idle instances. The adapter
schema uses a handful of keywords; :class:`SubsetValidator` checks exactly those, as JSON Schema
2020-12 does, with jsonschema's messages and order, against the very schema ``aimterm adapter
schema`` publishes. A schema with any other keyword is refused at construction, and the loader
then uses jsonschema itself. ``tests/test_adapter_loader.py`` holds the two to the same errors
on generated documents, so they cannot drift apart unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SubsetValidator"]


class _SchemaError:
    """One violation, with the attributes of a jsonschema ``ValidationError`` read here."""

    __slots__ = ("validator", "absolute_path", "schema", "instance", "message")

    def __init__(self, validator: str, path: tuple[Any, ...], schema: Mapping[str, Any],
                 instance: Any, message: str) -> None:
        self.validator, self.absolute_path, self.schema = validator, path, schema
        self.instance, self.message = instance, message


#: The keywords the adapter schema uses, checked as JSON Schema 2020-12 (with jsonschema's
#: messages) by :class:`SubsetValidator`; the rest only annotate.
_ASSERTING = frozenset({"type", "enum", "properties", "additionalProperties", "required",
                        "items", "minItems", "maxItems", "minLength", "maxLength", "minimum",
                        "maximum", "exclusiveMinimum", "pattern", "minProperties",
                        "maxProperties", "$ref"})
_ANNOTATING = frozenset({"description", "title", "$schema", "$id", "$defs"})


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or isinstance(value, float) and value.is_integer()
    return kind == "number" and isinstance(value, (int, float))


def _too_few(least: int, otherwise: str) -> str:
    """jsonschema's words for a minItems / minLength / minProperties miss."""
    return "should be non-empty" if least == 1 else otherwise


def _too_many(most: int, otherwise: str) -> str:
    """jsonschema's words for a maxItems / maxLength / maxProperties miss."""
    return "is expected to be empty" if most == 0 else otherwise


class SubsetValidator:
    """The adapter schema's checks, in jsonschema's order and words. jsonschema itself costs
    about 4.5 MB of memory to import (its referencing library, every draft's meta-schema);
    the adapter schema uses a handful of keywords, and the tests hold this to jsonschema's
    own errors on generated documents. A keyword it does not know fails at construction."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.root = schema
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._check(schema)

    def _check(self, schema: Any) -> None:
        if not isinstance(schema, dict):
            raise TypeError(f"not a schema the adapter validator takes: {schema!r}")
        unknown = set(schema) - _ASSERTING - _ANNOTATING
        if unknown:
            raise TypeError(f"schema keywords the adapter validator does not check: {unknown}")
        for sub in [*schema.get("properties", {}).values(), *schema.get("$defs", {}).values()]:
            self._check(sub)
        if "items" in schema:
            self._check(schema["items"])
        extra = schema.get("additionalProperties", False)
        if extra is not False:
            self._check(extra)
        if any(not isinstance(v, str) for v in schema.get("enum", ())):
            raise TypeError("enum values other than strings")
        ref = schema.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#/$defs/")):
            raise TypeError(f"a $ref outside #/$defs: {ref!r}")
        if "pattern" in schema:
            self._patterns[schema["pattern"]] = re.compile(schema["pattern"])

    def iter_errors(self, instance: Any) -> Iterable[_SchemaError]:
        return self._errors(instance, self.root, ())

    def _errors(self, value: Any, schema: Mapping[str, Any],
                path: tuple[Any, ...]) -> Iterable[_SchemaError]:
        for kind, arg in schema.items():
            message = None
            if kind == "$ref":
                yield from self._errors(value, self.root["$defs"][arg[len("#/$defs/"):]], path)
            elif kind == "type":
                kinds = [arg] if isinstance(arg, str) else arg
                if not any(_is_type(value, k) for k in kinds):
                    message = f"{value!r} is not of type {', '.join(map(repr, kinds))}"
            elif kind == "enum":
                if not (isinstance(value, str) and value in arg):
                    message = f"{value!r} is not one of {arg!r}"
            elif isinstance(value, dict):
                if kind == "properties":
                    for name, sub in arg.items():
                        if name in value:
                            yield from self._errors(value[name], sub, (*path, name))
                elif kind == "additionalProperties":
                    known = schema.get("properties", {})
                    if arg is not False:  # (jsonschema takes them in a set's order)
                        for name in value:
                            if name not in known:
                                yield from self._errors(value[name], arg, (*path, name))
                        continue
                    extras = sorted((k for k in value if k not in known), key=str)
                    if extras:
                        verb = "was" if len(extras) == 1 else "were"
                        message = ("Additional properties are not allowed "
                                   f"({', '.join(map(repr, extras))} {verb} unexpected)")
                elif kind == "required":
                    for name in arg:
                        if name not in value:
                            yield _SchemaError(kind, path, schema, value,
                                               f"{name!r} is a required property")
                elif kind == "minProperties" and len(value) < arg:
                    message = f"{value!r} " + _too_few(arg, "does not have enough properties")
                elif kind == "maxProperties" and len(value) > arg:
                    message = f"{value!r} " + _too_many(arg, "has too many properties")
            elif isinstance(value, list):
                if kind == "items":
                    for index, item in enumerate(value):
                        yield from self._errors(item, arg, (*path, index))
                elif kind == "minItems" and len(value) < arg:
                    message = f"{value!r} " + _too_few(arg, "is too short")
                elif kind == "maxItems" and len(value) > arg:
                    message = f"{value!r} " + _too_many(arg, "is too long")
            elif isinstance(value, str):
                if kind == "pattern" and not self._patterns[arg].search(value):
                    message = f"{value!r} does not match {arg!r}"
                elif kind == "minLength" and len(value) < arg:
                    message = f"{value!r} " + _too_few(arg, "is too short")
                elif kind == "maxLength" and len(value) > arg:
                    message = f"{value!r} " + _too_many(arg, "is too long")
            elif _is_type(value, "number"):
                if kind == "minimum" and value < arg:
                    message = f"{value!r} is less than the minimum of {arg!r}"
                elif kind == "maximum" and value > arg:
                    message = f"{value!r} is greater than the maximum of {arg!r}"
                elif kind == "exclusiveMinimum" and value <= arg:
                    message = f"{value!r} is less than or equal to the minimum of {arg!r}"
            if message is not None:
                yield _SchemaError(kind, path, schema, value, message)
