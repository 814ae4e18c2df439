"""The published schemas of a cluster: the cluster file's agrees with its loader, the status
schema with what a live daemon's ``cluster status --json`` prints, and ``aimterm cluster
schema`` prints both.

Agreement means: a file the loader takes, the schema takes; a file the loader refuses, the
schema refuses too, unless the loader's reason is one no schema can state (listed in
:mod:`aimterm.cluster_schema`). It is checked on every cluster file in the repository (the
example, the docs, and every cluster-file text in the tests' sources), on a walk over every
bound the schema names, on a list of mistakes with their exact messages, and on random data.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from aimterm.adapter.schema import MAX_INT, MAX_SECONDS
from aimterm.adapter.yamlfile import parse_yaml
from aimterm.cluster_schema import CLUSTER_SCHEMA, LIFECYCLES, STATUS_SCHEMA
from aimterm.config import InstanceGroup, load_cluster_config
from aimterm.errors import ConfigError
from aimterm.fleet import STATUS_FIELDS
from aimterm.instance import Lifecycle
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parent.parent
VALIDATOR = Draft202012Validator(CLUSTER_SCHEMA)
STATUS_VALIDATOR = Draft202012Validator(STATUS_SCHEMA)
TOP = tuple(CLUSTER_SCHEMA["properties"])
RESTART = tuple(CLUSTER_SCHEMA["$defs"]["restart"]["properties"])
GROUP = tuple(CLUSTER_SCHEMA["$defs"]["group"]["properties"])

#: The loader's reasons that no schema can state: the schema may take such a file.
LOADER_ONLY = ("is listed twice (one group per adapter", "instances in all, more than "
               "max_instances")
_INTEGRAL = re.compile(r"expected an integer, got number (\S+)$")


def loader_says(text: str, folder: Path) -> str | None:
    """None if the loader takes ``text`` as a cluster file, else its message without the
    path: ``LINE: key: what was expected``."""
    path = folder / "cluster.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_cluster_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}:") and "\n" not in message, message
        return message[len(f"{path}:"):]  # "LINE: key: what was expected"
    return None


def loader_only(message: str) -> bool:
    """A refusal the schema need not share: a rule no schema states, or ``3.0`` where an
    integer goes (JSON Schema cannot tell it from 3)."""
    found = _INTEGRAL.search(message)
    return any(m in message for m in LOADER_ONLY) or bool(
        found and float(found.group(1)).is_integer())


def schema_errors(data: Any) -> list[str]:
    # An empty file is the loader's defaults; its JSON (null) is no cluster file to a schema.
    return [e.message for e in VALIDATOR.iter_errors({} if data is None else data)]


def agree(text: str, folder: Path) -> str | None:
    """Assert that the loader and the schema judge ``text`` alike; the loader's message."""
    try:
        data = parse_yaml(text, "cluster.yaml").data  # what the loader sees
    except ConfigError:
        return "not YAML"  # refused before any key is read: nothing for a schema to judge
    verdict = loader_says(text, folder)
    errors = schema_errors(data)
    if verdict is None:
        assert not errors, f"the loader takes it, the schema does not: {errors}\n{text}"
    elif not loader_only(verdict):
        assert errors, f"the loader refuses it ({verdict}), the schema takes it\n{text}"
    return verdict


# -- the files there are -----------------------------------------------------------------------

_LOOKS = re.compile(r"\s*(?:#[^\n]*\n\s*)*(?:" + "|".join(TOP) + r")\s*:")


def _looks_like_a_cluster_file(text: str) -> bool:
    if not _LOOKS.match(text):
        return False
    try:
        data = parse_yaml(text, "x.yaml").data
    except ConfigError:
        return False
    return isinstance(data, dict) and bool(data) and set(data) <= set(TOP)


def _texts_in_tests() -> list[str]:
    """Every cluster-file text in the other tests' sources: string literals, and f-strings
    with each placeholder filled in twice (``1`` and ``x``: a number, and a word)."""
    texts: list[str] = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path == Path(__file__).resolve():
            continue  # this file's own are checked one by one below
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                candidates = [node.value]
            elif isinstance(node, ast.JoinedStr):
                candidates = ["".join(str(v.value) if isinstance(v, ast.Constant) else fill
                                      for v in node.values) for fill in ("1", "x")]
            else:
                continue
            texts += [t for t in candidates if _looks_like_a_cluster_file(t)]
    return sorted(set(texts))


