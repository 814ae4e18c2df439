"""Each layer imports only from the layers below it (docs/architecture.md), and third-party
libraries stay in the layer that owns them. Checked on the source, so it cannot drift.

An import is any ``import``/``from`` statement (relative ones resolved against the module's
package, at any depth in the module, type-only ones included) and any ``importlib.import_module``
or ``__import__`` call with a literal name. The negative tests at the end feed the checker one
forbidden import at a time, so a checker that stopped seeing one would fail too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "aimterm"

LAYERS = {
    "aimterm.version": 0, "aimterm.builtin_adapters": 0, "aimterm.errors": 0,
    "aimterm.states": 0, "aimterm.events": 0, "aimterm.paths": 0, "aimterm.statedir": 0,
    "aimterm.procs": 0,
    "aimterm.__main__": 5,
    "aimterm.term": 1,
    "aimterm.adapter": 2, "aimterm.records": 2,
    "aimterm.session": 3, "aimterm.pool": 3, "aimterm.cluster": 3, "aimterm.router": 3, "aimterm.config": 3,
    "aimterm.cluster_schema": 3,  # the cluster file's and the status's JSON Schemas: data
    "aimterm.transcripts": 3,
    # The pool's parts: the dispatcher, the instance record, the session handle, the turn.
    "aimterm.dispatch": 3, "aimterm.instance": 3, "aimterm.handle": 3, "aimterm.turn": 3,
    # The Fleet protocol both the in-process cluster and the socket client implement.
    "aimterm.fleet": 3,
    # Session hosts: sessions run in processes of their own, behind the same handle.
    "aimterm.host": 3,
    "aimterm.daemon": 4, "aimterm.ipc": 4, "aimterm.jobs": 4, "aimterm.store": 4,
    "aimterm.plans": 4,  # plans run jobs (L4) in git worktrees
    "aimterm.cli": 5, "aimterm.attach": 5, "aimterm.dashboard": 5,
    "aimterm.testing.plugin": 5,  # the pytest plugin: fixtures over the public API
    "aimterm.testing": 0,  # helpers for tests (the fake model server): standard library only
    "aimterm.demo_agent": -1,  # a standalone program shipped with the package: stdlib only
}
#: Front-ends may use the runtime in-process (demo, adapter test) but never touch a PTY.
FORBIDDEN_FOR = {5: {1}}
#: Third-party modules and the only layer allowed to import them.
#: pexpect is a test dependency (the test extra), so no layer may import it.
OWNED = {"pexpect": set(), "ptyprocess": {1}, "pyte": {1}, "psutil": {1}, "yaml": {2},
         "jsonschema": {2}, "click": {5}, "textual": {5}, "textual_serve": {5},
         "aiohttp": {5},  # textual-serve's web server, which the token guard is part of
         "rich": {5},  # Textual's renderer: the fleet table draws its own lines with it
         "pytest": {5}}
STDLIB = set(sys.stdlib_module_names)


@dataclass(frozen=True)
class FrontEnd:
    """A front-end held to less than all of L0–L4: L0, plus only the modules it names."""

    why: str
    may_use: tuple[str, ...]  # module prefixes beyond L0


#: The cluster commands talk to the daemon, so they reach it only through the socket client,
#: never by holding the runtime (L3: session, pool, router, cluster) or the service itself.
#: They read the cluster file (aimterm.config) because it says where the daemon's socket is.
#: ``aimterm logs`` (cli/logs.py) is not one of them: it reads transcript files, not the daemon.
_DAEMON_CLIENT = FrontEnd("reaches the daemon only through aimterm.ipc.client",
                          ("aimterm.ipc.client", "aimterm.config", "aimterm.cli.cluster",
                           "aimterm.cli.attach", "aimterm.cli.handover"))
FRONT_ENDS = {
    "aimterm.cli.cluster": _DAEMON_CLIENT,
    "aimterm.cli.attach": _DAEMON_CLIENT,
    # Reserved before it exists, so the first version of it is held to the rule.
    "aimterm.dashboard": FrontEnd("is a front-end of the daemon: L0 and aimterm.ipc.client only",
                                  ("aimterm.ipc.client", "aimterm.dashboard")),
}
#: Named exceptions to FRONT_ENDS: (module, function, imported module) -> why.
EXCEPTIONS = {
    ("aimterm.cli.cluster", "_up_foreground", "aimterm.daemon"):
        "`cluster up` in the foreground does not reach a daemon, it is one (in this process)",
    ("aimterm.cli.cluster", "run_schema", "aimterm.cluster_schema"):
        "`cluster schema` prints two schemas (plain data): it reaches no daemon at all",
}


def layer_of(module: str) -> int:
    if module == "aimterm":
        return 6  # the package facade: re-exports the public API lazily
    best, layer = "", None
    for prefix, value in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best, layer = prefix, value
    assert layer is not None, f"{module} is in no layer: add it to LAYERS and the docs"
    return layer


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _front_end(module: str) -> FrontEnd | None:
    matches = [p for p in FRONT_ENDS if _within(module, p)]
    return FRONT_ENDS[max(matches, key=len)] if matches else None


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


KNOWN = {name for name, _ in modules()}


@dataclass(frozen=True)
class Import:
    name: str      # absolute module name
    line: int
    function: str  # the enclosing function's name, "" at module level


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []
        self.problems: list[str] = []
        self._functions: list[str] = []

    def _add(self, name: str, node: ast.AST) -> None:
        self.found.append(Import(name, getattr(node, "lineno", 0),
                                 self._functions[-1] if self._functions else ""))

    def _base(self, level: int, node: ast.AST) -> str | None:
        parts = self.package.split(".") if self.package else []
        if level - 1 > len(parts) - 1:
            self.problems.append(f"line {getattr(node, 'lineno', 0)}: relative import "
                                 f"beyond the top of the package")
            return None
        return ".".join(parts[:len(parts) - (level - 1)])

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._functions.append(node.name)
        self.generic_visit(node)
        self._functions.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self._base(node.level, node)
            if base is None:
                return
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        # ``from aimterm import session`` imports the module aimterm.session, not the facade.
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            self._add(sub if sub in KNOWN else source, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        dynamic = (isinstance(func, ast.Attribute) and func.attr == "import_module"
                   and isinstance(func.value, ast.Name) and func.value.id == "importlib") or (
            isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
        if dynamic and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.args[0].value
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                base = self._base(level, node)
                if base is not None:
                    rest = name.lstrip(".")
                    self._add(f"{base}.{rest}" if rest else base, node)
            else:
                self._add(name, node)
        self.generic_visit(node)


def imports(source: str, module: str, *, is_package: bool = False,
            filename: str = "<source>") -> tuple[list[Import], list[str]]:
    collector = _Collector(module, is_package)
    collector.visit(ast.parse(source, filename))
    return collector.found, collector.problems


def check(module: str, source: str, *, is_package: bool = False, where: str = "<source>") -> list[str]:
    """Every layer-rule violation in ``source``, the text of the module ``module``."""
    mine = layer_of(module)
    front = _front_end(module)
    found, problems = imports(source, module, is_package=is_package, filename=where)
    problems = [f"{where}: {p}" for p in problems]
    for imp in found:
        name = imp.name
        top = name.split(".")[0]
        at = f"{where}:{imp.line}: {name}"
        if top == "aimterm":
            theirs = layer_of(name)
            if mine == -1:
                problems.append(f"{at}: the demo agent must stay stdlib-only")
            elif theirs > mine:
                problems.append(f"{at}: L{mine} may not import L{theirs}")
            elif theirs in FORBIDDEN_FOR.get(mine, set()):
                problems.append(f"{at}: L{mine} may not reach into L{theirs}")
            elif front is not None and theirs != 0 \
                    and not any(_within(name, p) for p in front.may_use) \
                    and (module, imp.function, name) not in EXCEPTIONS:
                problems.append(f"{at}: {module} {front.why}")
        elif mine == -1 and top not in STDLIB:
            problems.append(f"{at}: the demo agent must stay stdlib-only")
        elif top in OWNED and mine not in OWNED[top]:
            problems.append(f"{at}: {top} belongs to layer(s) {sorted(OWNED[top])}")
        elif top not in STDLIB and top not in OWNED and top != "typing_extensions":
            problems.append(f"{at}: undeclared third-party import")
    return problems


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_module_respects_layers(module: str, path: Path) -> None:
    problems = check(module, path.read_text(), is_package=path.name == "__init__.py",
                     where=str(path.relative_to(PKG.parent)))
    assert not problems, "\n".join(problems)


def test_cli_import_is_light() -> None:
    """``aimterm --help`` must not drag in the terminal stack, YAML or jsonschema."""
    code = ("import sys, aimterm.cli.main; heavy = [m for m in ('pyte', 'ptyprocess', 'pexpect',"
            " 'yaml', 'jsonschema', 'psutil', 'asyncio', 'aimterm.session') if m in sys.modules];"
            " print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module", sorted(m for m in FRONT_ENDS if m in KNOWN))
def test_daemon_clients_do_not_load_the_runtime(module: str) -> None:
    """What a daemon client loads, transitively: not the runtime, the service or a PTY."""
    runtime = ("aimterm.session", "aimterm.pool", "aimterm.dispatch", "aimterm.instance",
               "aimterm.cluster", "aimterm.daemon", "aimterm.store", "aimterm.ipc.server",
               "aimterm.term", "pyte", "ptyprocess", "pexpect", "psutil")
    code = (f"import sys, {module}; print(','.join(m for m in {runtime!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _install_requires() -> set[str]:
    """The import names of setup.cfg's install_requires (PyYAML -> yaml)."""
    import configparser
    import re
    from importlib.metadata import packages_distributions

    cfg = configparser.ConfigParser()
    cfg.read(PKG.parent / "setup.cfg")
    def norm(dist: str) -> str:
        return dist.lower().replace("_", "-")

    wanted = {norm(re.split(r"[<>=!~;\[ ]", line.strip(), maxsplit=1)[0])
              for line in cfg["options"]["install_requires"].splitlines() if line.strip()}
    tops = packages_distributions()
    installed = {norm(d) for dists in tops.values() for d in dists}
    assert wanted <= installed, f"install_requires not installed: {sorted(wanted - installed)}"
    return {top for top, dists in tops.items()
            if not top.startswith("_") and any(norm(d) in wanted for d in dists)}


