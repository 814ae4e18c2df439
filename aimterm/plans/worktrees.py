"""One git worktree and branch per plan step, so steps edit in parallel without touching each
other or the user's checkout.

A run's worktrees live in ``<common git dir>/aimterm/worktrees/<run_id>/<step_id>``: inside
``.git``, so never in the user's working tree or its ``git status``. Each is made with
``git worktree add`` (the user's tree is never checked out anew), gets the git-ignored files
its ``.worktreeinclude`` asks for, and runs the plan's setup command. Work in progress can be
photographed (:meth:`Worktrees.snapshot`) without touching the worktree's index or files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aimterm.jobs.checks import run_acceptance
from aimterm.plans.git import Git, GitError, common_dir, head, repo_root

__all__ = ["INCLUDE_FILE", "Worktree", "Worktrees", "worktree_list"]

#: The file (at the top of the repository) naming ignored files each worktree gets a copy of.
INCLUDE_FILE = ".worktreeinclude"
#: Reserved for the merge train's worktree in the same folder.
_INTEGRATION = "_integration"
#: Files kept in the worktree's private git dir (removed with the worktree).
_BASE_FILE = "aimterm-base"
_READY_FILE = "aimterm-ready"  # the includes were copied and setup passed
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Worktree:
    """A step's worktree: where it is, its branch, and the commit it started from."""

    step_id: str
    path: Path
    branch: str
    base: str


def _pathspecs(ignore: Sequence[str]) -> list[str]:
    """Everything but the files (and folders) whose name matches one of ``ignore``, at any
    depth, as git pathspecs."""
    out = ["."]
    for pattern in ignore:
        out += [f":(exclude,glob)**/{pattern}", f":(exclude,glob)**/{pattern}/**"]
    return out


def _check_name(kind: str, value: str) -> None:
    # These become path components and ref components: keep them plain.
    if not _NAME.match(value) or ".." in value or value.endswith((".lock", ".")):
        raise GitError(f"{kind} {value!r} cannot name a branch and a folder: use letters, "
                       "digits, '.', '_' and '-', starting with a letter or digit")


def worktree_list(git: Git) -> list[dict[str, str]]:
    """``git worktree list --porcelain`` as one dict per worktree (``worktree``, ``HEAD``,
    ``branch``; ``prunable`` / ``locked`` / ``detached`` when so)."""
    out = git.run("worktree", "list", "--porcelain", "-z").stdout
    entries: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for field_ in out.split("\0"):
        if not field_:
            if current:
                entries.append(current)
            current = {}
            continue
        key, _, value = field_.partition(" ")
        current[key] = value
    if current:
        entries.append(current)
    return entries


def private_dir(path: Path) -> Path | None:
    """A linked worktree's own git dir (from its ``.git`` file), None if it has none."""
    try:
        text = (path / ".git").read_text()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    found = Path(text[len("gitdir:"):].strip())
    return found if found.is_absolute() else (path / found).resolve()


