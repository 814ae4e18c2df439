"""What a job changed, from git and file contents in real repositories (aimterm.jobs.checks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from aimterm.jobs.checks import changed_files, snapshot


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def make_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a\n")
    (repo / "sub" / "b.txt").write_text("b\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "start")
    return repo


def test_edits_new_files_and_renames_from_a_subfolder(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    (repo / "dirty.txt").write_text("dirty before\n")  # dirty already, left alone
    before = snapshot(str(repo / "sub"))
    assert before.repo == str(repo) and before.head is not None
    (repo / "a.txt").write_text("a, edited\n")
    (repo / "sub" / "new dir").mkdir()
    (repo / "sub" / "new dir" / "c d.txt").write_text("new\n")
    git(repo, "mv", "sub/b.txt", "sub/moved.txt")
    after = snapshot(str(repo / "sub"))
    assert changed_files(before, after) == sorted(str(repo / p) for p in (
        "a.txt", "sub/b.txt", "sub/moved.txt", "sub/new dir/c d.txt"))


def test_a_commit_made_by_the_tool_counts(tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    before = snapshot(str(repo))
    (repo / "a.txt").write_text("committed\n")
    git(repo, "commit", "-qam", "the tool's commit")
    after = snapshot(str(repo))
    assert after.head != before.head
    assert changed_files(before, after) == [str(repo / "a.txt")]


def test_a_repository_without_commits_and_a_plain_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    before = snapshot(str(empty))
    assert before.repo == str(empty) and before.head is None
    (empty / "x.txt").write_text("x\n")
    assert changed_files(before, snapshot(str(empty))) == [str(empty / "x.txt")]

    plain = tmp_path / "plain"
    plain.mkdir()
    named = plain / "named.txt"
    before = snapshot(str(plain), [str(named)])
    assert before.repo is None and before.head is None
    named.write_text("now here\n")
    (plain / "other.txt").write_text("not named, not in git: not seen\n")
    assert changed_files(before, snapshot(str(plain), [str(named)])) == [str(named)]


def test_a_folder_made_a_repository_later_is_seen_as_one(tmp_path: Path) -> None:
    folder = tmp_path / "later"
    folder.mkdir()
    assert snapshot(str(folder)).repo is None
    git(folder, "init", "-q")
    assert snapshot(str(folder)).repo == str(folder)
