"""The plan's shape (levels, order, critical path, waves, the dry run) and write-scope overlap."""

from __future__ import annotations

import json

import pytest

from aimterm.plans.graph import PlanGraph, dry_run_text, find_cycle, scopes_overlap
from aimterm.plans.spec import Plan, PlanGlobals, Step


def plan(*steps: tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], str],
         concurrency: int = 1) -> Plan:
    """Steps as (id, depends_on) or (id, depends_on, conflict_group), in file order."""
    built = [Step(id=s[0], tool="demo", prompt=f"do {s[0]}", depends_on=s[1],
                  conflict_group=s[2] if len(s) > 2 else None) for s in steps]
    return Plan(id="p", steps=tuple(built), globals=PlanGlobals(max_concurrency=concurrency))


CHAIN = plan(("a", ()), ("b", ("a",)), ("c", ("b",)))
DIAMOND = plan(("top", ()), ("left", ("top",)), ("right", ("top",)),
               ("bottom", ("left", "right")))
WIDE = plan(*[(f"s{i}", ()) for i in range(5)], ("end", tuple(f"s{i}" for i in range(5))))


# -- scopes_overlap ---------------------------------------------------------------------------

OVERLAP = [
    ("src/**", "src/a.py"),
    ("src/*.py", "src/a.py"),
    ("a/**", "a"),
    ("src", "src/a/b.py"),
    ("src/", "src/a.py"),
    ("src/a.py", "src/a.py"),
    ("./src//a.py", "src/a.py"),
    ("**", "docs/x.md"),
    (".", "anything/at/all"),
    ("**/*.md", "docs/guide/x.md"),
    ("docs/**/*.md", "docs/x.md"),  # ** takes no folder too
    ("src/*", "src/sub/a.py"),  # src/sub is a folder src/* names
    ("src/?.py", "src/a.py"),
    ("src/[ab].py", "src/b.py"),
    ("src/[a-c].py", "src/[b-z].py"),
    ("src/[!a].py", "src/b.py"),
    ("src/[!a].py", "src/[!b].py"),
    ("src/[^a].py", "src/a.py"),  # '^' may be read as a plain character: taken as any
    ("src/[[:alpha:]].py", "src/q.py"),
    ("a*", "*b"),
    ("test_*.py", "*_util.py"),
    ("src/**/x.py", "src/a/b/x.py"),
    ("**/test_*.py", "tests/test_a.py"),
    ("a/*/c", "a/b/*"),
    ("*.py", "a.py"),
    ("src/a.py", "src/a.py/inner"),  # a plain name might be a folder
    ("[", "["),  # an unclosed bracket is itself
    ("**/*.md", "x.py"),  # x.py might be a folder holding y.md
]
APART = [
    ("src/*.py", "docs/*.md"),
    ("a/*.py", "a/b/c.py"),  # '*' does not cross '/'
    ("src/a.py", "src/b.py"),
    ("src/a.py", "src/a.pyc"),
    ("src", "srcs"),
    ("src/", "docs/"),
    ("*.py", "*.md"),
    ("src/?.py", "src/ab.py"),
    ("src/[ab].py", "src/c.py"),
    ("src/[a-c].py", "src/[d-f].py"),
    ("src/[!ab].py", "src/a.py"),
    ("a*b", "*c"),
    ("docs/**/*.md", "src/x.md"),
    ("a/b/c", "a/c/b"),
    ("A.py", "a.py"),  # case counts, as in git
    ("src/x?", "src/x"),
]


@pytest.mark.parametrize(("a", "b"), OVERLAP)
def test_scopes_that_overlap(a: str, b: str) -> None:
    assert scopes_overlap(a, b)
    assert scopes_overlap(b, a)


@pytest.mark.parametrize(("a", "b"), APART)
def test_scopes_that_do_not_overlap(a: str, b: str) -> None:
    assert not scopes_overlap(a, b)
    assert not scopes_overlap(b, a)


def test_overlap_cases_are_many() -> None:
    assert len(OVERLAP) + len(APART) >= 25


# -- find_cycle -------------------------------------------------------------------------------

def test_find_cycle_reads_as_depends_on_from_the_first_step() -> None:
    assert find_cycle({"x": (), "b": ("c",), "a": ("b",), "c": ("a",)}) == ["b", "c", "a", "b"]
    assert find_cycle({"a": ("b",), "b": ("c",), "c": ("a",)}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ("a",)}) == ["a", "a"]
    assert find_cycle({"a": (), "b": ("a",)}) is None


# -- PlanGraph --------------------------------------------------------------------------------

def test_chain() -> None:
    g = PlanGraph(CHAIN)
    assert g.levels() == [["a"], ["b"], ["c"]]
    assert g.order() == ["a", "b", "c"]
    assert g.critical_path() == ["a", "b", "c"]
    assert g.dependents("a") == ["b", "c"]
    assert g.dependents("c") == []
    assert g.waves(4) == [["a"], ["b"], ["c"]]


