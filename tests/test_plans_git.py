"""Plans over real git: step worktrees, snapshots, the merge train and the conflict radar,
each against a repository built in tmp_path, on a machine that knows no git identity."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from aimterm.plans import radar
from aimterm.plans.git import Git, GitError, branch_exists, common_dir, head, repo_root
from aimterm.plans.radar import Prediction, predict
from aimterm.plans.train import Conflict, MergeTrain
from aimterm.plans.worktrees import Worktrees

_ME = ["-c", "user.name=Test User", "-c", "user.email=test@example.com"]


@pytest.fixture(autouse=True)
def no_git_identity(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    """No global or system git config and no identity in the environment: a fresh CI box."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "no-such-gitconfig"))
    for var in ("XDG_CONFIG_HOME", "EMAIL", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL",
                "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(var, raising=False)


def git(cwd: Path, *args: str) -> str:
    """git as the test's own user (identity passed per command, never configured)."""
    proc = subprocess.run(["git", *_ME, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, f"git {args} failed: {proc.stderr}"
    return proc.stdout.strip()


def make_repo(root: Path, files: dict[str, str] | None = None) -> Path:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for name, text in (files or {"f.txt": "one\ntwo\nthree\n", "src/a.py": "A = 1\n"}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    return repo


def user_state(repo: Path) -> tuple[str, str, str, dict[str, str]]:
    files = {str(p.relative_to(repo)): p.read_text() for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return (git(repo, "rev-parse", "--abbrev-ref", "HEAD"), git(repo, "rev-parse", "HEAD"),
            git(repo, "status", "--porcelain", "--untracked-files=all"), files)


def parents(repo: Path, rev: str) -> list[str]:
    return git(repo, "rev-list", "--parents", "-n", "1", rev).split()[1:]


# --- git.py -------------------------------------------------------------------------------------


def test_git_errors_name_the_command_and_status(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    with pytest.raises(GitError) as info:
        Git(repo).run("rev-parse", "--verify", "no-such-branch")
    err = info.value
    assert err.command == ["git", "rev-parse", "--verify", "no-such-branch"]
    assert err.returncode == 128 and "fatal" in err.stderr_tail
    assert "failed with exit status 128" in str(err)
    assert Git(repo).run("rev-parse", "--verify", "nope", check=False).returncode == 128
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError, match="is not inside a git repository"):
        repo_root(tmp_path / "plain")
    assert repo_root(repo / "src") == repo.resolve()
    assert common_dir(repo) == (repo / ".git").resolve()
    assert head(repo) == git(repo, "rev-parse", "HEAD")
    with pytest.raises(GitError, match="names no commit"):
        head(repo, "nope")
    assert branch_exists(repo, "main") and not branch_exists(repo, "nope")


# --- worktrees ----------------------------------------------------------------------------------


def test_worktree_is_made_from_start_outside_the_users_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    before = user_state(repo)
    start = git(repo, "rev-parse", "HEAD")
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    wt = wts.create("s1", "main")
    assert wt.path == (repo / ".git" / "aimterm" / "worktrees" / "r1" / "s1").resolve()
    assert (wt.branch, wt.base, wt.step_id) == ("aimterm/p/s1", start, "s1")
    assert git(wt.path, "rev-parse", "--abbrev-ref", "HEAD") == "aimterm/p/s1"
    assert git(wt.path, "rev-parse", "HEAD") == start
    assert (wt.path / "src" / "a.py").read_text() == "A = 1\n"
    (wt.path / "new.txt").write_text("in the worktree\n")
    assert user_state(repo) == before  # not in the user's status, branch, HEAD or files


def test_worktreeinclude_copies_only_matching_ignored_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {".gitignore": "*.env\nbuild/\n*.log\n",
                                ".worktreeinclude": "# secrets and the build\n*.env\nbuild/\n",
                                "f.txt": "x\n"})
    (repo / "a.env").write_text("KEY=1\n")
    (repo / "build" / "x").mkdir(parents=True)
    (repo / "build" / "x" / "tool").write_text("#!/bin/sh\n")
    os.chmod(repo / "build" / "x" / "tool", 0o755)
    (repo / "debug.log").write_text("ignored, not included\n")
    (repo / "notes.txt").write_text("untracked, not ignored\n")
    (tmp_path / "outside").write_text("secret\n")
    os.symlink(tmp_path / "outside", repo / "link.env")  # ignored and matching, but leaves
    wt = Worktrees(repo, plan_id="p", run_id="r1").create("s1", "HEAD")
    assert (wt.path / "a.env").read_text() == "KEY=1\n"
    assert (wt.path / "build" / "x" / "tool").stat().st_mode & 0o777 == 0o755
    for absent in ("debug.log", "notes.txt", "link.env"):
        assert not os.path.lexists(wt.path / absent), absent
    assert git(wt.path, "status", "--porcelain") == ""  # the copies are ignored there too


def test_setup_runs_in_the_worktree_and_its_failure_raises(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    wt = wts.create("s1", "HEAD", setup="pwd > where.txt; echo $FOO > foo.txt",
                    env={"FOO": "bar"})
    assert Path((wt.path / "where.txt").read_text().strip()).resolve() == wt.path
    assert (wt.path / "foo.txt").read_text() == "bar\n"
    with pytest.raises(GitError) as info:
        wts.create("s2", "HEAD", setup="echo boom >&2; exit 3")
    assert info.value.returncode == 3 and "boom" in str(info.value) and "exit status 3" in str(
        info.value)
    # Resumed, a worktree whose setup failed is set up again.
    again = wts.create("s2", "HEAD", setup="touch ok")
    assert again.path == wts.path_of("s2") and (again.path / "ok").exists()
    began = time.monotonic()
    with pytest.raises(GitError, match="timed out after 1 s") as info:
        wts.create("s3", "HEAD", setup="sleep 30 & sleep 30", setup_timeout_s=1)
    assert info.value.returncode is None and time.monotonic() - began < 15


def test_commit_works_without_an_identity_and_returns_none_when_clean(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    wt = wts.create("s1", "HEAD")
    assert wts.commit(wt, "nothing") is None
    (wt.path / "f.txt").write_text("changed\n")
    (wt.path / "added.txt").write_text("new\n")
    sha = wts.commit(wt, "step s1")
    assert sha == git(repo, "rev-parse", "aimterm/p/s1") and parents(repo, sha) == [wt.base]
    assert git(repo, "log", "-1", "--format=%an <%ae>|%s", sha) == (
        "aimterm <aimterm@localhost>|step s1")
    assert git(repo, "show", f"{sha}:added.txt") == "new"
    git(repo, "config", "user.email", "me@example.com")  # the repo's own identity wins
    git(repo, "config", "user.name", "Me")
    (wt.path / "f.txt").write_text("again\n")
    other = Worktrees(repo, plan_id="p", run_id="r1").commit(wt, "again")
    assert other is not None and git(repo, "log", "-1", "--format=%ae", other) == "me@example.com"


def test_snapshot_captures_work_without_touching_the_index(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {".gitignore": "*.tmp\n", "f.txt": "one\n", "g.txt": "g\n"})
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    wt = wts.create("s1", "HEAD")
    (wt.path / "f.txt").write_text("staged\n")
    git(wt.path, "add", "f.txt")
    (wt.path / "f.txt").write_text("staged then edited\n")
    (wt.path / "g.txt").unlink()
    (wt.path / "new.txt").write_text("untracked\n")
    (wt.path / "cache.tmp").write_text("ignored\n")
    status = git(wt.path, "status", "--porcelain")
    stage = git(wt.path, "ls-files", "--stage")
    index = (repo / ".git" / "worktrees" / "s1" / "index").read_bytes()
    snap = wts.snapshot(wt)
    assert snap is not None
    assert git(wt.path, "status", "--porcelain") == status
    assert git(wt.path, "ls-files", "--stage") == stage
    assert (repo / ".git" / "worktrees" / "s1" / "index").read_bytes() == index
    assert git(repo, "rev-parse", "refs/aimterm/snapshots/r1/s1") == snap
    assert parents(repo, snap) == [wt.base]
    assert git(repo, "show", f"{snap}:f.txt") == "staged then edited"
    assert git(repo, "show", f"{snap}:new.txt") == "untracked"
    assert sorted(git(repo, "ls-tree", "--name-only", snap).split()) == [
        ".gitignore", "f.txt", "new.txt"]
    assert git(wt.path, "rev-parse", "HEAD") == wt.base  # no commit on the branch
    git(repo, "worktree", "remove", "--force", str(wt.path))
    assert wts.snapshot(wt) is None


def test_remove_keeps_work_and_removes_a_clean_merged_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    clean = wts.create("clean", "HEAD")
    assert not wts.has_work(clean, "main")
    assert wts.remove(clean, "main") and not clean.path.exists()
    assert not branch_exists(repo, "aimterm/p/clean")
    wt = wts.create("s1", "HEAD")
    (wt.path / "untracked.txt").write_text("work\n")
    assert wts.has_work(wt, "main") and not wts.remove(wt, "main")
    assert (wt.path / "untracked.txt").read_text() == "work\n"
    wts.commit(wt, "work")
    assert wts.has_work(wt, "main") and not wts.remove(wt, "main")
    assert wt.path.exists() and branch_exists(repo, "aimterm/p/s1")
    train = MergeTrain(repo, plan_id="p", run_id="r1").open()
    assert train.merge("s1", wt.branch).status == "merged"
    assert not wts.has_work(wt, train.branch)
    assert wts.remove(wt, train.branch) and not wt.path.exists()
    assert not branch_exists(repo, "aimterm/p/s1")
    assert [w.step_id for w in wts.existing()] == []
    train.close()


def test_resume_finds_this_runs_worktrees_and_create_is_idempotent(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    first = Worktrees(repo, plan_id="p", run_id="r1")
    a, b = first.create("a", "HEAD"), first.create("b", "HEAD")
    Worktrees(repo, plan_id="p", run_id="r2").create("c", "HEAD")  # another run's
    (a.path / "wip.txt").write_text("kept\n")
    git(repo, "commit", "-q", "--allow-empty", "-m", "the user moves on")
    resumed = Worktrees(repo, plan_id="p", run_id="r1")
    assert resumed.existing() == [a, b]
    again = resumed.create("a", "main", setup="exit 1")  # ready already: setup not rerun
    assert again == a and (a.path / "wip.txt").read_text() == "kept\n"
    assert git(a.path, "rev-parse", "HEAD") == a.base != git(repo, "rev-parse", "main")


def test_a_leftover_branch_is_refused_unless_merged(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    wt = wts.create("s1", "HEAD")
    (wt.path / "f.txt").write_text("work\n")
    work = wts.commit(wt, "work")
    git(repo, "worktree", "remove", str(wt.path))
    later = Worktrees(repo, plan_id="p", run_id="r2")
    with pytest.raises(GitError, match=r"git branch -D aimterm/p/s1"):
        later.create("s1", "HEAD")
    assert git(repo, "rev-parse", "aimterm/p/s1") == work  # refused, not reset
    git(repo, "merge", "-q", "--ff-only", "aimterm/p/s1")
    reused = later.create("s1", "HEAD")
    assert git(reused.path, "rev-parse", "HEAD") == work == reused.base


# --- the merge train ----------------------------------------------------------------------------


def _step(wts: Worktrees, step: str, start: str, edits: dict[str, str]) -> str:
    wt = wts.create(step, start)
    for name, text in edits.items():
        (wt.path / name).write_text(text)
    assert wts.commit(wt, f"step {step}") is not None
    return wt.branch


def test_train_merges_branches_no_ff_in_order(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    before = user_state(repo)
    base = git(repo, "rev-parse", "HEAD")
    train = MergeTrain(repo, plan_id="p", run_id="r1").open()
    assert train.branch == "aimterm/p/integration" and train.head() == base
    assert train.path == (repo / ".git/aimterm/worktrees/r1/_integration").resolve()
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    b1 = _step(wts, "s1", train.branch, {"one.txt": "1\n"})
    b2 = _step(wts, "s2", train.branch, {"two.txt": "2\n"})
    tip2 = git(repo, "rev-parse", b2)
    first = train.merge("s1", b1, gate=["test -f one.txt"])
    second = train.merge("s2", b2)
    assert (first.status, second.status) == ("merged", "merged")
    assert first.gate[0].passed and first.gate[0].command == "test -f one.txt"
    assert parents(repo, first.commit or "") == [base, git(repo, "rev-parse", b1)]
    assert parents(repo, second.commit or "") == [first.commit, tip2]
    assert second.commit == train.head() == git(repo, "rev-parse", train.branch)
    assert git(repo, "log", "-1", "--format=%s", second.commit or "") == f"Merge {b2}"
    assert git(repo, "rev-parse", "aimterm/r1/pre-s1") == base
    assert git(repo, "rev-parse", "aimterm/r1/pre-s2") == first.commit
    assert (train.path / "one.txt").read_text() == "1\n" and (train.path / "two.txt").exists()
    assert train.merge("s2", b2).status == "empty"
    (wts.path_of("s1") / "wip.txt").write_text("wip\n")
    snap = wts.snapshot(wts.existing()[0])
    assert predict(repo, {"s1": snap or ""}, train.head()) == []
    data = first.to_dict()
    assert data["status"] == "merged" and data["gate"][0]["passed"] is True
    resumed = MergeTrain(repo, plan_id="p", run_id="r1").open()
    assert resumed.head() == second.commit
    train.close()
    assert not train.path.exists() and git(repo, "rev-parse", train.branch) == second.commit
    assert user_state(repo) == before


def test_failing_gate_rolls_the_merge_back(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    train = MergeTrain(repo, plan_id="p", run_id="r1").open()
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    branch = _step(wts, "s1", train.branch, {"one.txt": "1\n"})
    tip = git(repo, "rev-parse", branch)
    pre = train.head()
    out = train.merge("s1", branch, gate=["test -f one.txt",
                                          "echo gate-said-no; touch junk.txt; exit 4"])
    assert out.status == "gate_failed" and out.commit is None
    assert train.head() == pre == git(repo, "rev-parse", out.tag)
    assert [r.exit_code for r in out.gate] == [0, 4] and "gate-said-no" in out.gate[1].output
    assert out.error is not None and "exited 4" in out.error and out.gate_s > 0
    assert git(train.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (train.path / "one.txt").exists()
    assert git(repo, "rev-parse", branch) == tip
    train.close()


def test_conflict_is_recorded_and_the_merge_aborted(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    train = MergeTrain(repo, plan_id="p", run_id="r1").open()
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    b1 = _step(wts, "s1", train.branch, {"f.txt": "one\nTWO by s1\nthree\n",
                                          "src/a.py": "A = 2\n"})
    s2 = wts.create("s2", train.branch)
    (s2.path / "f.txt").write_text("one\nTWO by s2\nthree\n")
    (s2.path / "src" / "a.py").unlink()
    assert wts.commit(s2, "s2: edit f.txt, delete a.py") is not None
    b2 = s2.branch
    tip2 = git(repo, "rev-parse", b2)
    merged = train.merge("s1", b1)
    out = train.merge("s2", b2, gate=["touch never-run"])
    assert out.status == "conflict" and out.commit is None and out.gate == ()
    assert out.conflicts == (Conflict("f.txt", "content"), Conflict("src/a.py", "delete"))
    assert train.head() == merged.commit == git(repo, "rev-parse", out.tag)
    assert git(train.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert not (repo / ".git" / "worktrees" / "_integration" / "MERGE_HEAD").exists()
    assert git(repo, "rev-parse", b2) == tip2
    assert "TWO by s2" in git(repo, "show", f"{b2}:f.txt")
    train.close()


def test_open_refuses_a_leftover_integration_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    MergeTrain(repo, plan_id="p", run_id="r1").open().close()  # still at base: reused
    again = MergeTrain(repo, plan_id="p", run_id="r2").open()
    assert again.head() == git(repo, "rev-parse", "HEAD")
    with pytest.raises(GitError, match="checked out at"):
        MergeTrain(repo, plan_id="p", run_id="r3").open()
    wts = Worktrees(repo, plan_id="p", run_id="r2")
    assert again.merge("s1", _step(wts, "s1", again.branch, {"x": "x\n"})).status == "merged"
    again.close()
    with pytest.raises(GitError, match=r"git branch -D aimterm/p/integration"):
        MergeTrain(repo, plan_id="p", run_id="r3").open()


# --- the conflict radar -------------------------------------------------------------------------


def test_radar_predicts_same_line_edits_and_not_disjoint_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path)
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    start = git(repo, "rev-parse", "HEAD")
    edits = {"s1": ("f.txt", "one\nTWO by s1\nthree\n"), "s2": ("f.txt", "one\nTWO by s2\n"),
             "s3": ("other.txt", "new\n")}
    heads = {}
    for step, (name, text) in edits.items():
        wt = wts.create(step, start)
        (wt.path / name).write_text(text)  # uncommitted: the snapshot carries it
        snap = wts.snapshot(wt)
        assert snap is not None
        heads[step] = snap
    tried: list[tuple[str, str]] = []
    real = radar._Repo.conflicts

    def counted(self: radar._Repo, a: str, b: str) -> tuple[str, ...] | None:
        tried.append((a, b))
        return real(self, a, b)

    monkeypatch.setattr(radar._Repo, "conflicts", counted)
    assert predict(repo, heads, start) == [Prediction("s1", "s2", ("f.txt",))]
    assert tried == [(heads["s1"], heads["s2"])]  # disjoint pairs never merged
    assert predict(repo, {"s1": heads["s1"], "s3": heads["s3"]}, start) == []
    (repo / "f.txt").write_text("one\nTWO by the user\nthree\n")
    git(repo, "commit", "-q", "-am", "user edit")
    moved = git(repo, "rev-parse", "HEAD")
    assert predict(repo, {"s1": heads["s1"], "s3": heads["s3"]}, moved) == [
        Prediction("s1", "integration", ("f.txt",))]
    assert predict(repo, {}, start) == []


def test_snapshot_survives_files_changing_under_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    wt = wts.create("s1", "HEAD")
    stop = threading.Event()

    def churn() -> None:  # an agent writing and deleting files meanwhile
        n = 0
        while not stop.is_set():
            target = wt.path / f"churn{n % 20}.txt"
            target.write_text("x" * 1000)
            if n % 3:
                target.unlink()
            n += 1

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        snaps = [wts.snapshot(wt) for _ in range(8)]
    finally:
        stop.set()
        worker.join(10)
    assert any(snaps)
    for snap in filter(None, snaps):
        assert parents(repo, snap) == [wt.base]
    assert git(wt.path, "ls-files", "--stage").count("\n") == 1  # index still f.txt, a.py


def test_git_error_crosses_the_wire() -> None:
    from aimterm.ipc.protocol import error_from_wire, error_to_wire

    sent = GitError("`git merge x` failed", command=["git", "merge", "x"], returncode=1,
                    stderr_tail="fatal: no")
    back = error_from_wire(json.loads(json.dumps(error_to_wire(sent))))
    assert type(back) is GitError and str(back) == str(sent)
    assert (back.command, back.returncode, back.stderr_tail) == (["git", "merge", "x"], 1,
                                                                 "fatal: no")


def test_radar_work_is_bounded(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    start = git(repo, "rev-parse", "HEAD")
    wts = Worktrees(repo, plan_id="p", run_id="r1")
    heads = {}
    for step in ("a", "b", "c"):
        wt = wts.create(step, start)
        (wt.path / "f.txt").write_text(f"{step}\n")
        heads[step] = wts.snapshot(wt) or ""
    every = predict(repo, heads, start)
    assert [(p.a, p.b) for p in every] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert predict(repo, heads, start, max_merges=2) == every[:2]
    assert predict(repo, heads, start, max_pairs=4) == every[:1]  # 3 vs integration, then a-b
    with pytest.raises(GitError, match="does not exist"):
        predict(repo, {"a": "0" * 40}, start)


def test_a_branch_checked_out_by_another_run_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    Worktrees(repo, plan_id="p", run_id="r1").create("s1", "HEAD")
    with pytest.raises(GitError, match=r"aimterm/p/s1 is checked out at .*r1/s1"):
        Worktrees(repo, plan_id="p", run_id="r2").create("s1", "HEAD")
    with pytest.raises(GitError, match="cannot name a branch"):
        Worktrees(repo, plan_id="p", run_id="r2").create("../up", "HEAD")
    with pytest.raises(GitError, match="cannot name a branch"):  # the train's folder
        Worktrees(repo, plan_id="p", run_id="r2").create("_integration", "HEAD")


def test_the_tools_own_files_are_never_committed_nor_count_as_work(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    wts = Worktrees(repo, plan_id="p", run_id="r1", root=tmp_path / "state" / "worktrees")
    wt = wts.create("s1", "HEAD")
    assert wt.path == tmp_path / "state" / "worktrees" / "r1" / "s1"  # outside .git
    ignore = (".aider*",)
    (wt.path / ".aider.chat.history.md").write_text("chat\n")
    (wt.path / "sub").mkdir()
    (wt.path / "sub" / ".aider.tags.cache.v4").mkdir()
    (wt.path / "sub" / ".aider.tags.cache.v4" / "cache.db").write_text("x")
    assert not wts.has_work(wt, "main", ignore=ignore)
    assert wts.has_work(wt, "main")  # without the tool's patterns they are work
    assert wts.commit(wt, "only noise", ignore=ignore) is None
    (wt.path / "real.txt").write_text("work\n")
    sha = wts.commit(wt, "work", ignore=ignore)
    assert sha is not None
    assert git(repo, "show", "--name-only", "--format=", sha).splitlines() == ["real.txt"]
    train = MergeTrain(repo, plan_id="p", run_id="r1", root=tmp_path / "state" / "worktrees")
    train.open()
    assert train.merge("s1", wt.branch).status == "merged"
    assert wts.remove(wt, train.branch, ignore=ignore) and not wt.path.exists()
    train.close()


def test_stale_locks_of_a_killed_run_are_cleared(tmp_path: Path) -> None:
    from aimterm.plans.history import clear_stale_locks

    repo = make_repo(tmp_path)
    root = tmp_path / "state" / "worktrees"
    wts = Worktrees(repo, plan_id="p", run_id="r1", root=root)
    wt = wts.create("s1", "HEAD")
    (wt.path / "new.txt").write_text("x\n")
    wts.commit(wt, "s1")
    train = MergeTrain(repo, plan_id="p", run_id="r1", root=root).open()
    # What a SIGKILL in the middle of a merge and a commit leaves behind.
    gitdir = Path(git(train.path, "rev-parse", "--absolute-git-dir"))
    (gitdir / "index.lock").write_text("")
    ref_lock = common_dir(repo) / "refs" / "heads" / "aimterm" / "p" / "s1.lock"
    ref_lock.write_text("")
    with pytest.raises(GitError):
        train.merge("s1", wt.branch)
    gone = clear_stale_locks(repo, root / "r1", "p", "r1")
    assert sorted(p.name for p in gone) == ["index.lock", "s1.lock"]
    assert train.merge("s1", wt.branch).status == "merged"
    train.close()
