"""The adapter registry: listing, override order on the search path, self-named overrides
through ``extends``, loading by name or path, and the spec cache."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from aimterm.adapter.registry import AdapterInfo, AdapterRegistry, load_adapter
from aimterm.errors import AdapterNotFound, ConfigError
from aimterm.paths import ADAPTER_PATH_ENV

TOOL = """\
command: [tool]
states:
  - {state: idle, any: '^> $'}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def layers(tmp_path: Path) -> dict[str, Path]:
    return {origin: tmp_path / origin for origin in ("builtin", "user", "env")}


def registry_of(layers: dict[str, Path]) -> AdapterRegistry:
    return AdapterRegistry([(origin, folder) for origin, folder in layers.items()])


def test_list_sorted_with_overrides(layers: dict[str, Path]) -> None:
    b = write(layers["builtin"], "zeta.yaml", TOOL)
    u = write(layers["user"], "zeta.yaml", TOOL + "settle_ms: 1\n")
    write(layers["builtin"], "alpha.yml", TOOL)
    write(layers["user"], "file-name.yaml", "name: renamed\n" + TOOL)
    write(layers["user"], "broken.yaml", "command: [oops\n")
    write(layers["user"], "notes.txt", "not an adapter")
    infos = registry_of(layers).list()
    assert [i.name for i in infos] == ["alpha", "broken", "renamed", "zeta"]
    zeta = infos[-1]
    assert zeta == AdapterInfo(name="zeta", path=u, origin="user", overrides=[b])
    assert infos[0].origin == "builtin" and infos[0].overrides == []


def test_missing_folders_are_fine(tmp_path: Path) -> None:
    registry = AdapterRegistry([("builtin", tmp_path / "nope"), ("user", tmp_path / "gone")])
    assert registry.list() == []
    assert registry.find("x") is None


def test_override_order_builtin_user_env(layers: dict[str, Path]) -> None:
    b = write(layers["builtin"], "tool.yaml", TOOL + "settle_ms: 1\n")
    u = write(layers["user"], "tool.yaml", TOOL + "settle_ms: 2\n")
    e = write(layers["env"], "tool.yaml", TOOL + "settle_ms: 3\n")
    registry = registry_of(layers)
    spec = registry.get("tool")
    assert (spec.settle_ms, spec.origin, spec.source) == (3, "env", str(e))
    assert registry.find("tool") == e
    assert registry.find("tool", skip=e) == u
    assert registry.find("tool", skip=u) == b
    assert registry.find("tool", skip=b) is None
    assert registry.list()[0].overrides == [u, b]


