"""The shape of a plan: its levels, a topological order, the critical path, and which steps can
run together; and whether two write scopes can name one file (:func:`scopes_overlap`).

Pure and standard library only: the loader checks a plan with it before anything runs, the
scheduler orders steps with it, and ``aimterm run PLAN --dry-run`` prints
:func:`dry_run_text`.
"""

from __future__ import annotations

import functools
import graphlib
import heapq
import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from aimterm.plans.spec import Plan

__all__ = ["PlanGraph", "dry_run_text", "find_cycle", "scopes_overlap"]

WIDTH = 80  # the dry run's text fits a plain terminal


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle among ``depends_on`` (step id -> the ids it depends on), or ``None``.

    The cycle reads in the "depends on" direction and starts and ends at its member that
    comes first in the mapping's order: ``["a", "b", "c", "a"]`` is a depending on b, b on c,
    c on a. Ids that name no key are taken as steps without dependencies.
    """
    try:
        graphlib.TopologicalSorter(depends_on).prepare()
    except graphlib.CycleError as exc:
        # graphlib lists each node before the one that depends on it: turned around, the path
        # reads as the file does ("a depends on b").
        found = list(reversed(exc.args[1][:-1]))
        rank = {sid: i for i, sid in enumerate(depends_on)}
        start = min(range(len(found)), key=lambda i: rank.get(found[i], len(rank)))
        path = found[start:] + found[:start]
        return [*path, path[0]]
    return None


class PlanGraph:
    """The dependency graph of ``plan``'s steps. Every answer lists steps in file order where
    order is otherwise free, so the same plan always reads the same way.

    Raises :class:`ValueError` for a plan the loader would refuse: a duplicate id, a
    dependency on no step, a cycle.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._ids = [s.id for s in plan.steps]
        self._index = {sid: i for i, sid in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            twice = next(sid for i, sid in enumerate(self._ids) if self._index[sid] != i)
            raise ValueError(f"two steps have the id {twice!r}")
        self._deps = {s.id: tuple(dict.fromkeys(s.depends_on)) for s in plan.steps}
        self._children: dict[str, list[str]] = {sid: [] for sid in self._ids}
        for sid in self._ids:
            for dep in self._deps[sid]:
                if dep not in self._index:
                    raise ValueError(f"step {sid!r} depends on {dep!r}, which is no step")
                self._children[dep].append(sid)
        cycle = find_cycle(self._deps)
        if cycle is not None:
            raise ValueError(f"a cycle: {' -> '.join(cycle)}")
        self._order = self._topological()
        # The longest chain from each step to the end, itself included: what the scheduler
        # starts first.
        self._reach: dict[str, int] = {}
        for sid in reversed(self._order):
            below = [self._reach[c] for c in self._children[sid]]
            self._reach[sid] = 1 + (max(below) if below else 0)

    def _topological(self) -> list[str]:
        waiting = {sid: len(deps) for sid, deps in self._deps.items()}
        ready = [self._index[sid] for sid, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        out: list[str] = []
        while ready:
            sid = self._ids[heapq.heappop(ready)]
            out.append(sid)
            for child in self._children[sid]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, self._index[child])
        return out

    def _in_file_order(self, ids: Sequence[str] | set[str]) -> list[str]:
        return sorted(ids, key=self._index.__getitem__)

    def order(self) -> list[str]:
        """Every step after all it depends on; of the steps free to go next, the first in the
        file goes first."""
        return list(self._order)

    def levels(self) -> list[list[str]]:
        """Topological levels: level 0 holds the steps without dependencies, level n those
        whose longest chain of dependencies is n long. Each level in file order."""
        depth: dict[str, int] = {}
        for sid in self._order:
            deps = self._deps[sid]
            depth[sid] = 1 + max(depth[d] for d in deps) if deps else 0
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for sid in self._ids:
            out[depth[sid]].append(sid)
        return out

    def dependents(self, step_id: str) -> list[str]:
        """Every step that depends on ``step_id``, directly or not, in file order. Raises
        :class:`KeyError` for an unknown id."""
        if step_id not in self._index:
            raise KeyError(step_id)
        seen: set[str] = set()
        todo = [step_id]
        while todo:
            for child in self._children[todo.pop()]:
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return self._in_file_order(seen)

    def critical_path(self, weights: Mapping[str, float] | None = None) -> list[str]:
        """The heaviest chain of dependencies, first step first: each step weighs
        ``weights[id]`` (1 when missing, or without ``weights``). Between chains of equal
        weight the one of more steps wins, then the one ending (and going through) earlier
        steps of the file."""
        weight: dict[str, float] = {}
        for sid in self._ids:
            value = float(weights.get(sid, 1.0)) if weights is not None else 1.0
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"the weight of step {sid!r} must be a finite number >= 0, "
                                 f"got {value}")
            weight[sid] = value
        best: dict[str, tuple[float, int]] = {}  # (weight, steps) of the heaviest chain
        before: dict[str, str | None] = {}
        for sid in self._order:
            deps = self._deps[sid]
            if deps:
                pick = max(deps, key=lambda d: (best[d], -self._index[d]))
                total, steps = best[pick]
                best[sid], before[sid] = (weight[sid] + total, steps + 1), pick
            else:
                best[sid], before[sid] = (weight[sid], 1), None
        if not self._ids:
            return []
        end: str | None = max(self._ids, key=lambda s: (best[s], -self._index[s]))
        path: list[str] = []
        while end is not None:
            path.append(end)
            end = before[end]
        return path[::-1]

    def waves(self, max_concurrency: int) -> list[list[str]]:
        """The run simulated with every step taking one unit of time: the steps of each wave
        run together. A wave holds at most ``max_concurrency`` steps and at most one of each
        conflict group; steps are picked as the scheduler picks them (the longest chain below
        first, then file order). Each wave is listed in file order."""
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        group = {s.id: s.conflict_group for s in self.plan.steps}
        done: set[str] = set()
        left = list(self._ids)
        out: list[list[str]] = []
        while left:
            ready = [s for s in left if all(d in done for d in self._deps[s])]
            ready.sort(key=lambda s: (-self._reach[s], self._index[s]))
            wave: list[str] = []
            busy: set[str] = set()
            for sid in ready:
                if len(wave) >= max_concurrency:
                    break
                name = group[sid]
                if name is not None and name in busy:
                    continue
                wave.append(sid)
                if name is not None:
                    busy.add(name)
            done.update(wave)
            left = [s for s in left if s not in done]
            out.append(self._in_file_order(wave))
        return out

    def conflict_groups(self) -> dict[str, list[str]]:
        """Each conflict group and its steps, groups in the order of their first step."""
        out: dict[str, list[str]] = {}
        for step in self.plan.steps:
            if step.conflict_group is not None:
                out.setdefault(step.conflict_group, []).append(step.id)
        return out

    def summary(self, max_concurrency: int) -> dict[str, Any]:
        """The shape as JSON data: ``steps`` (how many), ``levels``, ``profile`` (the width of
        each level), ``max_parallelism`` (the widest level), ``critical_path``, ``waves``
        (under ``max_concurrency``), ``max_concurrency`` and ``conflict_groups``."""
        levels = self.levels()
        profile = [len(level) for level in levels]
        return {"steps": len(self._ids), "levels": levels, "profile": profile,
                "max_parallelism": max(profile, default=0),
                "critical_path": self.critical_path(), "waves": self.waves(max_concurrency),
                "max_concurrency": max_concurrency, "conflict_groups": self.conflict_groups()}


