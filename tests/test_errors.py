"""The error tree drawn in docs/architecture.md (and in the errors module's docstring) is the
tree of classes in aimterm.errors, and each class's ``fields`` are the context it carries."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import aimterm.errors as errors_module
from aimterm.errors import AimtermError, RemoteError
from tests.test_ipc import _sample

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
#: One line of a tree: the ``│   `` / ``    `` indents, a ``├── `` or ``└── `` branch, a name.
_LINE = re.compile(r"^(?P<indent>(?:[│ ]   )*)(?:(?:├|└)── )?(?P<name>[A-Za-z_]\w*)(?:\s|$)")


def parse_tree(text: str) -> dict[str, str | None]:
    """``{class: parent}`` of a box-drawn tree (the root's parent is None)."""
    lines = [ln.rstrip() for ln in text.strip("\n").splitlines() if ln.strip()]
    margin = min(len(ln) - len(ln.lstrip(" ")) for ln in lines)
    parents: dict[str, str | None] = {}
    stack: list[str] = []  # stack[d] is the last name seen at depth d
    for number, raw in enumerate(lines, 1):
        line = raw[margin:]
        match = _LINE.match(line)
        assert match, f"tree line {number} is not a tree line: {raw!r}"
        depth = len(match["indent"]) // 4 + (0 if line[0].isalpha() else 1)
        assert depth <= len(stack), f"tree line {number} is indented too far: {raw!r}"
        name = match["name"]
        assert name not in parents, f"{name} is in the tree twice"
        del stack[depth:]
        parents[name] = stack[-1] if stack else None
        stack.append(name)
    return parents


def doc_tree() -> str:
    text = DOC.read_text()
    section = text.split("\n## Errors\n", 1)
    assert len(section) == 2, f"{DOC} has no '## Errors' section"
    body = section[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", body, re.S | re.M)
    assert blocks, "the Errors section of docs/architecture.md has no tree"
    return str(blocks[0])


def docstring_tree() -> str:
    doc = errors_module.__doc__ or ""
    assert "::\n" in doc, "the errors module's docstring has no tree"
    return doc.split("::\n", 1)[1]


def class_tree() -> dict[str, str | None]:
    """``{class: parent}`` of the error classes defined in aimterm.errors."""
    out: dict[str, str | None] = {}
    for name, obj in vars(errors_module).items():
        if isinstance(obj, type) and issubclass(obj, AimtermError) and \
                obj.__module__ == errors_module.__name__:
            if obj is AimtermError:
                out[name] = None
                continue
            bases = [b for b in obj.__bases__ if issubclass(b, AimtermError)]
            assert len(bases) == 1, f"{name} has more than one error base: {bases}"
            out[name] = bases[0].__name__
    return out


def _compare(drawn: dict[str, str | None], where: str) -> None:
    actual = class_tree()
    problems = [f"{name} is in aimterm.errors but not in {where}"
                for name in actual if name not in drawn]
    problems += [f"{name} is in {where} but not a class in aimterm.errors"
                 for name in drawn if name not in actual]
    problems += [f"{name}: {where} puts it under {drawn[name]}, the class derives from "
                 f"{actual[name]}" for name in drawn if name in actual and drawn[name] != actual[name]]
    assert not problems, "\n".join(problems)


def test_the_architecture_doc_draws_the_error_tree() -> None:
    _compare(parse_tree(doc_tree()), "docs/architecture.md")


def test_the_errors_module_docstring_draws_the_error_tree() -> None:
    _compare(parse_tree(docstring_tree()), "the aimterm.errors docstring")


def test_the_tree_parser_sees_a_missing_or_misplaced_class() -> None:
    """The comparison must be able to fail: a tree that lacks a class, has an extra one, or
    hangs one under the wrong parent is reported."""
    good = docstring_tree()
    assert parse_tree(good)["AdapterNotFound"] == "ConfigError"
    assert parse_tree(good)["StoreError"] == "AimtermError"
    missing = "\n".join(ln for ln in good.splitlines() if "QueueFull" not in ln)
    with pytest.raises(AssertionError, match="QueueFull is in aimterm.errors but not"):
        _compare(parse_tree(missing), "the tree")
    extra = good.replace("├── StoreError", "├── MadeUpError\n    ├── StoreError")
    with pytest.raises(AssertionError, match="MadeUpError is in the tree but not a class"):
        _compare(parse_tree(extra), "the tree")
    moved = good.replace("│   └── AdapterNotFound", "├── AdapterNotFound")
    with pytest.raises(AssertionError, match="AdapterNotFound: the tree puts it under AimtermError"):
        _compare(parse_tree(moved), "the tree")


def test_errors_are_defined_only_in_the_errors_module() -> None:
    """One error tree: a class deriving from an aimterm error anywhere else in the package is
    a second tree (the router's errors moved into aimterm.errors for this reason)."""
    names = set(class_tree())
    problems = []
    for path in sorted((ROOT / "aimterm").rglob("*.py")):
        if path == Path(errors_module.__file__ or ""):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else b.attr
                         for b in node.bases if isinstance(b, (ast.Name, ast.Attribute))}
                if bases & names:
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}")
    assert not problems, "define errors in aimterm/errors.py:\n" + "\n".join(problems)


def test_the_router_re_exports_its_errors() -> None:
    from aimterm import router

    for name in ("NoSuchTool", "NobodyFree", "QueueFull", "QueueTimeout"):
        assert getattr(router, name) is getattr(errors_module, name)
        assert name in router.__all__


_CLASSES = [getattr(errors_module, name) for name in class_tree()
            if name not in ("AimtermError", "RemoteError")]


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_fields_are_the_context_the_error_carries(cls: type[AimtermError]) -> None:
    """``fields`` names exactly the public attributes the constructor sets, a subclass's
    starting with its parent's, and ``to_dict()`` is code, message and those, in order."""
    err = _sample(cls)
    context = {k for k in vars(err) if not k.startswith("_")} - {"message"}
    assert set(cls.fields) == context, f"{cls.__name__}.fields {cls.fields} vs {sorted(context)}"
    assert len(set(cls.fields)) == len(cls.fields)
    parent = cls.__bases__[0]
    assert cls.fields[:len(parent.fields)] == parent.fields
    data = err.to_dict()
    assert list(data) == ["code", "message", *cls.fields]
    assert (data["code"], data["message"]) == (cls.code, err.message)
    assert all(data[name] == getattr(err, name) for name in cls.fields)


def test_to_dict_of_an_error_rebuilt_without_its_context() -> None:
    """An error from the wire has only the context the peer sent: to_dict leaves out the rest
    instead of failing."""
    from aimterm.ipc.protocol import error_from_wire

    back = error_from_wire({"code": "queue_timeout", "message": "late", "tool": "bash"})
    assert back.to_dict() == {"code": "queue_timeout", "message": "late", "tool": "bash"}


def test_remote_error_to_dict_is_what_the_server_sent() -> None:
    err = RemoteError("new_code", "text", extra={"detail": 1, "code": "ignored"})
    assert err.to_dict() == {"detail": 1, "code": "new_code", "message": "text"}
    assert RemoteError.fields == ()