def test_diamond() -> None:
    g = PlanGraph(DIAMOND)
    assert g.levels() == [["top"], ["left", "right"], ["bottom"]]
    assert g.order() == ["top", "left", "right", "bottom"]
    assert g.critical_path() == ["top", "left", "bottom"]  # a tie: file order
    assert g.critical_path({"right": 5}) == ["top", "right", "bottom"]
    assert g.dependents("left") == ["bottom"]
    assert g.dependents("top") == ["left", "right", "bottom"]
    assert g.waves(2) == [["top"], ["left", "right"], ["bottom"]]
    assert g.waves(1) == [["top"], ["left"], ["right"], ["bottom"]]


def test_wide() -> None:
    g = PlanGraph(WIDE)
    assert g.levels() == [["s0", "s1", "s2", "s3", "s4"], ["end"]]
    assert g.waves(2) == [["s0", "s1"], ["s2", "s3"], ["s4"], ["end"]]
    assert g.waves(10) == [["s0", "s1", "s2", "s3", "s4"], ["end"]]
    assert len(g.waves(1)) == 6
    s = g.summary(2)
    assert s["profile"] == [5, 1]
    assert s["max_parallelism"] == 5
    assert s["steps"] == 6
    assert s["critical_path"] == ["s0", "end"]
    json.dumps(s)  # JSON-able


def test_file_order_breaks_ties_not_ids() -> None:
    g = PlanGraph(plan(("z", ()), ("m", ()), ("a", ("z",))))
    assert g.order() == ["z", "m", "a"]
    assert g.levels() == [["z", "m"], ["a"]]
    # z holds up a; then m and a tie (nothing below either): file order.
    assert g.waves(1) == [["z"], ["m"], ["a"]]


def test_waves_start_the_longest_chain_first() -> None:
    # "late" is last in the file but holds up two more steps: it goes in the first wave.
    g = PlanGraph(plan(("x", ()), ("y", ()), ("late", ()), ("l2", ("late",)), ("l3", ("l2",))))
    assert g.waves(1)[0] == ["late"]
    assert g.waves(2) == [["x", "late"], ["y", "l2"], ["l3"]]


def test_conflict_groups_never_share_a_wave() -> None:
    p = plan(("a", (), "db"), ("b", (), "db"), ("c", ()), ("d", (), "db"))
    g = PlanGraph(p)
    assert g.levels() == [["a", "b", "c", "d"]]
    assert g.waves(4) == [["a", "c"], ["b"], ["d"]]
    assert g.conflict_groups() == {"db": ["a", "b", "d"]}
    assert g.summary(4)["conflict_groups"] == {"db": ["a", "b", "d"]}


def test_max_concurrency_one_is_the_order() -> None:
    g = PlanGraph(DIAMOND)
    assert [w[0] for w in g.waves(1)] == g.order()
    with pytest.raises(ValueError, match="at least 1"):
        g.waves(0)


def test_critical_path_weights() -> None:
    g = PlanGraph(WIDE)
    assert g.critical_path({"s3": 10}) == ["s3", "end"]
    assert g.critical_path({"s0": 0, "s1": 0, "s2": 0, "s3": 0, "s4": 0, "end": 0}) == [
        "s0", "end"]  # equal weights: the chain of more steps
    with pytest.raises(ValueError, match="finite number >= 0"):
        g.critical_path({"s0": -1})


def test_independent_steps_critical_path_is_one_step() -> None:
    g = PlanGraph(plan(("a", ()), ("b", ())))
    assert g.critical_path() == ["a"]
    assert g.critical_path({"b": 2}) == ["b"]


def test_dependents_unknown_step() -> None:
    with pytest.raises(KeyError):
        PlanGraph(CHAIN).dependents("nope")


def test_refuses_bad_plans() -> None:
    with pytest.raises(ValueError, match="a cycle: a -> b -> a"):
        PlanGraph(plan(("a", ("b",)), ("b", ("a",))))
    with pytest.raises(ValueError, match="'a' depends on 'x', which is no step"):
        PlanGraph(plan(("a", ("x",))))
    with pytest.raises(ValueError, match="two steps have the id 'a'"):
        PlanGraph(plan(("a", ()), ("a", ())))


# -- dry_run_text -----------------------------------------------------------------------------

def test_dry_run_text() -> None:
    p = plan(("a", (), "db"), ("b", (), "db"), ("c", ("a", "b")), concurrency=2)
    text = dry_run_text(p)
    assert text.startswith("plan p: 3 steps, at most 2 at once\n")
    assert "  1. a, b\n  2. c\n" in text  # the levels
    assert "  1. ## 2\n  2. # 1\n" in text  # the profile
    assert "critical path (2 steps): a -> c\n" in text
    waves = text.split("waves")[1]
    assert "  1. a\n  2. b\n  3. c\n" in waves  # one db step at a time
    assert "  db: a, b\n" in text
    assert "group db" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "at most 1 at once" in dry_run_text(p, 1)


def test_dry_run_text_wraps_long_lists_in_80_columns() -> None:
    p = plan(*[(f"step-number-{i}", ()) for i in range(30)], concurrency=30)
    text = dry_run_text(p)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "widest level: 30 steps" in text
    assert "step-number-29" in text
    assert "conflict groups: none" in text