def test_runtime_dependencies_are_the_runtime_imports() -> None:
    """install_requires is what the package imports: nothing the runtime needs is missing (a
    plain ``pip install .`` would break), and nothing in it is used by the tests alone."""
    imported = set()
    for module, path in modules():
        found, _ = imports(path.read_text(), module, is_package=path.name == "__init__.py")
        imported |= {i.name.split(".")[0] for i in found}
    # pytest is the host that loads the plugin (aimterm.testing.plugin), not a dependency.
    third_party = {top for top in imported
                   if top not in STDLIB and top not in ("aimterm", "pytest")}
    declared = _install_requires()
    assert third_party - {"typing_extensions"} <= declared, \
        f"imported but not in install_requires: {sorted(third_party - declared)}"
    assert declared <= third_party, \
        f"in install_requires but never imported by aimterm/: {sorted(declared - third_party)}"


def test_exceptions_name_real_imports() -> None:
    """A named exception whose import is gone must go too, or it would excuse a new one."""
    for module, function, name in EXCEPTIONS:
        path = dict(modules())[module]
        found, _ = imports(path.read_text(), module)
        assert any(i.function == function and i.name == name for i in found), (module, function, name)


# -- the checker can fail: one forbidden import at a time -------------------------------------

FORBIDDEN = [
    # (module it pretends to be, source, what the report must say)
    ("aimterm.term.fake", "from .. import session\n", "aimterm.session: L1 may not import L3"),
    ("aimterm.term.fake", "from ..session import Session\n", "aimterm.session: L1 may not import L3"),
    ("aimterm.term", "from ..pool import Pool\n", "aimterm.pool: L1 may not import L3"),
    ("aimterm.adapter.fake", "def f():\n    from .. import daemon\n", "L2 may not import L4"),
    ("aimterm.errors", "from . import events, session\n", "aimterm.session: L0 may not import L3"),
    ("aimterm.errors", "from aimterm import router\n", "aimterm.router: L0 may not import L3"),
    ("aimterm.errors", "from aimterm import something\n", "aimterm: L0 may not import L6"),
    ("aimterm.term.fake", "from .... import x\n", "relative import beyond the top"),
    ("aimterm.term.fake", "import importlib\nimportlib.import_module('aimterm.pool')\n",
     "aimterm.pool: L1 may not import L3"),
    ("aimterm.term.fake", "from importlib import import_module\nimport_module('aimterm.cli.main')\n",
     "aimterm.cli.main: L1 may not import L5"),
    ("aimterm.term.fake", "__import__('aimterm.daemon')\n", "aimterm.daemon: L1 may not import L4"),
    ("aimterm.term.fake", "import importlib\nimportlib.import_module('..router', __package__)\n",
     "aimterm.router: L1 may not import L3"),
    ("aimterm.errors", "import importlib\nimportlib.import_module('yaml')\n", "yaml belongs to"),
    ("aimterm.cli.main", "from aimterm.term.child import Child\n", "L5 may not reach into L1"),
    ("aimterm.cli.demo", "import aimterm.term\n", "L5 may not reach into L1"),
    ("aimterm.cli.cluster", "from aimterm.pool import Pool\n", "reaches the daemon only through"),
    ("aimterm.cli.cluster", "from aimterm.session import Session\n", "reaches the daemon only"),
    ("aimterm.cli.cluster", "from aimterm.router import Router\n", "reaches the daemon only"),
    ("aimterm.cli.cluster", "from aimterm.cluster import ClusterManager\n", "reaches the daemon"),
    ("aimterm.cli.cluster", "from aimterm.ipc.server import Server\n", "reaches the daemon"),
    ("aimterm.cli.cluster", "from aimterm.ipc import ControlClient\n", "reaches the daemon"),
    ("aimterm.cli.cluster", "from aimterm.cli.demo import run_demo\n", "reaches the daemon"),
    ("aimterm.cli.cluster", "def up():\n    from aimterm.daemon import Daemon\n", "reaches the daemon"),
    ("aimterm.cli.attach", "from aimterm.daemon import Daemon\n", "reaches the daemon only"),
    ("aimterm.cli.attach", "def f():\n    import aimterm.store\n", "reaches the daemon only"),
    ("aimterm.dashboard", "from aimterm.config import resolve_config\n", "L0 and aimterm.ipc.client only"),
    ("aimterm.dashboard.app", "from aimterm.pool import Pool\n", "L0 and aimterm.ipc.client only"),
    ("aimterm.dashboard.app", "from aimterm.adapter.spec import AdapterSpec\n", "ipc.client only"),
    ("aimterm.dashboard.app", "from aimterm.cli.cluster import connect\n", "ipc.client only"),
    ("aimterm.dashboard.app", "from aimterm.ipc.protocol import encode\n", "ipc.client only"),
    ("aimterm.dashboard.app", "import aimterm.term.screen\n", "L5 may not reach into L1"),
    ("aimterm.cli.main", "import yaml\n", "yaml belongs to layer(s) [2]"),
    ("aimterm.config", "from yaml import safe_load\n", "yaml belongs to layer(s) [2]"),
    ("aimterm.term.fake", "import yaml.nodes\n", "yaml belongs to layer(s) [2]"),
    ("aimterm.session", "import psutil\n", "psutil belongs to layer(s) [1]"),
    ("aimterm.daemon", "def f():\n    import psutil\n", "psutil belongs to layer(s) [1]"),
    ("aimterm.adapter.fake", "from psutil import Process\n", "psutil belongs to layer(s) [1]"),
    ("aimterm.session", "import pexpect\n", "pexpect belongs to layer(s) []"),
    ("aimterm.term.fake", "import pexpect\n", "pexpect belongs to layer(s) []"),
    ("aimterm.pool", "import jsonschema\n", "jsonschema belongs to layer(s) [2]"),
    ("aimterm.adapter.fake", "import click\n", "click belongs to layer(s) [5]"),
    ("aimterm.term.fake", "import requests\n", "undeclared third-party import"),
    ("aimterm.demo_agent", "from aimterm import errors\n", "the demo agent must stay stdlib-only"),
    ("aimterm.demo_agent", "import pyte\n", "the demo agent must stay stdlib-only"),
]


