"""The conflict radar: which running steps' work would conflict, with each other or with the
integration branch, if merged now — found early, while the steps still run.

Each pair is tried with ``git merge-tree --write-tree``, an in-memory merge that touches no
worktree. Pairs that changed no file in common (each side against the pair's merge base)
cannot conflict and are skipped before that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain, combinations, islice
from pathlib import Path

from aimterm.plans.git import Git, GitError

__all__ = ["INTEGRATION", "MAX_MERGES", "MAX_PAIRS", "Prediction", "predict"]

#: The name the integration head goes by in a :class:`Prediction`.
INTEGRATION = "integration"
#: Bounds of one call, however many steps are handed in: pairs looked at (a merge base and
#: the files each side changed), and trial merges among them. Pairs past either bound are
#: not tried; the order is fixed, so the same pairs are left out each time.
MAX_PAIRS = 2000
MAX_MERGES = 400


@dataclass(frozen=True)
class Prediction:
    """Merging ``a`` and ``b`` (step ids, or ``"integration"``) would conflict in ``paths``."""

    a: str
    b: str
    paths: tuple[str, ...]


class _Repo:
    """The git questions of one prediction, each asked once."""

    def __init__(self, repo: Path) -> None:
        self.git = Git(repo)
        self._bases: dict[tuple[str, str], str | None] = {}
        self._changed: dict[tuple[str, str], frozenset[str]] = {}

    def resolve(self, revs: list[str]) -> list[str]:
        if any(r.startswith("-") for r in revs):
            raise GitError(f"not a commit: {next(r for r in revs if r.startswith('-'))!r}")
        proc = self.git.run("rev-parse", *(f"{r}^{{commit}}" for r in revs), check=False)
        shas = proc.stdout.split()
        if proc.returncode != 0 or len(shas) != len(revs):
            raise GitError("the conflict radar was given a commit that does not exist",
                           command=["git", "rev-parse", *revs], returncode=proc.returncode,
                           stderr_tail=proc.stderr.strip())
        return shas

    def base(self, a: str, b: str) -> str | None:
        key = (a, b) if a < b else (b, a)
        if key not in self._bases:
            proc = self.git.run("merge-base", a, b, check=False)
            found = proc.stdout.strip() if proc.returncode == 0 else ""
            self._bases[key] = found or None
        return self._bases[key]

    def changed(self, base: str, commit: str) -> frozenset[str]:
        key = (base, commit)
        if key not in self._changed:
            # Without rename detection a rename is its two paths: more, never fewer.
            out = self.git.run("diff", "--name-only", "--no-renames", "-z", base, commit,
                               "--").stdout
            self._changed[key] = frozenset(p for p in out.split("\0") if p)
        return self._changed[key]

    def conflicts(self, a: str, b: str) -> tuple[str, ...] | None:
        """The paths merging ``a`` and ``b`` would conflict in; None when it merges
        cleanly (or cannot be tried)."""
        proc = self.git.run("merge-tree", "--write-tree", "--name-only", "--no-messages",
                            "-z", a, b, check=False)
        if proc.returncode != 1:
            return None
        # "<tree id>\0" then the conflicted paths, each "\0"-terminated.
        fields = [f for f in proc.stdout.split("\0") if f]
        return tuple(sorted(set(fields[1:]))) or None


def predict(repo: Path, heads: Mapping[str, str], integration: str, *,
            max_pairs: int = MAX_PAIRS, max_merges: int = MAX_MERGES) -> list[Prediction]:
    """The pairs that would conflict: every step of ``heads`` (step id -> a commit of its
    work) against ``integration`` (by step id), then every pair of steps (in sorted order,
    ``a < b``). At most ``max_pairs`` pairs are looked at and ``max_merges`` trial merges
    run."""
    if INTEGRATION in heads:
        raise ValueError(f"{INTEGRATION!r} cannot be a step id of the radar")
    if not heads:
        return []
    git = _Repo(repo)
    ids = sorted(heads)
    shas = git.resolve([heads[s] for s in ids] + [integration])
    commit = dict(zip(ids, shas[:-1], strict=True))
    commit[INTEGRATION] = shas[-1]
    todo = chain(((s, INTEGRATION) for s in ids), combinations(ids, 2))
    found: list[Prediction] = []
    merges = 0
    for a, b in islice(todo, max_pairs):
        ca, cb = commit[a], commit[b]
        if ca == cb:
            continue
        base = git.base(ca, cb)
        if base is not None and not (git.changed(base, ca) & git.changed(base, cb)):
            continue
        if merges >= max_merges:
            break
        merges += 1
        paths = git.conflicts(ca, cb)
        if paths:
            found.append(Prediction(a, b, paths))
    return found