def _wrap(label: str, words: Sequence[str], sep: str = ", ") -> list[str]:
    """``label`` then ``words`` joined by ``sep``, continued under the first word."""
    text = sep.join(words) if words else "-"
    return textwrap.wrap(text, width=WIDTH, initial_indent=label,
                         subsequent_indent=" " * len(label), break_long_words=False,
                         break_on_hyphens=False) or [label.rstrip()]


def dry_run_text(plan: Plan, max_concurrency: int | None = None) -> str:
    """What running ``plan`` would do, for a person: its steps, the levels, the parallelism
    profile, the critical path and the waves (which steps run together under
    ``max_concurrency``, default the plan's), conflict groups named. Lines fit 80 columns
    (an id longer than a line excepted)."""
    graph = PlanGraph(plan)
    most = max_concurrency if max_concurrency is not None else plan.globals.max_concurrency
    shape = graph.summary(most)
    count = shape["steps"]
    lines = [f"plan {plan.id}: {count} step{'s' if count != 1 else ''}, at most {most} at once"]
    if plan.source:
        lines.append(f"  from {plan.source}")
    lines += ["", "steps:"]
    width = min(max((len(s.id) for s in plan.steps), default=0), 24)
    for step in plan.steps:
        parts = [step.tool]
        if step.depends_on:
            parts.append("after " + ", ".join(step.depends_on))
        if step.conflict_group is not None:
            parts.append(f"group {step.conflict_group}")
        if step.writes:
            parts.append("writes " + " ".join(step.writes))
        if not step.edits:
            parts.append("no edits")
        lines += _wrap(f"  {step.id.ljust(width)}  ", parts, "; ")
    lines += ["", "levels (each step after all it depends on, in the levels above):"]
    digits = len(str(len(shape["levels"])))
    for n, level in enumerate(shape["levels"], 1):
        lines += _wrap(f"  {str(n).rjust(digits)}. ", level)
    widest = shape["max_parallelism"]
    lines += ["", "parallelism profile (steps per level):"]
    for n, size in enumerate(shape["profile"], 1):
        bar = "#" * min(size, WIDTH - 20) + ("+" if size > WIDTH - 20 else "")
        lines.append(f"  {str(n).rjust(digits)}. {bar} {size}")
    lines.append(f"  widest level: {widest} step{'s' if widest != 1 else ''}"
                 + (f", more than {most} at once (max_concurrency)" if widest > most else ""))
    path = shape["critical_path"]
    lines += [""] + _wrap(f"critical path ({len(path)} step{'s' if len(path) != 1 else ''}): ",
                          path, " -> ")
    lines += ["", f"waves (at most {most} at once, one per conflict group, each step one unit "
                  "long):"]
    wave_digits = len(str(len(shape["waves"])))
    for n, wave in enumerate(shape["waves"], 1):
        lines += _wrap(f"  {str(n).rjust(wave_digits)}. ", wave)
    groups = shape["conflict_groups"]
    lines += ["", "conflict groups (their steps never run at once):" if groups
              else "conflict groups: none"]
    for name, members in groups.items():
        lines += _wrap(f"  {name}: ", members)
    return "\n".join(lines) + "\n"


