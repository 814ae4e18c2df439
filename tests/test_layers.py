"""Each layer imports only from the layers below it (docs/architecture.md), and third-party
libraries stay in the layer that owns them. Checked on the source, so it cannot drift."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "aimterm"

LAYERS = {
    "aimterm.version": 0, "aimterm.builtin_adapters": 0, "aimterm.errors": 0,
    "aimterm.states": 0, "aimterm.events": 0, "aimterm.paths": 0,
    "aimterm.__main__": 5,
    "aimterm.term": 1,
    "aimterm.adapter": 2,
    "aimterm.session": 3, "aimterm.pool": 3, "aimterm.cluster": 3, "aimterm.router": 3, "aimterm.config": 3,
    "aimterm.transcripts": 3,
    "aimterm.daemon": 4, "aimterm.ipc": 4, "aimterm.jobs": 4, "aimterm.store": 4,
    "aimterm.cli": 5, "aimterm.attach": 5, "aimterm.dashboard": 5,
    "aimterm.testing": 0,  # helpers for tests (the fake model server): standard library only
    "aimterm.demo_agent": -1,  # a standalone program shipped with the package: stdlib only
}
#: Front-ends may use the runtime in-process (demo, adapter test) but never touch a PTY.
FORBIDDEN_FOR = {5: {1}}
#: Third-party modules and the only layer allowed to import them.
OWNED = {"pexpect": {1}, "ptyprocess": {1}, "pyte": {1}, "psutil": {1, 3, 4}, "yaml": {2, 5},
         "jsonschema": {2}, "click": {5}, "textual": {5}}
STDLIB = set(sys.stdlib_module_names)


def layer_of(module: str) -> int:
    if module == "aimterm":
        return 6  # the package facade: re-exports the public API lazily
    best, layer = "", None
    for prefix, value in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best, layer = prefix, value
    assert layer is not None, f"{module} is in no layer: add it to LAYERS and the docs"
    return layer


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_module_respects_layers(module: str, path: Path) -> None:
    mine = layer_of(module)
    problems = []
    for name, line in imports(path):
        top = name.split(".")[0]
        where = f"{path.relative_to(PKG.parent)}:{line}: {name}"
        if top == "aimterm":
            theirs = layer_of(name)
            if mine == -1:
                problems.append(f"{where}: the demo agent must stay stdlib-only")
            elif theirs > mine:
                problems.append(f"{where}: L{mine} may not import L{theirs}")
            elif theirs in FORBIDDEN_FOR.get(mine, set()):
                problems.append(f"{where}: L{mine} may not reach into L{theirs}")
        elif top in OWNED and mine not in OWNED[top]:
            problems.append(f"{where}: {top} belongs to layer(s) {sorted(OWNED[top])}")
        elif top not in STDLIB and top not in OWNED and top != "typing_extensions":
            problems.append(f"{where}: undeclared third-party import")
    assert not problems, "\n".join(problems)


def test_cli_import_is_light() -> None:
    """``aimterm --help`` must not drag in the terminal stack, YAML or jsonschema."""
    code = ("import sys, aimterm.cli.main; heavy = [m for m in ('pyte', 'ptyprocess', 'pexpect',"
            " 'yaml', 'jsonschema', 'psutil', 'asyncio', 'aimterm.session') if m in sys.modules];"
            " print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