def _files_in_the_repository() -> list[Path]:
    """Cluster files among configs/, examples/ and the YAML blocks of the docs."""
    found = [p for folder in ("configs", "examples") for p in sorted((REPO / folder).rglob("*"))
             if p.suffix in (".yaml", ".yml", ".json")
             and _looks_like_a_cluster_file(p.read_text(encoding="utf-8"))]
    return found


def _blocks_in_the_docs() -> list[str]:
    blocks = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```ya?ml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            if _looks_like_a_cluster_file(block):
                blocks.append(block)
    return blocks


def test_the_example_and_the_docs_cluster_files_validate(tmp_path: Path) -> None:
    files = _files_in_the_repository()
    assert REPO / "configs" / "cluster.yaml" in files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert loader_says(text, tmp_path) is None, path
        assert agree(text, tmp_path) is None
    blocks = _blocks_in_the_docs()
    assert blocks, "docs/cluster.md shows a cluster file"
    for block in blocks:
        assert agree(block, tmp_path) is None, block


def test_every_cluster_file_in_the_tests_gets_one_verdict(tmp_path: Path) -> None:
    texts = _texts_in_tests()
    verdicts = [agree(text, tmp_path) for text in texts]
    taken = sum(v is None for v in verdicts)
    # The harvest must stay wide (the daemon's, the fleet's, the faults' files ...): a
    # harvester gone blind would pass on nothing.
    assert taken >= 12 and len(texts) - taken >= 12, (taken, len(texts))


# -- mistakes: the exact line, and the schema's refusal -------------------------------------------

_GROUP = "instances:\n  - adapter: demo\n"
MISTAKES = [
    ("not-a-mapping", "- adapter: demo\n", "1: expected a mapping, got a list"),
    ("unknown", "statedir: /tmp/x\n", "1: statedir: unknown key 'statedir' (expected one of: "
     "hosts, instances, log_max_mb, max_instances, queue_size, queue_timeout_s, restart, "
     "routing, socket, state_dir)"),
    ("plan-tool-id", "tool_id: aider\ncount: 3\n", "1: tool_id: unknown key 'tool_id' "
     "(expected one of: hosts, instances, log_max_mb, max_instances, queue_size, "
     "queue_timeout_s, restart, routing, socket, state_dir)"),
    ("hosts", "hosts: many\n",
     "1: hosts: expected 'auto' or an integer from 0 to 256, got string 'many'"),
    ("routing", "routing: fastest\n",
     "1: routing: expected one of: round_robin, least_busy, sticky; got string 'fastest'"),
    ("state-dir-null", "state_dir: null\n",
     "1: state_dir: expected a non-empty string, got null"),
    ("state-dir-nul", '{"state_dir": "a\\u0000b"}',
     "1: state_dir: expected text without NUL characters"),
    ("socket-number", "socket: 5\n", "1: socket: expected a non-empty string, got integer 5"),
    ("queue-size", "queue_size: 0\n", "1: queue_size: expected an integer >= 1, got 0"),
    ("queue-size-big", f"queue_size: {MAX_INT + 1}\n",
     f"1: queue_size: expected an integer <= {MAX_INT}, got {MAX_INT + 1}"),
    ("max-instances", "max_instances: 10001\n",
     "1: max_instances: expected an integer <= 10000, got 10001"),
    ("queue-timeout", "queue_timeout_s: 0\n", "1: queue_timeout_s: expected a number > 0, got 0"),
    ("log-max", "log_max_mb: -1\n", "1: log_max_mb: expected a number > 0, got -1"),
    ("restart-list", "restart: []\n", "1: restart: expected a mapping, got a list"),
    ("restart-key", "restart:\n  backof_s: 1\n", "2: restart.backof_s: unknown key 'backof_s' "
     "(expected one of: backoff_max_s, backoff_s, fast_failure_s, max_fast_failures)"),
    ("backoff", "restart: {backoff_s: -0.5}\n",
     "1: restart.backoff_s: expected a number >= 0, got -0.5"),
    ("backoff-max", f"restart: {{backoff_max_s: {MAX_SECONDS + 1}}}\n",
     f"1: restart.backoff_max_s: expected a number <= {MAX_SECONDS} (30 days in seconds), "
     f"got {MAX_SECONDS + 1:g}"),
    ("fast-failures", "restart: {max_fast_failures: 0}\n",
     "1: restart.max_fast_failures: expected an integer >= 1, got 0"),
    ("instances-empty", "instances: []\n",
     "1: instances: expected a non-empty list of instance groups, got a list"),
    ("instances-mapping", "instances: {adapter: demo}\n",
     "1: instances: expected a non-empty list of instance groups, got a mapping"),
    ("group-text", "instances: [demo]\n", "1: instances[0]: expected a mapping, got string 'demo'"),
    ("no-adapter", "instances:\n  - count: 2\n",
     "2: instances[0]: missing key 'adapter' (the adapter to run)"),
    ("adapter-empty", "instances:\n  - adapter: ''\n",
     "2: instances[0].adapter: expected a non-empty string, got string ''"),
    ("group-key", _GROUP + "    counts: 2\n", "3: instances[0].counts: unknown key 'counts' "
     "(expected one of: adapter, count, cwd, env, resume, stagger_ms, tags)"),
    ("count", _GROUP + "    count: -1\n", "3: instances[0].count: expected an integer >= 0, got -1"),
    ("count-word", _GROUP + "    count: two\n",
     "3: instances[0].count: expected an integer, got string 'two'"),
    ("count-half", _GROUP + "    count: 1.5\n",
     "3: instances[0].count: expected an integer, got number 1.5"),
    ("cwd", _GROUP + "    cwd: ''\n", "3: instances[0].cwd: expected a non-empty string, got "
     "string ''"),
    ("env-list", _GROUP + "    env: [A]\n",
     "3: instances[0].env: expected a mapping of names to values, got a list"),
    ("env-value", _GROUP + "    env: {A: [1]}\n",
     "3: instances[0].env.A: expected a string, a number, or true/false, got a list"),
    ("env-null", _GROUP + "    env: {A: null}\n",
     "3: instances[0].env.A: expected a string, a number, or true/false, got null"),
    ("tags-text", _GROUP + "    tags: fast\n",
     "3: instances[0].tags: expected a list of strings, got string 'fast'"),
    ("tags-empty", _GROUP + "    tags: ['']\n",
     "3: instances[0].tags[0]: expected a non-empty string, got string ''"),
    ("stagger", _GROUP + "    stagger_ms: -1\n",
     "3: instances[0].stagger_ms: expected an integer >= 0, got -1"),
    ("resume", _GROUP + "    resume: yes\n",
     "3: instances[0].resume: expected one of: after_crash, always, never; got boolean true"),
    # What only the loader can see:
    ("twice", "instances:\n  - adapter: demo\n  - adapter: demo\n",
     "3: instances[1].adapter: adapter 'demo' is listed twice (one group per adapter: raise "
     "its count instead)"),
    ("too-many", "max_instances: 3\ninstances:\n  - {adapter: demo, count: 2}\n"
                 "  - {adapter: echo, count: 2}\n",
     "2: instances: 4 instances in all, more than max_instances (3); lower the counts or raise "
     "max_instances"),
    ("integral-float", _GROUP + "    count: 3.0\n",
     "3: instances[0].count: expected an integer, got number 3.0"),
]
SCHEMA_TAKES = {"twice", "too-many", "integral-float"}


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in MISTAKES],
                         ids=[name for name, _, _ in MISTAKES])
def test_each_mistake_is_refused_by_both(tmp_path: Path, text: str, message: str) -> None:
    assert loader_says(text, tmp_path) == message
    agree(text, tmp_path)


def test_only_the_loaders_own_rules_pass_the_schema() -> None:
    taken = {name for name, text, _ in MISTAKES
             if not schema_errors(parse_yaml(text, "c.yaml").data)}
    assert taken == SCHEMA_TAKES


def test_the_keys_are_the_loaders(tmp_path: Path) -> None:
    """The loader names the keys it knows when it meets one it does not: the schema's."""
    def named(text: str) -> set[str]:
        message = loader_says(text, tmp_path)
        assert message is not None
        found = re.search(r"expected one of: ([^)]*)\)", message)
        assert found, message
        return set(found.group(1).split(", "))

    assert named("zz: 1\n") == set(TOP)
    assert named("restart: {zz: 1}\n") == set(RESTART)
    assert named(_GROUP + "    zz: 1\n") == set(GROUP)
    assert CLUSTER_SCHEMA["$defs"]["group"]["required"] == ["adapter"]


def test_the_defaults_are_the_loaders(tmp_path: Path) -> None:
    cfg = load_cluster_config(None)
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_cluster_config(path).instances == cfg.instances
    props = CLUSTER_SCHEMA["properties"]
    for key in ("routing", "queue_size", "queue_timeout_s", "max_instances", "log_max_mb"):
        assert props[key]["default"] == getattr(cfg, key), key
    assert props["instances"]["default"] == [{"adapter": g.adapter, "count": g.count}
                                             for g in cfg.instances]
    for key in RESTART:
        assert (CLUSTER_SCHEMA["$defs"]["restart"]["properties"][key]["default"]
                == getattr(cfg.restart, key)), key
    group = InstanceGroup("x")
    for key in ("count", "stagger_ms", "resume"):
        assert CLUSTER_SCHEMA["$defs"]["group"]["properties"][key]["default"] == getattr(
            group, key), key


# -- every bound the schema names, at and past it -------------------------------------------------

def _numbers(schema: dict[str, Any], where: tuple[str | int, ...]
             ) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """(key path, schema) of every numeric key of the cluster file."""
    for name, sub in schema["properties"].items():
        ref = sub.get("$ref", "")
        if ref:
            inner = CLUSTER_SCHEMA["$defs"][ref.rsplit("/", 1)[1]]
            yield from _numbers(inner, (*where, name))
        elif sub.get("type") == "array" and "$ref" in sub.get("items", {}):
            inner = CLUSTER_SCHEMA["$defs"][sub["items"]["$ref"].rsplit("/", 1)[1]]
            yield from _numbers(inner, (*where, name, 0))
        elif set(_types(sub)) & {"integer", "number"}:
            yield (*where, name), sub


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _place(key: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A file with ``value`` at ``key``: a top-level key, ``restart.K`` or ``instances.0.K``."""
    top, last = str(key[0]), str(key[-1])
    if top == "instances":
        return {top: [{"adapter": "demo", last: value}]}
    return {top: {last: value}} if len(key) == 2 else {top: value}


BOUNDED = list(_numbers(CLUSTER_SCHEMA, ()))


@pytest.mark.parametrize(("key", "schema"), BOUNDED, ids=[".".join(map(str, k)) for k, _ in BOUNDED])
def test_each_bound_is_the_loaders(tmp_path: Path, key: tuple[str | int, ...],
                                   schema: dict[str, Any]) -> None:
    whole = "integer" in _types(schema)
    values: list[float] = []
    if "minimum" in schema:
        low = schema["minimum"]
        values += [low - 1, low, low - 0.5]
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"]
        values += [low - 1, low, low + 0.5]
    high = schema["maximum"]
    values += [high, high + 1, high - 0.5]
    for value in values:
        text = json.dumps(_place(key, value))
        verdict = agree(text, tmp_path)
        schema_ok = not schema_errors(json.loads(text))
        if not (key == ("instances", 0, "count") and value > 256):  # past max_instances
            assert (verdict is None) == schema_ok, (key, value, verdict)
        if whole and value != int(value):
            assert not schema_ok and verdict is not None, (key, value)
    assert len(values) >= 6


# -- random data ---------------------------------------------------------------------------------

_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 12),
    st.sampled_from([0.5, 2.5, -0.5, 256, 257, 10_000, 10_001, MAX_SECONDS, MAX_SECONDS + 1,
                     MAX_INT, MAX_INT + 1]),
    st.sampled_from(["", "x", "demo", "echo", "~/w", "a\x00b", "round_robin", "sticky",
                     "after_crash", "never", "fastest"]))
_junk = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["A", "B", "zz"]), inner, max_size=3), max_leaves=6)
_group_values = {"env": st.dictionaries(st.sampled_from(["A", "B", ""]), _scalar, max_size=3),
                 "tags": st.lists(_scalar, max_size=3)}


def _mapping(keys: tuple[str, ...], special: dict[str, Any]) -> Any:
    return st.lists(st.sampled_from((*keys, "zz")), unique=True, max_size=5).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {k: (special.get(k, _scalar) | _junk) for k in chosen}))


_group = _mapping(GROUP, _group_values)
_doc = _mapping(TOP, {"restart": _mapping(RESTART, {}),
                      "instances": st.lists(_group | _junk, max_size=3)})


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_doc)
def test_random_files_get_one_verdict(data: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="acs-"))
    try:
        agree(json.dumps(data), folder)
    finally:
        shutil.rmtree(folder)


# -- the schemas themselves ----------------------------------------------------------------------

def _undescribed(schema: Any, where: str) -> Iterator[str]:
    if isinstance(schema, dict):
        for name, sub in schema.get("properties", {}).items():
            if "description" not in sub:
                yield f"{where}.{name}"
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and "description" not in extra:
            yield f"{where}.*"
        for name, sub in schema.items():
            yield from _undescribed(sub, f"{where}.{name}")
    elif isinstance(schema, list):
        for index, sub in enumerate(schema):
            yield from _undescribed(sub, f"{where}[{index}]")


@pytest.mark.parametrize("schema", [CLUSTER_SCHEMA, STATUS_SCHEMA], ids=["file", "status"])
def test_the_schemas_are_draft_2020_12_and_describe_every_key(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["description"] and schema["title"]
    assert list(_undescribed(schema, "")) == []


def test_the_status_row_has_every_status_field() -> None:
    """A field added to STATUS_FIELDS without the schema fails here."""
    row = STATUS_SCHEMA["$defs"]["instance"]
    assert tuple(row["properties"]) == STATUS_FIELDS
    assert tuple(row["required"]) == STATUS_FIELDS
    assert LIFECYCLES == tuple(life.value for life in Lifecycle)


# -- the command, and a live daemon -------------------------------------------------------------

def aimterm(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aimterm", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_cluster_schema_prints_both(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    out = aimterm("cluster", "schema", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == CLUSTER_SCHEMA
    out = aimterm("cluster", "schema", "--status", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == STATUS_SCHEMA
    assert not (tmp_path / "state").exists()  # no daemon needed, none looked for
    helped = aimterm("cluster", "schema", "--help")
    assert "--status" in helped.stdout and "cluster status --json" in helped.stdout
    assert "schema" in aimterm("cluster", "--help").stdout


DIES = """\
command: ["{py}", "-c", "pass"]
detect: stream
states: [{state: idle, region: bottom:1, any: ['^never>$']}]
"""


def test_a_live_daemons_status_matches_the_status_schema() -> None:
    """A demo instance idle, then WAITING on a question; one that died and is FATAL."""
    root = Path(tempfile.mkdtemp(prefix="acs-", dir="/tmp"))  # a socket path stays short
    (root / "dies.yaml").write_text(DIES.replace("{py}", sys.executable))
    config = root / "cluster.yaml"
    config.write_text(f"""\
state_dir: state
restart: {{backoff_s: 0, max_fast_failures: 1}}
instances:
  - adapter: demo
    count: 1
    tags: [local]
    env: {{AIMTERM_DEMO_THINK: "0", AIMTERM_DEMO_HOME: "{root / 'home'}"}}
  - adapter: {root / 'dies.yaml'}
""")
    env = dict(os.environ, XDG_STATE_HOME=str(root / "xdg-state"),
               XDG_CONFIG_HOME=str(root / "xdg-config"))
    env.pop("AIMTERM_ADAPTER_PATH", None)

    def run(*args: str) -> str:
        out = aimterm(*args, "-c", str(config), env=env)
        assert out.returncode == 0, f"{args}: {out.stderr}"
        return out.stdout

    def status() -> dict[str, Any]:
        data: dict[str, Any] = json.loads(run("cluster", "status", "--json"))
        STATUS_VALIDATOR.validate(data)
        return data

    try:
        run("cluster", "up", "--detach")
        first = status()
        rows = {r["id"]: r for r in first["instances"]}
        assert rows["demo-1"]["state"] == "idle" and rows["demo-1"]["tags"] == ["local"]
        assert rows["dies-1"]["state"] == "fatal" and rows["dies-1"]["fatal_reason"]
        assert first["daemon"]["config"] == str(config)
        run("send", "--tool", "demo", "--no-wait", "edit /etc/hosts: nope")
        waiting = wait_for(lambda: [r for r in status()["instances"] if r["question"]],
                           "demo-1 to wait on its question", timeout=30)
        assert waiting[0]["state"] == "waiting" and "/etc/hosts" in waiting[0]["question"]
        run("answer", "demo-1", "n")
        wait_for(lambda: [r for r in status()["instances"]
                          if r["id"] == "demo-1" and r["state"] == "idle" and r["turns"] == 1],
                 "demo-1 to finish its turn", timeout=30)
    finally:
        if (root / "state" / "control.sock").exists():
            aimterm("cluster", "down", "-c", str(config), env=env, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