def test_default_search_path_from_environment(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    name = "zz-aimterm-registry-test"
    config = tmp_path / "config"
    env1, env2 = tmp_path / "env1", tmp_path / "env2"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.setenv(ADAPTER_PATH_ENV, os.pathsep.join([str(env1), str(env2)]))
    user = write(config / "aimterm" / "adapters", f"{name}.yaml", TOOL + "settle_ms: 1\n")
    registry = AdapterRegistry()
    spec = registry.get(name)
    assert (spec.origin, spec.settle_ms, spec.source) == ("user", 1, str(user))
    write(env1, f"{name}.yaml", TOOL + "settle_ms: 2\n")
    last = write(env2, f"{name}.yaml", TOOL + "settle_ms: 3\n")
    spec = AdapterRegistry().get(name)
    assert (spec.origin, spec.settle_ms, spec.source) == ("env", 3, str(last))
    info = next(i for i in AdapterRegistry().list() if i.name == name)
    assert info.overrides == [env1 / f"{name}.yaml", user]


def test_self_named_override_extends_the_next_one_down(layers: dict[str, Path]) -> None:
    write(layers["builtin"], "claude.yaml", """\
        description: built-in
        command: [claude]
        env: {A: "1"}
        states:
          - {state: idle, any: '^> $'}
        """)
    user = write(layers["user"], "claude.yaml", """\
        extends: claude
        env: {B: "2"}
        """)
    registry = registry_of(layers)
    spec = registry.get("claude")
    assert (spec.origin, spec.source, spec.name) == ("user", str(user), "claude")
    assert spec.command == ("claude",) and spec.description == "built-in"
    assert spec.env == (("A", "1"), ("B", "2"))
    write(layers["env"], "claude.yaml", "extends: claude\nenv: {C: '3'}\n")
    spec = registry.get("claude")
    assert spec.origin == "env"
    assert spec.env == (("A", "1"), ("B", "2"), ("C", "3"))


def test_self_named_override_with_nothing_below(layers: dict[str, Path]) -> None:
    user = write(layers["user"], "solo.yaml", "extends: solo\ncommand: x\n")
    with pytest.raises(ConfigError) as info:
        registry_of(layers).get("solo")
    assert str(info.value) == f"{user}:1: extends: unknown parent adapter 'solo'"


def test_inherited_error_names_the_parent_file(layers: dict[str, Path]) -> None:
    base = write(layers["builtin"], "base.yaml", """\
        command: x
        states:
          - {state: idle, any: a, region: 'top:0'}
        """)
    write(layers["user"], "child.yaml", "extends: base\n")
    with pytest.raises(ConfigError) as info:
        registry_of(layers).get("child")
    assert str(info.value) == (
        f"{base}:3: states[0].region: expected a region: all, top:N, bottom:N, rows:A-B, "
        "cursor or cursor:N; got 'top:0'")


def test_extends_cycle_across_names(layers: dict[str, Path]) -> None:
    write(layers["user"], "a.yaml", "extends: b\ncommand: x\n")
    b = write(layers["user"], "b.yaml", "extends: a\n")
    with pytest.raises(ConfigError) as info:
        registry_of(layers).get("a")
    assert str(info.value) == f"{b}:1: extends: cycle in extends: a -> b -> a"


def test_extends_by_relative_path(layers: dict[str, Path]) -> None:
    write(layers["user"], "common/base.yaml", TOOL)
    write(layers["user"], "child.yaml", "extends: common/base.yaml\nsettle_ms: 7\n")
    spec = registry_of(layers).get("child")
    assert spec.command == ("tool",) and spec.settle_ms == 7


def test_not_found(layers: dict[str, Path]) -> None:
    registry = registry_of(layers)
    with pytest.raises(AdapterNotFound) as info:
        registry.get("ghost")
    folders = ", ".join(str(f) for f in layers.values())
    assert str(info.value) == f"no adapter named 'ghost' (searched {folders})"
    assert info.value.name == "ghost"


def test_load_adapter_by_path_and_name(tmp_path: Path, layers: dict[str, Path]) -> None:
    write(layers["builtin"], "base.yaml", TOOL)
    registry = registry_of(layers)
    loose = write(tmp_path / "elsewhere", "mine.yaml", "extends: base\nsettle_ms: 9\n")
    spec = load_adapter(loose, registry)
    assert (spec.name, spec.origin, spec.settle_ms, spec.command) == ("mine", "file", 9, ("tool",))
    assert load_adapter(str(loose), registry).settle_ms == 9
    assert load_adapter("base", registry).origin == "builtin"
    with pytest.raises(AdapterNotFound):
        load_adapter(str(tmp_path / "missing.yaml"), registry)


def test_load_adapter_path_overriding_same_name(tmp_path: Path, layers: dict[str, Path]) -> None:
    write(layers["builtin"], "tool.yaml", TOOL)
    local = write(tmp_path / "proj", "tool.yaml", "extends: tool\nsettle_ms: 4\n")
    spec = load_adapter(local, registry_of(layers))
    assert (spec.settle_ms, spec.command, spec.source) == (4, ("tool",), str(local))


def test_cache_hits_and_invalidation(layers: dict[str, Path]) -> None:
    base = write(layers["builtin"], "base.yaml", TOOL)
    child = write(layers["user"], "child.yaml", "extends: base\nsettle_ms: 1\n")
    registry = registry_of(layers)
    first = registry.get("child")
    assert registry.get("child") is first

    child.write_text("extends: base\nsettle_ms: 2\n", encoding="utf-8")
    os.utime(child, ns=(1, 1_000_000_000))
    second = registry.get("child")
    assert second is not first and second.settle_ms == 2

    base.write_text(TOOL.replace("[tool]", "[tool2]"), encoding="utf-8")
    os.utime(base, ns=(1, 2_000_000_000))
    third = registry.get("child")
    assert third.command == ("tool2",)
