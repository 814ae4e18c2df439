"""Random and mutated YAML into the adapter and cluster loaders.

The property: a loader returns its object or raises one ConfigError whose text is one line
starting with the file it is about; never any other exception, whatever the bytes. The inputs
are random documents of every YAML type, the shipped adapters and cluster file with parts
dropped, retyped or nested deep, shared values (which ``safe_dump`` writes as anchors and
aliases), alias bombs, deep brackets, stray YAML syntax, random bytes and broken UTF-8.
"""

from __future__ import annotations

import copy
import datetime
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimterm.adapter.registry import AdapterRegistry
from aimterm.adapter.spec import AdapterSpec
from aimterm.config import ClusterConfig, load_cluster_config
from aimterm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ROOT / "adapters"
SHIPPED = sorted(ADAPTERS.glob("*.yaml"))
ADAPTER_DATA = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in SHIPPED]
CLUSTER_DATA = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text(encoding="utf-8"))

#: libyaml's emitter when there is one: generating the inputs is most of the time here.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: Strings that have broken a loader or its regexes somewhere.
EVIL_STRINGS = [
    "", " ", "~", "null", "a{99999999999}", "(" * 1500 + ")" * 1500, "(?P<x", "[", "\\",
    "(?P<a>x)(?P<a>y)", "\\N{NOPE}", "top:0", "rows:5-2", "bottom:99999999999999999999",
    "cursor:", "\x00", "\u2028", "\x85", "a\nb", "\ud7ff", "😀" * 50, "=", "A=B",
    "'unclosed", '"', "ctrl-", "&a", "*a", "!!binary", "%TAG", "<<",
]

EVIL_NUMBERS = [0, -1, 0.0, -0.0, 1e-300, 1e300, 10**30, -(10**30), 2**63 - 1, 2**63, 2**64,
                float("nan"), float("inf"), float("-inf")]

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(),
    st.integers(min_value=2**62, max_value=2**80),
    st.sampled_from(EVIL_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(EVIL_STRINGS),
    st.binary(max_size=8),
    st.dates(min_value=datetime.date(1, 1, 1)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(EVIL_STRINGS)), inner,
                      max_size=4),
    max_leaves=20,
)

#: YAML syntax dropped into a document's text at random.
_SYNTAX = ["&a ", "*a", "*nope", "[", "]", "{", "}", ": ", "- ", "? ", ", ", "!!binary ",
           "!!python/object:os.system ", "!foo ", "<<: *a\n", "|\n", ">-\n", "%YAML 1.1\n",
           "---\n", "...\n", "\t", '"\\', "'", "#", "\n  ", "\r", "\ufeff", ".nan", ".inf",
           "0x" + "f" * 40, "9" * 5000, "1.0e+999", "2001-02-30"]


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as name:
        yield Path(name)


def _paths(tree: Any, key: tuple[Any, ...] = (), seen: frozenset[int] = frozenset()
           ) -> list[tuple[Any, ...]]:
    """Every key path in ``tree``, once around a loop that a shared ancestor made."""
    out = [key]
    if id(tree) in seen:
        return out
    seen = seen | {id(tree)}
    if isinstance(tree, dict):
        for name, value in tree.items():
            out += _paths(value, key + (name,), seen)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            out += _paths(value, key + (index,), seen)
    return out


def _get(tree: Any, key: tuple[Any, ...]) -> Any:
    for part in key:
        tree = tree[part]
    return tree


@st.composite
def mutated(draw: st.DrawFn, bases: list[Any]) -> str:
    """A shipped file's data with a few random edits, dumped as YAML text."""
    data = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)
        key = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["drop", "retype", "nest", "share", "rename", "add", "evil"]))
        if key == ():
            if op in ("drop", "retype", "nest") and draw(st.booleans()):
                data = draw(_values)
            continue
        parent, last = _get(data, key[:-1]), key[-1]
        if op == "drop":
            del parent[last]
        elif op == "retype":
            parent[last] = draw(_values)
        elif op == "nest":
            value = parent[last]
            for _ in range(draw(st.sampled_from([1, 5, 40, 63, 64, 65, 80]))):
                value = [value] if draw(st.booleans()) else {"a": value}
            parent[last] = value
        elif op == "share":
            # The same object twice: safe_dump writes an anchor and an alias (or, for an
            # ancestor, a document that refers to itself).
            parent[last] = _get(data, draw(st.sampled_from(paths)))
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(EVIL_STRINGS))] = parent.pop(last)
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(_values)
        elif op == "evil":  # a value of the same type, at an edge: where checks get skipped
            value = parent[last]
            if isinstance(value, str):
                parent[last] = draw(st.sampled_from(EVIL_STRINGS))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                parent[last] = draw(st.sampled_from(EVIL_NUMBERS))
    return str(yaml.dump(data, Dumper=_DUMPER, sort_keys=False,
                         allow_unicode=draw(st.booleans()),
                         default_flow_style=draw(st.sampled_from([False, None, True]))))


def _bomb(levels: int, width: int) -> str:
    lines = ["name: bomb", "command: [x]", 'l0: &l0 ["lol"]']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _deep(depth: int, mapping: bool) -> str:
    return ("{a: " * depth + "1" + "}" * depth) if mapping else ("[" * depth + "]" * depth)


