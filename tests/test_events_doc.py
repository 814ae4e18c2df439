"""docs/events.md and the event classes say the same: every class is documented with exactly
its fields and their types, every documented kind exists, and every example line is valid JSON
of its kind with exactly the fields the page gives it."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from aimterm import events
from aimterm.events import Event, event_classes

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"
#: The fields every event has in the history (``mono`` stays on the bus).
COMMON = {"kind", "instance", "ts", "seq"}
#: What the history adds to some kinds (the page says so under "Common fields").
ADDED = {"turn_started": {"turn_id"}, "turn_finished": {"turn_id"}}
#: Python annotation -> the page's JSON type.
TYPES = {"str": "string", "int": "integer", "float": "number", "str | None": "string or null",
         "int | None": "integer or null", "float | None": "number or null",
         "dict[str, Any]": "object", "list[str]": "list of strings", "bool": "boolean",
         "dict[str, int] | None": "object or null"}
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "object": (dict,),
    "list of strings": (list,), "boolean": (bool,)}

_HEADING = re.compile(r"^### `([a-z_]+)` — (\w+)$")
_ROW = re.compile(r"^\| `(\w+)` \| ([a-z ]+) \| (.+) \|$")


@dataclasses.dataclass
class Section:
    kind: str
    cls: str
    fields: dict[str, str]  # name -> documented type
    examples: list[str]


def sections() -> dict[str, Section]:
    found: dict[str, Section] = {}
    current: Section | None = None
    in_json = False
    for line in DOC.read_text().splitlines():
        if (m := _HEADING.match(line)) is not None:
            assert m[1] not in found, f"{m[1]} is documented twice"
            current = found[m[1]] = Section(m[1], m[2], {}, [])
        elif line.startswith("## "):
            current = None
        elif current is None:
            continue
        elif line == "```json":
            in_json = True
        elif line == "```":
            in_json = False
        elif in_json:
            current.examples.append(line)
        elif (m := _ROW.match(line)) is not None:
            assert m[1] not in current.fields, f"{current.kind}: {m[1]} twice"
            current.fields[m[1]] = m[2]
    return found


DOCUMENTED = sections()
CLASSES = event_classes()


def own_fields(cls: type[Event]) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)
            if f.name not in ("instance", "ts", "mono")}


def test_every_class_is_documented_and_every_documented_kind_exists() -> None:
    assert sorted(CLASSES) == sorted(DOCUMENTED)


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_a_kind_is_documented_with_exactly_its_fields(kind: str) -> None:
    cls, section = CLASSES[kind], DOCUMENTED[kind]
    assert section.cls == cls.__name__
    fields = own_fields(cls)
    assert list(section.fields) == list(fields), "the fields, in the class's order"
    for name, annotation in fields.items():
        assert annotation in TYPES, f"{kind}.{name}: add {annotation!r} to TYPES"
        assert section.fields[name] == TYPES[annotation], f"{kind}.{name}"


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_the_example_is_a_line_of_the_history(kind: str) -> None:
    section = DOCUMENTED[kind]
    assert len(section.examples) == 1, f"{kind}: one example line"
    data: dict[str, Any] = json.loads(section.examples[0])
    assert data["kind"] == kind
    assert set(data) == COMMON | set(section.fields) | ADDED.get(kind, set())
    for name, doc_type in section.fields.items():
        value = data[name]
        base, _, null = doc_type.partition(" or ")
        if value is None:
            assert null == "null", f"{kind}.{name} is not nullable"
            continue
        assert isinstance(value, JSON_TYPES[base]) and (
            base == "boolean" or not isinstance(value, bool)), \
            f"{kind}.{name}: {value!r} is not {doc_type}"
    # The class takes the example's fields as they are: the page cannot drift from it.
    cls = CLASSES[kind]
    event = cls(data["instance"], **{k: data[k] for k in section.fields}, ts=data["ts"])
    expected = {k: v for k, v in data.items() if k not in ("seq", *ADDED.get(kind, ()))}
    assert {k: v for k, v in event.to_dict().items() if k != "mono"} == expected


def test_the_deprecated_name_is_the_same_class() -> None:
    assert events.InstanceGaveUp is events.InstanceFatal
    assert events.InstanceFatal.kind == "instance_fatal"