# -- write scopes -----------------------------------------------------------------------------

_Chars = tuple[bool, tuple[tuple[int, int], ...]]  # (negated, code point ranges)
_ANY: _Chars = (True, ())
_GLOB = frozenset("*?[")
_STAR = None  # a '*' token: any run of characters within one folder name


def _parse_segment(text: str) -> list[_Chars | None]:
    """One folder or file name of a glob as tokens: a set of characters each, or ``_STAR``.
    Brackets as in :mod:`fnmatch` (``[!...]``); an unclosed ``[`` is itself."""
    out: list[_Chars | None] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "*":
            if not out or out[-1] is not _STAR:
                out.append(_STAR)
            i += 1
        elif ch == "?":
            out.append(_ANY)
            i += 1
        elif ch == "[":
            j, posix = i + 1, False
            if j < n and text[j] in "!^":
                j += 1
            if j < n and text[j] == "]":
                j += 1
            while j < n and text[j] != "]":
                if text.startswith("[:", j) and ":]" in text[j + 2:]:
                    posix = True  # git's [[:alpha:]]: taken as any character
                    j = text.index(":]", j + 2) + 2
                    continue
                j += 1
            if j >= n:
                out.append((False, ((ord(ch), ord(ch)),)))
                i += 1
                continue
            body = text[i + 1:j]
            i = j + 1
            # '^' is negation to git and a plain character to fnmatch: either may read the
            # scope, so such a class (and a POSIX one) is taken as any character.
            if posix or body.startswith("^"):
                out.append(_ANY)
                continue
            negated = body.startswith("!")
            body = body[1:] if negated else body
            ranges: list[tuple[int, int]] = []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    lo, hi = ord(body[k]), ord(body[k + 2])
                    if lo <= hi:
                        ranges.append((lo, hi))
                    k += 3
                else:
                    ranges.append((ord(body[k]), ord(body[k])))
                    k += 1
            out.append((negated, tuple(ranges)))
        else:
            out.append((False, ((ord(ch), ord(ch)),)))
            i += 1
    return out