@pytest.mark.parametrize(("module", "source", "expected"), FORBIDDEN,
                         ids=[f"{m}:{s.strip().splitlines()[-1].strip()}" for m, s, _ in FORBIDDEN])
def test_checker_reports_a_forbidden_import(module: str, source: str, expected: str,
                                            tmp_path: Path) -> None:
    """Each forbidden import, in a synthetic module written to disk, is reported."""
    path = tmp_path / "synthetic.py"
    path.write_text(source)
    problems = check(module, path.read_text(), is_package=module in ("aimterm.term", "aimterm.dashboard"),
                     where=str(path))
    assert any(expected in p for p in problems), f"{expected!r} not in {problems}"


ALLOWED = [
    ("aimterm.term.fake", "from . import screen\nfrom .keys import encode\n"),
    ("aimterm.adapter.fake", "from ..term import screen\nfrom .. import errors\n"),
    ("aimterm.errors", "import importlib\nimportlib.import_module(name)\n"),  # not a literal
    ("aimterm.term.fake", "import psutil, pyte, ptyprocess\n"),
    ("aimterm.adapter.fake", "import yaml\nimport jsonschema\n"),
    ("aimterm.cli.main", "from aimterm.session import Session\nfrom aimterm.daemon import Daemon\n"),
    ("aimterm.cli.cluster", "from aimterm.ipc.client import ControlClient\nfrom aimterm import errors\n"),
    ("aimterm.cli.cluster", "def _up_foreground():\n    from aimterm.daemon import Daemon\n"),
    ("aimterm.cli.attach", "from aimterm.cli.cluster import connect\nfrom aimterm.config import x\n"),
    ("aimterm.dashboard.app", "from aimterm.ipc.client import AsyncControlClient\nimport textual\n"
                              "from aimterm.events import Event\nfrom . import widgets\n"),
]


@pytest.mark.parametrize(("module", "source"), ALLOWED, ids=[m for m, _ in ALLOWED])
def test_checker_lets_allowed_imports_pass(module: str, source: str) -> None:
    assert check(module, source, is_package=False) == []