def documents(bases: list[Any]) -> st.SearchStrategy[str]:
    return st.one_of(
        _values.map(lambda v: str(yaml.dump(v, Dumper=_DUMPER, allow_unicode=True))),
        mutated(bases),
        mutated(bases),  # twice: the shipped files, edited, reach the deepest checks
        st.builds(_bomb, st.integers(1, 12), st.integers(1, 12)),
        st.builds(_deep, st.sampled_from([1, 63, 64, 65, 1000, 100_000]), st.booleans()),
        st.text(max_size=200),
    )


@st.composite
def with_syntax(draw: st.DrawFn, bases: list[Any]) -> str:
    """A document with YAML syntax inserted at a few random places."""
    text = draw(documents(bases))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(_SYNTAX)) + text[at:]
    return text


@st.composite
def raw_bytes(draw: st.DrawFn, bases: list[Any]) -> bytes:
    """A document's UTF-8 with random bytes inserted, replaced or cut off."""
    data = draw(with_syntax(bases)).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "replace", "cut", "broken"]))
        if op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        elif op == "replace" and at < len(data):
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        elif op == "cut":
            data = data[:at]
        else:  # the first bytes of a multi-byte character, or bytes never valid in UTF-8
            data = data[:at] + draw(st.sampled_from([b"\xc3", b"\xe2\x82", b"\xff", b"\xc0\xaf",
                                                     b"\xed\xa0\x80"])) + data[at:]
    return data


def _holds(load: Callable[[], Any], expected: type, paths: set[str]) -> None:
    try:
        result = load()
    except ConfigError as exc:
        text = str(exc)
        assert len(text.splitlines()) == 1 and "\n" not in text, repr(text)
        assert any(text.startswith(f"{p}:") for p in paths), repr(text)
        return
    assert isinstance(result, expected) and isinstance(result, (AdapterSpec, ClusterConfig))
    assert all(math.isfinite(n) for n in _numbers(result)), result


def _numbers(result: AdapterSpec | ClusterConfig) -> list[float]:
    """The settings of ``result`` that are times or sizes: each must be a finite number."""
    if isinstance(result, AdapterSpec):
        return [result.turn_timeout_s, result.exit.timeout_s, result.exit.signal_grace_s,
                result.startup.timeout_s]
    restart = result.restart
    return [result.log_max_mb, result.queue_timeout_s or 0.0, restart.backoff_s,
            restart.backoff_max_s, restart.fast_failure_s]


def _write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def _adapter_holds(folder: Path, data: str | bytes) -> None:
    path = _write(folder / "fuzzed.yaml", data)
    # A fresh registry each time (its cache goes by mtime, which two quick writes may share),
    # with the shipped adapters below, so `extends` finds real parents.
    registry = AdapterRegistry([("builtin", ADAPTERS), ("user", folder)])
    # An error may be reported in a parent the fuzzed file extends.
    allowed = {str(path)} | {str(p) for p in SHIPPED}
    _holds(lambda: registry.load_path(path, origin="user"), AdapterSpec, allowed)
    # Listing reads the file's name through the same bounded loader, and never fails.
    assert [info.path for info in AdapterRegistry([("user", folder)]).list()] == [path]


@pytest.fixture(scope="module")
def adapter_folder(folder: Path) -> Path:
    (folder / "adapters").mkdir(exist_ok=True)
    return folder / "adapters"


@FUZZ
@given(text=with_syntax(ADAPTER_DATA))
def test_adapter_loader_on_random_yaml(adapter_folder: Path, text: str) -> None:
    _adapter_holds(adapter_folder, text)


@FUZZ
@given(data=raw_bytes(ADAPTER_DATA))
def test_adapter_loader_on_random_bytes(adapter_folder: Path, data: bytes) -> None:
    _adapter_holds(adapter_folder, data)


@FUZZ
@given(text=with_syntax([CLUSTER_DATA]))
def test_cluster_loader_on_random_yaml(folder: Path, text: str) -> None:
    path = _write(folder / "cluster.yaml", text)
    _holds(lambda: load_cluster_config(path), ClusterConfig, {str(path)})


def test_cluster_loader_on_broken_utf8(folder: Path) -> None:
    path = _write(folder / "cluster.yaml", b"instances:\n  - adapter: \xff\n")
    _holds(lambda: load_cluster_config(path), ClusterConfig, {str(path)})
    with pytest.raises(ConfigError, match=r"cluster.yaml:2: not UTF-8 text"):
        load_cluster_config(path)


def test_cluster_loader_reads_at_most_the_bound(folder: Path) -> None:
    # /dev/zero never ends: only the bound stops the read.
    with pytest.raises(ConfigError, match="1048576 bytes"):
        load_cluster_config("/dev/zero")


def test_the_shipped_files_still_load() -> None:
    registry = AdapterRegistry([("builtin", ADAPTERS)])
    for path in SHIPPED:
        assert isinstance(registry.load_path(path), AdapterSpec)
    assert isinstance(load_cluster_config(ROOT / "configs" / "cluster.yaml"), ClusterConfig)