def _some_outside(ranges: tuple[tuple[int, int], ...], excluded: tuple[tuple[int, int], ...]
                  ) -> bool:
    """Whether some code point of ``ranges`` is in none of ``excluded``."""
    for lo, hi in ranges:
        cur = lo
        for elo, ehi in sorted(excluded):
            if ehi < cur:
                continue
            if elo > cur:
                break
            cur = ehi + 1
            if cur > hi:
                break
        if cur <= hi:
            return True
    return False


def _chars_meet(a: _Chars, b: _Chars) -> bool:
    if a[0] and b[0]:
        return True  # each leaves out finitely many characters: plenty are left to both
    if not a[0] and not b[0]:
        return any(lo <= bhi and blo <= hi for lo, hi in a[1] for blo, bhi in b[1])
    positive, negative = (a[1], b[1]) if b[0] else (b[1], a[1])
    return _some_outside(positive, negative)


@functools.lru_cache(maxsize=4096)  # a plan's scopes repeat the same few names
def _segments_meet(a: str, b: str) -> bool:
    """Whether one folder or file name matches both single-name globs ``a`` and ``b``."""
    pa, pb = _parse_segment(a), _parse_segment(b)
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        x, y = state
        if x == len(pa) and y == len(pb):
            return True
        if x < len(pa) and pa[x] is _STAR:
            todo.append((x + 1, y))  # the star takes nothing (more)
        if y < len(pb) and pb[y] is _STAR:
            todo.append((x, y + 1))
        if x == len(pa) or y == len(pb):
            continue
        # One character both take: a star keeps its place, any other token moves on.
        ta, tb = pa[x], pb[y]
        ca, nx = (_ANY, x) if ta is None else (ta, x + 1)
        cb, ny = (_ANY, y) if tb is None else (tb, y + 1)
        if (nx, ny) != (x, y) and _chars_meet(ca, cb):
            todo.append((nx, ny))
    return False


@functools.lru_cache(maxsize=4096)
def _split(pattern: str) -> tuple[tuple[str, ...], bool]:
    """The names of ``pattern`` (``**`` runs as one), and whether any of them is a glob."""
    out: list[str] = []
    for part in pattern.split("/"):
        if part in ("", ".") or (part == "**" and out and out[-1] == "**"):
            continue
        out.append(part)
    return tuple(out), any(_GLOB.intersection(part) for part in out)


def scopes_overlap(a: str, b: str) -> bool:
    """Whether two write scopes can name one file: some path matches both, or lies below a
    path that one of them matches (a path that is a folder covers everything in it, so
    ``src`` and ``src/`` cover ``src/a.py``, and so does ``src/*``).

    Globs are git's, relative to the repository: ``*`` and ``?`` and ``[...]`` stay within
    one name (they never match ``/``), ``**`` as a whole name matches any number of folders,
    ``.`` and an empty pattern are the whole repository. Case counts. When a pattern could be
    read two ways (``[^a]``), the reading that overlaps more is taken: a wrong "no" would let
    two steps write one file at once, a wrong "yes" only asks for a conflict group.
    """
    (sa, glob_a), (sb, glob_b) = _split(a), _split(b)
    if not glob_a and not glob_b:
        return sa[:len(sb)] == sb[:len(sa)]  # plain paths: one is in the other
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        i, j = state
        if i == len(sa) or j == len(sb):
            return True  # one pattern is spent: it covers whatever lies below, the other too
        star_a, star_b = sa[i] == "**", sb[j] == "**"
        if star_a:
            todo += [(i + 1, j), (i, j + 1)]  # '**' takes no name, or the other's next one
        if star_b:
            todo += [(i, j + 1), (i + 1, j)]
        if not star_a and not star_b and _segments_meet(sa[i], sb[j]):
            todo.append((i + 1, j + 1))
    return False