def _same(a: Path | str, b: Path | str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


class Worktrees:
    """The worktrees of one run of plan ``plan_id`` in ``repo``."""

    def __init__(self, repo: Path, *, plan_id: str, run_id: str,
                 root: Path | None = None) -> None:
        """``root``: the folder that holds each run's worktrees (default: inside the
        repository's ``.git``; a run of ``aimterm run`` puts them in the state dir, since
        some agent CLIs refuse to write anywhere under a ``.git``)."""
        _check_name("plan id", plan_id)
        _check_name("run id", run_id)
        self.repo = repo_root(repo)
        self.plan_id = plan_id
        self.run_id = run_id
        self.root = (root if root is not None
                     else common_dir(self.repo) / "aimterm" / "worktrees") / run_id
        self.git = Git(self.repo)

    def branch_name(self, step_id: str) -> str:
        return f"aimterm/{self.plan_id}/{step_id}"

    def path_of(self, step_id: str) -> Path:
        return self.root / step_id

    # --- making one ---------------------------------------------------------------------------

    def create(self, step_id: str, start: str, *, setup: str | None = None,
               env: Mapping[str, str] | None = None, setup_timeout_s: float = 600) -> Worktree:
        """The step's worktree on its branch, from ``start``; on resume, the one already
        there (prepared again only if its includes or setup had not finished)."""
        _check_name("step id", step_id)  # never "_integration": the train's folder
        path, branch = self.path_of(step_id), self.branch_name(step_id)
        wt = self._registered(step_id)
        if wt is not None:
            private = private_dir(wt.path)
            if private is None or not (private / _READY_FILE).exists():
                self._prepare(wt, setup, env, setup_timeout_s)
            return wt
        base = head(self.repo, start)
        if os.path.lexists(path) and (not path.is_dir() or any(path.iterdir())):
            raise GitError(f"{path} exists but is not a worktree of {self.repo}; remove it "
                           f"to run step {step_id!r} again")
        if self.git.ok("show-ref", "--verify", "--quiet", f"refs/heads/{branch}"):
            for entry in worktree_list(self.git):
                if entry.get("branch") == f"refs/heads/{branch}":
                    raise GitError(f"branch {branch} is checked out at {entry['worktree']} "
                                   "(another run of this plan?); finish that run, or remove "
                                   f"that worktree with `git worktree remove {entry['worktree']}`")
            if not self.git.ok("merge-base", "--is-ancestor", f"refs/heads/{branch}", base):
                raise GitError(
                    f"branch {branch} already exists (from an earlier run?) and has commits "
                    f"not in {start}; delete it with `git branch -D {branch}` (or merge it) "
                    f"before running step {step_id!r} again")
            # Fully merged: nothing is lost by starting it again from ``start``.
            add = ["worktree", "add", "--quiet", "-B", branch, str(path), base]
        else:
            add = ["worktree", "add", "--quiet", "-b", branch, str(path), base]
        self.root.mkdir(parents=True, exist_ok=True)
        self.git.run(*add)
        private = private_dir(path)
        if private is not None:
            (private / _BASE_FILE).write_text(base + "\n")
        wt = Worktree(step_id, path, branch, base)
        self._prepare(wt, setup, env, setup_timeout_s)
        return wt

    def _prepare(self, wt: Worktree, setup: str | None, env: Mapping[str, str] | None,
                 timeout_s: float) -> None:
        self.copy_includes(wt.path)
        if setup:
            full = {**os.environ, **(env or {})}
            (result,) = run_acceptance([setup], cwd=str(wt.path), env=full, timeout_s=timeout_s)
            if not result.passed:
                why = (f"timed out after {timeout_s:g} s" if result.exit_code is None
                       else f"failed with exit status {result.exit_code}")
                raise GitError(f"setup command {setup!r} for step {wt.step_id!r} {why} in "
                               f"{wt.path}", command=["bash", "-c", setup],
                               returncode=result.exit_code,
                               stderr_tail="\n".join(result.output.splitlines()[-20:]))
        private = private_dir(wt.path)
        if private is not None:
            (private / _READY_FILE).write_text("ok\n")

    def copy_includes(self, dest: Path) -> list[str]:
        """Copy into ``dest`` the ignored files of the main working tree that
        ``.worktreeinclude`` names; returns their relative paths."""
        include = self.repo / INCLUDE_FILE
        if not include.is_file():
            return []
        ignored = set(self._ls_others("--exclude-standard"))
        # git matches the include file's lines itself: the same syntax as .gitignore.
        wanted = sorted(ignored & set(self._ls_others(f"--exclude-from={include}")))
        top, dtop = os.path.realpath(self.repo), os.path.realpath(dest)
        copied = []
        for rel in wanted:
            src, dst = os.path.join(self.repo, rel), os.path.join(dest, rel)
            # Never through a link that leaves the repository, never over a file of the tree.
            if not _inside(os.path.realpath(os.path.dirname(src)), top):
                continue
            if os.path.islink(src) and (os.path.isabs(os.readlink(src)) or
                                        not _inside(os.path.realpath(src), top)):
                continue
            if os.path.lexists(dst) or not (os.path.islink(src) or os.path.isfile(src)):
                continue
            if not _inside(os.path.realpath(os.path.dirname(dst)), dtop):
                continue  # a link in the worktree would put it elsewhere
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
            copied.append(rel)
        return copied

    def _ls_others(self, exclude: str) -> list[str]:
        out = self.git.run("ls-files", "--others", "--ignored", exclude, "-z").stdout
        return [p for p in out.split("\0") if p]

    # --- the work in it -----------------------------------------------------------------------

    def commit(self, wt: Worktree, message: str, *, ignore: Sequence[str] = ()) -> str | None:
        """Commit everything in the worktree but the files ``ignore`` names (the tool's own:
        its chat history, its caches); the new HEAD, or None if nothing changed."""
        git = Git(wt.path)
        git.run("add", "-A", "--", *_pathspecs(ignore))
        if git.ok("diff", "--cached", "--quiet"):
            return None
        # A checkpoint of the step's work: the acceptance commands and the gate judge it,
        # not the user's commit hooks.
        git.run("commit", "--quiet", "--no-verify", "-m", message)
        return git.out("rev-parse", "HEAD")

    def snapshot(self, wt: Worktree) -> str | None:
        """The work in progress (tracked changes and untracked files) as a commit on
        ``refs/aimterm/snapshots/<run_id>/<step_id>``, child of the worktree's HEAD; the
        worktree's index and files are left alone. None if the worktree is gone (or kept
        changing under every attempt)."""
        if not (wt.path / ".git").exists():
            return None
        git = Git(wt.path)
        private = private_dir(wt.path)
        with tempfile.TemporaryDirectory(prefix="aimterm-snap-") as tmp:
            index = os.path.join(tmp, "index")
            env = {"GIT_INDEX_FILE": index}
            for _attempt in range(3):
                try:
                    parent = git.out("rev-parse", "HEAD")
                    # The real index as a start: its stat data makes `add -A` quick.
                    real = private / "index" if private is not None else None
                    if real is not None and real.is_file():
                        shutil.copyfile(real, index)
                    else:
                        git.run("read-tree", parent, env=env)
                    git.run("add", "-A", env=env)
                    tree = git.out("write-tree", env=env)
                    break
                except (GitError, OSError):
                    # A file vanished mid-way (an agent is editing): look again.
                    if not (wt.path / ".git").exists():
                        return None
            else:
                return None
            commit = git.out("commit-tree", tree, "-p", parent, "-m",
                             f"aimterm snapshot of step {wt.step_id}")
        git.run("update-ref", self._snapshot_ref(wt.step_id), commit)
        return commit

    def _snapshot_ref(self, step_id: str) -> str:
        return f"refs/aimterm/snapshots/{self.run_id}/{step_id}"

    def has_work(self, wt: Worktree, integration: str, *, ignore: Sequence[str] = ()) -> bool:
        """Uncommitted changes (untracked files too, but not those ``ignore`` names), or
        commits not in ``integration``."""
        if (wt.path / ".git").exists() and Git(wt.path).out(
                "status", "--porcelain", "--", *_pathspecs(ignore)):
            return True
        ref = f"refs/heads/{wt.branch}"
        if not self.git.ok("show-ref", "--verify", "--quiet", ref):
            return False
        return self.git.out("rev-list", "--count", f"{integration}..{ref}") != "0"

    def remove(self, wt: Worktree, integration: str, *, ignore: Sequence[str] = ()) -> bool:
        """Remove the worktree and delete its branch, only when it holds no work (the files
        ``ignore`` names are not work: they go with it)."""
        if self.has_work(wt, integration, ignore=ignore):
            return False
        if wt.path.exists():
            # (--force: what is left is only what ``ignore`` names; has_work said so.)
            force = ["--force"] if ignore else []
            proc = self.git.run("worktree", "remove", *force, str(wt.path), check=False)
            if proc.returncode != 0:
                if self.has_work(wt, integration, ignore=ignore):  # work appeared: keep it
                    return False
                raise GitError(f"cannot remove worktree {wt.path}",
                               command=["git", "worktree", "remove", str(wt.path)],
                               returncode=proc.returncode, stderr_tail=proc.stderr.strip())
        else:
            self.git.run("worktree", "prune")
        # Deleted with -D: merged into the integration branch, which the user's HEAD may
        # not contain yet.
        self.git.run("branch", "-D", wt.branch, check=False)
        self.git.run("update-ref", "-d", self._snapshot_ref(wt.step_id), check=False)
        return True

    # --- what is there ------------------------------------------------------------------------

    def existing(self) -> list[Worktree]:
        """This run's step worktrees still on disk, by step id."""
        found = []
        for entry in worktree_list(self.git):
            path = Path(entry.get("worktree", ""))
            if not _same(path.parent, self.root) or path.name == _INTEGRATION:
                continue
            if "prunable" in entry or not path.is_dir():
                continue
            branch = entry.get("branch", "").removeprefix("refs/heads/")
            found.append(Worktree(path.name, self.root / path.name, branch,
                                  self._base_of(self.root / path.name, entry.get("HEAD", ""))))
        return sorted(found, key=lambda w: w.step_id)

    def _registered(self, step_id: str) -> Worktree | None:
        path = self.path_of(step_id)
        for wt in self.existing():
            if wt.step_id == step_id:
                if wt.branch != self.branch_name(step_id):
                    raise GitError(f"worktree {path} is on {wt.branch or 'a detached HEAD'}, "
                                   f"not {self.branch_name(step_id)}; remove it with "
                                   f"`git worktree remove {path}`")
                return wt
        if any(_same(e.get("worktree", ""), path) for e in worktree_list(self.git)):
            self.git.run("worktree", "prune")  # registered, but its folder is gone
        return None

    def _base_of(self, path: Path, head_sha: str) -> str:
        private = private_dir(path)
        try:
            if private is not None:
                return (private / _BASE_FILE).read_text().strip()
        except OSError:
            pass
        return head_sha
