"""The merge train: finished steps' branches merge into the run's integration branch one at a
time, each merge checked by the gate commands before the next one starts.

The integration branch ``aimterm/<plan_id>/integration`` is checked out in a worktree of its
own (beside the steps', inside ``.git``), so the user's checkout is never touched. Before each
merge the integration head is tagged ``aimterm/<run_id>/pre-<step_id>``; a conflict aborts the
merge, a failing gate resets to that tag. Either way the step's branch is left as it was.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimterm.jobs.checks import run_acceptance
from aimterm.jobs.result import AcceptanceResult
from aimterm.plans.git import Git, GitError, common_dir, head, repo_root
from aimterm.plans.worktrees import _INTEGRATION, _check_name, worktree_list

__all__ = ["Conflict", "MergeOutcome", "MergeTrain", "conflict_kind"]

#: ``git status --porcelain`` codes of unmerged paths, by the kind of conflict they mean.
#: AU/UA/DD appear in rename conflicts (rename/rename, rename/add); a plain both-deleted
#: path is no conflict.
_KINDS = {"UU": "content", "AA": "add", "DU": "delete", "UD": "delete", "AU": "rename",
          "UA": "rename", "DD": "rename"}


def conflict_kind(code: str) -> str:
    return _KINDS.get(code, "content")


@dataclass(frozen=True)
class Conflict:
    """One path a merge could not resolve, and how (``content``, ``add``, ``delete``,
    ``rename``)."""

    path: str
    kind: str


@dataclass(frozen=True)
class MergeOutcome:
    """What one merge did. ``status``: ``merged``, ``conflict``, ``gate_failed`` or ``empty``
    (the branch had nothing the integration branch lacks)."""

    status: str
    step_id: str
    branch: str
    tag: str
    commit: str | None
    conflicts: tuple[Conflict, ...] = ()
    gate: tuple[AcceptanceResult, ...] = ()
    error: str | None = None
    merge_s: float = 0.0
    gate_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "step_id": self.step_id, "branch": self.branch,
                "tag": self.tag, "commit": self.commit,
                "conflicts": [{"path": c.path, "kind": c.kind} for c in self.conflicts],
                "gate": [r.to_dict() for r in self.gate], "error": self.error,
                "merge_s": self.merge_s, "gate_s": self.gate_s}


class MergeTrain:
    """The integration branch of one run, and the one-at-a-time merges into it."""

    def __init__(self, repo: Path, *, plan_id: str, run_id: str, base: str = "HEAD",
                 root: Path | None = None) -> None:
        _check_name("plan id", plan_id)
        _check_name("run id", run_id)
        self.repo = repo_root(repo)
        self.plan_id = plan_id
        self.run_id = run_id
        self.base = base
        self.branch = f"aimterm/{plan_id}/integration"
        self.path = (root if root is not None
                     else common_dir(self.repo) / "aimterm" / "worktrees") / run_id / _INTEGRATION
        self._git = Git(self.repo)
        self._lock = threading.Lock()

    def open(self) -> MergeTrain:
        """Make (or, on resume, reuse) the integration branch and its worktree."""
        with self._lock:
            ref = f"refs/heads/{self.branch}"
            here = None
            for entry in worktree_list(self._git):
                if entry.get("branch") == ref:
                    here = entry
            if here is not None:
                if Path(here["worktree"]).resolve() == self.path.resolve() and self.path.is_dir():
                    return self  # resume: this run's train, as it was left
                raise GitError(f"branch {self.branch} is checked out at {here['worktree']} "
                               "(another run of this plan?); finish that run, or remove that "
                               f"worktree with `git worktree remove {here['worktree']}`")
            self._git.run("worktree", "prune")
            start = head(self.repo, self.base)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._git.ok("show-ref", "--verify", "--quiet", ref):
                if head(self.repo, ref) != start:
                    raise GitError(
                        f"branch {self.branch} already exists from an earlier run and differs "
                        f"from {self.base}; delete it with `git branch -D {self.branch}` (after "
                        "keeping what you need of it) and run again")
                self._git.run("worktree", "add", "--quiet", str(self.path), self.branch)
            else:
                self._git.run("worktree", "add", "--quiet", "-b", self.branch, str(self.path),
                              start)
            return self

    def head(self) -> str:
        return Git(self.path).out("rev-parse", "HEAD")

    def merge(self, step_id: str, branch: str, *, gate: Sequence[str] = (),
              env: Mapping[str, str] | None = None,
              gate_timeout_s: float = 600.0) -> MergeOutcome:
        """Merge ``branch`` (``--no-ff``), then run ``gate`` in the integration worktree;
        a conflict or a failing gate leaves the integration branch where it was."""
        with self._lock:
            return self._merge(step_id, branch, gate, env, gate_timeout_s)

    def _merge(self, step_id: str, branch: str, gate: Sequence[str],
               env: Mapping[str, str] | None, gate_timeout_s: float) -> MergeOutcome:
        git = Git(self.path)
        started = time.monotonic()
        tag = f"aimterm/{self.run_id}/pre-{step_id}"
        self._make_clean(git)
        pre = git.out("rev-parse", "HEAD")
        git.run("tag", "--force", tag, pre)
        ref = branch if branch.startswith("refs/") else f"refs/heads/{branch}"
        tip = head(self.path, ref)
        if git.out("rev-list", "--count", f"{pre}..{tip}") == "0":
            return MergeOutcome("empty", step_id, branch, tag, None,
                                merge_s=round(time.monotonic() - started, 3))
        proc = git.run("merge", "--no-ff", "--no-verify", "--no-edit", "-m",
                       f"Merge {branch}", tip, check=False)
        if proc.returncode != 0:
            conflicts = self._conflicts(git)
            if git.ok("rev-parse", "--verify", "--quiet", "MERGE_HEAD"):
                git.run("merge", "--abort", check=False)
            git.run("reset", "--quiet", "--hard", pre)
            if not conflicts:
                raise GitError(f"cannot merge {branch} into {self.branch}",
                               command=["git", "merge", branch], returncode=proc.returncode,
                               stderr_tail=(proc.stderr + proc.stdout).strip()[-2000:])
            names = ", ".join(c.path for c in conflicts[:10])
            return MergeOutcome("conflict", step_id, branch, tag, None, conflicts,
                                error=f"{branch} conflicts with {self.branch} in {names}",
                                merge_s=round(time.monotonic() - started, 3))
        merged = git.out("rev-parse", "HEAD")
        merge_s = round(time.monotonic() - started, 3)
        if not gate:
            return MergeOutcome("merged", step_id, branch, tag, merged, merge_s=merge_s)
        gate_started = time.monotonic()
        results = run_acceptance(list(gate), cwd=str(self.path),
                                 env={**os.environ, **(env or {})}, timeout_s=gate_timeout_s)
        gate_s = round(time.monotonic() - gate_started, 3)
        # The tree was clean before the merge: whatever the gate left is the gate's.
        self._make_clean(git)
        failed = next((r for r in results if not r.passed), None)
        if failed is None:
            return MergeOutcome("merged", step_id, branch, tag, merged, gate=results,
                                merge_s=merge_s, gate_s=gate_s)
        git.run("reset", "--quiet", "--hard", tag)
        why = "timed out" if failed.exit_code is None else f"exited {failed.exit_code}"
        return MergeOutcome("gate_failed", step_id, branch, tag, None, gate=results,
                            error=f"gate command {failed.command!r} {why} after merging "
                                  f"{branch}",
                            merge_s=merge_s, gate_s=gate_s)

    def _make_clean(self, git: Git) -> None:
        """Back to HEAD: no merge half done (a crash mid-merge), no changed or untracked
        file (what a gate wrote). Ignored files, such as build caches, stay."""
        if git.ok("rev-parse", "--verify", "--quiet", "MERGE_HEAD"):
            git.run("merge", "--abort", check=False)
        if git.out("status", "--porcelain"):
            git.run("reset", "--quiet", "--hard", "HEAD")
            git.run("clean", "-fdq")

    def _conflicts(self, git: Git) -> tuple[Conflict, ...]:
        names = [p for p in git.run("diff", "--name-only", "--diff-filter=U", "-z")
                 .stdout.split("\0") if p]
        codes: dict[str, str] = {}
        for entry in git.run("status", "--porcelain=v1", "-z").stdout.split("\0"):
            if len(entry) > 3 and entry[:2] in _KINDS:
                codes[entry[3:]] = entry[:2]
        paths = sorted(set(names) | set(codes))
        return tuple(Conflict(p, conflict_kind(codes.get(p, "UU"))) for p in paths)

    def close(self, *, keep: bool = False) -> None:
        """Remove the integration worktree (the branch stays: it is the run's result)."""
        with self._lock:
            if keep or not self.path.exists():
                return
            # Only what a gate left can be in it: every merge is committed or rolled back.
            self._git.run("worktree", "remove", "--force", str(self.path))
