"""Plans run for real: demo agents that edit files in git worktrees of real repositories, their
branches merged --no-ff into the integration branch through the merge train, each merge gated.
Parallel steps, a chain, every failure policy, a retry, a timeout, a failed gate rolled back, a
conflict kept, a predicted conflict serialised, and the record the store keeps."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aimterm.events import Event
from aimterm.plans import PlanRun, plan_from_data
from aimterm.plans.runner import PlanResult
from aimterm.store import Store

FAST = {"AIMTERM_DEMO_THINK": "0.05"}


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, timeout=30,
                          capture_output=True, text=True).stdout.strip()


def make_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", ".")
    git(root, "commit", "-qm", "start")
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {f"{n}.py": f"def {n}(): return 0\n" for n in "abcd"})


def edit(sid: str, file: str, text: str, *deps: str, **extra: Any) -> dict[str, Any]:
    """A step that makes the demo agent write ``text`` into ``file``, checked by grep."""
    step: dict[str, Any] = {"id": sid, "tool": "demo", "prompt": f"edit {file}: {text}",
                            "depends_on": list(deps), "env": dict(FAST),
                            "acceptance_tests": [f"grep -qF '{text}' {file}"]}
    step.update(extra)
    return step


def run(repo: Path, tmp_path: Path, steps: list[dict[str, Any]], *, concurrency: int = 4,
        events: list[Event] | None = None, **kw: Any) -> PlanResult:
    plan = plan_from_data({"plan_id": "p", "globals": {"max_concurrency": concurrency},
                           "steps": steps})
    kw.setdefault("radar_interval_s", 3600.0)  # only the radar test turns it on
    runner = PlanRun(plan, repo=repo, state_dir=tmp_path / "state",
                     on_event=None if events is None else events.append, **kw)
    return runner.run()


def states(result: PlanResult) -> dict[str, str]:
    return {s.step_id: s.state for s in result.steps}


def show(repo: Path, rev: str, path: str) -> str:
    return git(repo, "show", f"{rev}:{path}")


def test_parallel_steps_each_in_its_worktree_merged_no_ff(repo: Path, tmp_path: Path) -> None:
    user_head = git(repo, "rev-parse", "HEAD")
    result = run(repo, tmp_path, [edit("a", "a.py", "def a(): return 1"),
                                  edit("b", "b.py", "def b(): return 2"),
                                  edit("c", "c.py", "def c(): return 3")])
    assert result.status == "succeeded", result.to_dict()
    assert states(result) == dict.fromkeys("abc", "succeeded")
    branch = "aimterm/p/integration"
    assert result.integration == branch
    for n in "abc":
        assert show(repo, branch, f"{n}.py").startswith(f"def {n}(): return")
        merge = result.step(n).merge_commit
        assert merge is not None
        parents = git(repo, "rev-list", "--parents", "-n1", merge).split()[1:]
        assert len(parents) == 2  # --no-ff: a merge commit for every step
        assert git(repo, "log", "-1", "--format=%s", merge) == f"Merge aimterm/p/{n}"
    # The user's checkout is untouched: same branch, same HEAD, no edits, nothing untracked.
    assert git(repo, "rev-parse", "HEAD") == user_head
    assert git(repo, "branch", "--show-current") == "main"
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "a.py").read_text() == "def a(): return 0\n"
    # Merged steps' worktrees are gone; nothing was kept.
    assert result.kept_worktrees == []
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_a_chain_sees_what_earlier_steps_merged(repo: Path, tmp_path: Path) -> None:
    steps = [edit("one", "x.txt", "first"),
             {**edit("two", "y.txt", "second", "one"),
              "acceptance_tests": ["grep -q first x.txt", "grep -q second y.txt"]}]
    result = run(repo, tmp_path, steps)
    assert result.status == "succeeded", result.to_dict()
    assert show(repo, result.integration, "x.txt") == "first"
    assert show(repo, result.integration, "y.txt") == "second"
    log = git(repo, "log", "--first-parent", "--format=%s", result.integration).splitlines()
    assert log[:2] == ["Merge aimterm/p/two", "Merge aimterm/p/one"]


def test_the_agent_sees_its_run_step_and_scope(repo: Path, tmp_path: Path) -> None:
    steps = [{"id": "env", "tool": "bash", "edits": True,
              "prompt": 'echo "$AIMTERM_RUN_ID $AIMTERM_STEP_ID $AIMTERM_SCOPE" > env.txt',
              "files_scope": {"writes": ["env.txt"]}, "acceptance_tests": ["test -s env.txt"]}]
    result = run(repo, tmp_path, steps)
    assert result.status == "succeeded", result.to_dict()
    assert show(repo, result.integration, "env.txt") == f"{result.run_id} env env.txt"


def test_skip_dependents_skips_them_and_the_rest_merges(repo: Path, tmp_path: Path) -> None:
    steps = [{**edit("bad", "a.py", "x"), "acceptance_tests": ["false"],
              "on_failure": "skip_dependents"},
             edit("after", "b.py", "y", "bad"), edit("free", "c.py", "z")]
    result = run(repo, tmp_path, steps)
    assert states(result) == {"bad": "failed", "after": "skipped", "free": "succeeded"}
    assert result.status == "failed"
    assert result.step("bad").error == "acceptance: false exited 1"
    # The failed step's work is kept: its worktree holds the edit, nothing is lost.
    kept = result.step("bad").worktree
    assert kept is not None and (Path(kept) / "a.py").read_text() == "x\n"


def test_continue_lets_dependents_run(repo: Path, tmp_path: Path) -> None:
    steps = [{**edit("bad", "a.py", "x"), "acceptance_tests": ["false"],
              "on_failure": "continue"}, edit("after", "b.py", "y", "bad")]
    result = run(repo, tmp_path, steps)
    assert states(result) == {"bad": "failed", "after": "succeeded"}


def test_abort_cancels_what_has_not_started(repo: Path, tmp_path: Path) -> None:
    steps = [{**edit("bad", "a.py", "x"), "acceptance_tests": ["false"]},
             edit("after", "b.py", "y", "bad"), edit("later", "c.py", "z", "after")]
    result = run(repo, tmp_path, steps, concurrency=1)
    assert states(result) == {"bad": "failed", "after": "cancelled", "later": "cancelled"}


def test_a_retry_after_a_failure_succeeds(repo: Path, tmp_path: Path) -> None:
    mark = tmp_path / "tried"
    steps = [{**edit("flaky", "a.py", "x"), "retries": 1, "retry_delay_sec": 0.2,
              "acceptance_tests": [f"test -e {mark} || {{ touch {mark}; exit 1; }}"]}]
    events: list[Event] = []
    result = run(repo, tmp_path, steps, events=events)
    assert states(result) == {"flaky": "succeeded"} and result.step("flaky").attempts == 2
    moves = [(e.old, e.state) for e in events if e.kind == "step_changed"]  # type: ignore[attr-defined]
    assert moves == [("pending", "running"), ("running", "retry_wait"),
                     ("retry_wait", "running"), ("running", "merging"),
                     ("merging", "succeeded")]


def test_a_step_past_its_timeout_fails(repo: Path, tmp_path: Path) -> None:
    steps = [{**edit("slow", "a.py", "x"), "env": {"AIMTERM_DEMO_THINK": "30"},
              "timeout_sec": 1}]
    result = run(repo, tmp_path, steps)
    assert states(result) == {"slow": "failed"}
    assert "timed out" in (result.step("slow").error or "")
    assert result.step("slow").elapsed_s < 20


def test_a_gate_that_fails_on_the_merged_result_is_rolled_back(repo: Path,
                                                               tmp_path: Path) -> None:
    # b's test passes in its own worktree (no first.txt there) but not once a is merged.
    steps = [edit("a", "first.txt", "A"),
             {**edit("b", "b.py", "B", on_failure="continue"),
              "env": {"AIMTERM_DEMO_THINK": "1.0"},
              "acceptance_tests": ["grep -q B b.py", "test ! -e first.txt"]}]
    result = run(repo, tmp_path, steps)
    assert states(result) == {"a": "succeeded", "b": "gate_failed"}, result.to_dict()
    head = git(repo, "rev-parse", result.integration)
    assert head == result.step("a").merge_commit  # b's merge was taken back
    assert "test ! -e first.txt exited 1" in (result.step("b").error or "")
    assert git(repo, "rev-parse", "aimterm/p/b")  # its branch is kept
    with Store(tmp_path / "state" / "aimterm.db", readonly=True) as store:
        [b] = [s for s in store.plan_steps(result.run_id) if s["step_id"] == "b"]
    assert [g["exit_code"] for g in b["detail"]["gate"]] == [0, 1]


def test_a_conflict_is_recorded_its_branch_kept_and_the_run_goes_on(repo: Path,
                                                                   tmp_path: Path) -> None:
    steps = [edit("a", "a.py", "from a"),
             {**edit("b", "a.py", "from b", on_failure="continue"),
              "env": {"AIMTERM_DEMO_THINK": "1.0"}},
             edit("c", "c.py", "from c", "b")]
    events: list[Event] = []
    result = run(repo, tmp_path, steps, events=events)
    assert states(result) == {"a": "succeeded", "b": "conflict", "c": "succeeded"}
    assert result.step("b").conflicts == ("a.py",)
    assert show(repo, "aimterm/p/b", "a.py") == "from b"  # the branch keeps its work
    assert show(repo, result.integration, "a.py") == "from a"
    conflicts = [e for e in events if e.kind == "merge_conflict_detected"]
    assert [(e.step_id, e.paths, e.predicted) for e in conflicts] == [  # type: ignore[attr-defined]
        ("b", ["a.py"], False)]
    integration_wt = [line.split()[1] for line in git(repo, "worktree", "list",
                                                      "--porcelain").splitlines()
                      if line.startswith("worktree ") and line.endswith("_integration")]
    assert integration_wt == []  # the train's own checkout is cleaned up


def test_a_collision_seen_while_running_is_serialised_and_redone(repo: Path,
                                                                 tmp_path: Path) -> None:
    # Both steps write a.py; the radar sees it while they run, so b merges after a and,
    # when it then conflicts, is done again on top of a's work: both land.
    slow = {"AIMTERM_DEMO_THINK": "1.5"}
    steps = [{**edit("a", "a.py", "from a"), "env": slow},
             {**edit("b", "a.py", "from b"), "env": slow}]
    events: list[Event] = []
    result = run(repo, tmp_path, steps, events=events, radar_interval_s=0.2)
    assert states(result) == {"a": "succeeded", "b": "succeeded"}, result.to_dict()
    assert result.step("b").attempts == 2
    predicted = [e for e in events if e.kind == "merge_conflict_detected"
                 and e.predicted]  # type: ignore[attr-defined]
    assert predicted and predicted[0].paths == ["a.py"]  # type: ignore[attr-defined]
    assert show(repo, result.integration, "a.py") == "from b"
    # b's first work is kept under a ref of its own.
    first = git(repo, "rev-parse", f"refs/aimterm/attempts/{result.run_id}/b/1")
    assert show(repo, first, "a.py") == "from b"


def test_the_record_has_the_run_its_steps_attempts_and_events(repo: Path,
                                                              tmp_path: Path) -> None:
    result = run(repo, tmp_path, [edit("a", "a.py", "x"), edit("b", "b.py", "y", "a")])
    with Store(tmp_path / "state" / "aimterm.db", readonly=True) as store:
        [row] = store.plan_runs()
        steps = store.plan_steps(result.run_id)
        attempts = store.attempts(result.run_id)
        kinds = [e["kind"] for e in store.events(limit=None) if e.get("run_id") == result.run_id]
    assert row["id"] == result.run_id and row["status"] == "succeeded"
    assert row["by_state"] == {"succeeded": 2}
    assert [(s["step_id"], s["state"], s["attempts"]) for s in steps] == [
        ("a", "succeeded", 1), ("b", "succeeded", 1)]
    assert all(s["merge_commit"] and s["snapshot"] for s in steps)
    assert [(a["job_id"], a["number"], a["status"]) for a in attempts] == [
        ("a", 1, "succeeded"), ("b", 1, "succeeded")]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert {"task_started", "task_completed", "step_changed", "step_merged"} <= set(kinds)


def test_not_a_git_repository_is_a_clear_error(tmp_path: Path) -> None:
    from aimterm.plans.runner import PlanError

    plan = plan_from_data({"plan_id": "p", "steps": [edit("a", "a.py", "x")]})
    (tmp_path / "plain").mkdir()
    with pytest.raises(PlanError, match="not inside a git repository"):
        PlanRun(plan, repo=tmp_path / "plain", state_dir=tmp_path / "state")


def test_a_second_run_sets_the_first_runs_branches_aside(repo: Path, tmp_path: Path) -> None:
    steps = [{**edit("bad", "a.py", "x"), "acceptance_tests": ["false"],
              "on_failure": "continue"}, edit("good", "b.py", "y")]
    first = run(repo, tmp_path, steps)
    second = run(repo, tmp_path, steps)
    assert states(second) == {"bad": "failed", "good": "succeeded"}
    assert sorted(second.set_aside) == [f"aimterm/p/bad.{first.run_id}",
                                        f"aimterm/p/integration.{first.run_id}"]
    # Nothing of the first run is lost: its merged work and its failed step's branch remain.
    assert git(repo, "rev-parse", f"aimterm/p/integration.{first.run_id}") == first.head
    kept = first.step("bad").worktree
    assert kept is not None and (Path(kept) / "a.py").read_text() == "x\n"
    assert git(Path(kept), "branch", "--show-current") == f"aimterm/p/bad.{first.run_id}"
    assert show(repo, f"refs/aimterm/snapshots/{first.run_id}/bad", "a.py") == "x"
