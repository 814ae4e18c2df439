"""What a plan run finds of earlier runs: its own record, to go on with (``--resume``), and an
earlier run's branches, set aside so that a new run of the plan loses nothing of them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from aimterm.errors import PlanError
from aimterm.plans.git import Git, branch_exists, common_dir
from aimterm.plans.scheduler import StepState
from aimterm.plans.spec import Plan
from aimterm.procs import pid_alive
from aimterm.store import Store

__all__ = ["clear_stale_locks", "recorded_states", "set_aside_earlier_branches",
           "undo_unfinished_merges"]


def set_aside_earlier_branches(store: Store | None, plan: Plan, repo: Path,
                               names: list[str]) -> list[str]:
    """A new run of a plan that ran here before: the earlier run's branches among ``names``
    (its merged work, a step's branch kept after a conflict) are renamed
    ``NAME.EARLIER_RUN``, not overwritten, so nothing of it is lost; the new names. Refused
    while that run is still going."""
    earlier = None
    if store is not None:
        for row in store.plan_runs():
            if row["plan_id"] == plan.id and row["repo"] == str(repo):
                earlier = row
                break
    if earlier is not None and earlier["status"] == "running" and earlier["pid"] \
            and earlier["pid"] != os.getpid() and pid_alive(int(earlier["pid"])):
        raise PlanError(f"run {earlier['id']} of plan {plan.id!r} is still running here "
                        f"(pid {earlier['pid']}); wait for it, or stop it and go on with it "
                        f"(--resume {earlier['id']})")
    suffix = earlier["id"] if earlier is not None else time.strftime("%Y%m%d-%H%M%S")
    git = Git(repo)
    moved = []
    for name in names:
        if branch_exists(repo, name):
            git.run("branch", "-m", name, f"{name}.{suffix}")
            moved.append(f"{name}.{suffix}")
    return moved


def recorded_states(store: Store | None, plan: Plan,
                    run_id: str) -> dict[str, tuple[StepState, int]]:
    """The states and attempt counts run ``run_id`` recorded, checked against ``plan``; the
    run is marked running again (by this process)."""
    if store is None:
        raise PlanError("--resume needs the run's record (the store)")
    row = store.plan_run(run_id)
    if row is None:
        raise PlanError(f"no plan run {run_id!r} in {store.path} "
                        "(aimterm runs list shows them)")
    if row["plan_id"] != plan.id:
        raise PlanError(f"run {run_id} ran plan {row['plan_id']!r}, not {plan.id!r}")
    if row["status"] == "running" and row["pid"] and row["pid"] != os.getpid() \
            and pid_alive(int(row["pid"])):
        raise PlanError(f"run {run_id} is still running (pid {row['pid']})")
    steps = store.plan_steps(run_id)
    recorded = [s["step_id"] for s in steps]
    if recorded != [s.id for s in plan.steps]:
        raise PlanError(f"the plan's steps changed since run {run_id} "
                        f"(recorded: {', '.join(recorded)}); start a new run")
    store.run_reopened(run_id)
    return {s["step_id"]: (StepState(s["state"]), int(s["attempts"])) for s in steps}


def clear_stale_locks(repo: Path, run_root: Path, plan_id: str, run_id: str) -> list[Path]:
    """The lock files git left when the run was killed mid-command (an ``index.lock`` in a
    worktree, a ``.lock`` beside one of the run's refs): removed, or every later git command
    there fails. Only the run's own worktrees and refs, whose process is gone (the caller
    checked), are touched; the paths removed."""
    gone: list[Path] = []
    dirs: list[Path] = []
    if run_root.is_dir():
        for tree in run_root.iterdir():
            link = tree / ".git"
            if link.is_file():
                text = link.read_text(errors="replace").strip()
                if text.startswith("gitdir: "):
                    dirs.append(Path(text[len("gitdir: "):]))
    for gitdir in dirs:
        for name in ("index.lock", "HEAD.lock", "ORIG_HEAD.lock", "MERGE_HEAD.lock"):
            if (gitdir / name).is_file():
                (gitdir / name).unlink()
                gone.append(gitdir / name)
    common = common_dir(repo)
    for refs in (common / "refs" / "heads" / "aimterm" / plan_id,
                 common / "refs" / "tags" / "aimterm" / run_id,
                 common / "refs" / "aimterm"):
        if refs.is_dir():
            for lock in refs.rglob("*.lock"):
                if lock.is_file():
                    lock.unlink()
                    gone.append(lock)
    return gone


def undo_unfinished_merges(integration: Path, run_id: str, head: str,
                           branch_of: Callable[[str], str],
                           resume: Mapping[str, tuple[StepState, int]]) -> None:
    """A merge the crash interrupted (half done, or done but not confirmed by its gate) is
    taken back to its rollback tag, to be merged again. ``integration``: the train's
    worktree; ``head``: its head now; ``branch_of``: a step's branch."""
    git = Git(integration)
    if git.run("rev-parse", "-q", "--verify", "MERGE_HEAD", check=False).returncode == 0:
        git.run("merge", "--abort")
    for sid, (state, _) in resume.items():
        if state is not StepState.MERGING:
            continue
        tag = f"refs/tags/aimterm/{run_id}/pre-{sid}"
        found = git.run("rev-parse", "-q", "--verify", tag + "^{commit}", check=False)
        if found.returncode == 0 and found.stdout.strip() != head:
            merged = git.run("merge-base", "--is-ancestor", branch_of(sid), "HEAD",
                             check=False)
            if merged.returncode == 0:
                git.run("reset", "--hard", found.stdout.strip())
