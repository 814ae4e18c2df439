"""``aimterm run PLAN``, ``aimterm runs list|show`` as a user runs them: real processes, real
git repositories, a run killed with SIGKILL and resumed to the same tree as a run left alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.test_plans_run import git, make_repo

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plans" / "rename.yaml"


def aimterm(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_STATE_HOME=str(cwd / "xdg-state"),
               XDG_CONFIG_HOME=str(cwd / "xdg-config"))
    return subprocess.run([sys.executable, "-m", "aimterm", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


def chain_plan(path: Path, think: str = "0.05") -> Path:
    """Four steps, two side by side then a chain of two, each writing its own file."""
    steps = []
    for sid, deps in (("a", []), ("b", []), ("c", ["a", "b"]), ("d", ["c"])):
        steps.append({"id": sid, "tool": "demo", "prompt": f"edit {sid}.txt: {sid} done",
                      "depends_on": deps, "env": {"AIMTERM_DEMO_THINK": think},
                      "files_scope": {"writes": [f"{sid}.txt"]},
                      "acceptance_tests": [f"grep -q '{sid} done' {sid}.txt"]})
    path.write_text(json.dumps({"plan_id": "chain", "globals": {"max_concurrency": 2},
                                "steps": steps}, indent=1))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README": "start\n"})


def test_dry_run_prints_the_shape_and_runs_nothing(repo: Path) -> None:
    proc = aimterm(repo, "run", str(EXAMPLE), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "levels" in proc.stdout and "critical path (2 steps): greet -> both" in proc.stdout
    assert "1. greet, farewell" in proc.stdout
    proc = aimterm(repo, "run", str(EXAMPLE), "--dry-run", "--json")
    doc = json.loads(proc.stdout)
    assert doc["plan_id"] == "rename-greetings" and doc["levels"] == [["greet", "farewell"],
                                                                      ["both"]]
    assert git(repo, "branch", "--list", "aimterm/*") == ""  # nothing ran


def test_a_bad_plan_is_one_line_and_exit_2(repo: Path) -> None:
    bad = repo.parent / "bad.yaml"
    bad.write_text("plan_id: p\nsteps:\n  - id: a\n    tool: demo\n    prompt: x\n"
                   "    depends_on: [zz]\n")
    proc = aimterm(repo, "run", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"aimterm: {bad}:6:")
    assert "no step 'zz'" in proc.stderr
    unknown = repo.parent / "tool.yaml"
    unknown.write_text("plan_id: p\nsteps:\n  - id: a\n    tool: nosuchtool\n    prompt: x\n")
    proc = aimterm(repo, "run", str(unknown))
    assert proc.returncode == 2 and f"{unknown}:4: steps[0].tool: " in proc.stderr


def test_run_then_list_and_show(repo: Path) -> None:
    proc = aimterm(repo, "run", str(EXAMPLE))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the merged work: branch aimterm/rename-greetings/integration" in proc.stdout
    assert "both: merged" in proc.stdout  # the log lines of a non-terminal run
    run_id = proc.stdout.split()[2].rstrip(":")
    listed = aimterm(repo, "runs", "list", "--json")
    [row] = json.loads(listed.stdout)
    assert row["id"] == run_id and row["status"] == "succeeded"
    assert row["by_state"] == {"succeeded": 3}
    shown = aimterm(repo, "runs", "show", run_id)
    assert shown.returncode == 0 and "greet" in shown.stdout and "succeeded" in shown.stdout
    doc = json.loads(aimterm(repo, "runs", "show", run_id, "--json").stdout)
    assert [s["state"] for s in doc["steps"]] == ["succeeded"] * 3
    assert any(e["kind"] == "step_merged" for e in doc["events"])
    missing = aimterm(repo, "runs", "show", "nope")
    assert missing.returncode == 1 and "no plan run 'nope'" in missing.stderr
    # The merged work passes the example's own tests on the integration branch.
    check = repo.parent / "check"
    git(repo, "worktree", "add", "-q", str(check), "aimterm/rename-greetings/integration")
    subprocess.run(["python3", "check_both.py"], cwd=check, check=True, timeout=30)


def test_run_json_is_the_result(repo: Path) -> None:
    plan = chain_plan(repo.parent / "chain.json")
    proc = aimterm(repo, "run", str(plan), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "succeeded" and [s["state"] for s in doc["steps"]] == [
        "succeeded"] * 4
    assert all(s["timings"]["merge_s"] > 0 for s in doc["steps"])


def _merged_steps(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM plan_steps WHERE state = 'succeeded'"
                                ).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_run_killed_mid_way_resumes_to_the_same_tree(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(repo, other)  # the same start commit: the same trees if all goes alike
    plan = chain_plan(tmp_path / "chain.json", think="0.6")
    env = dict(os.environ, XDG_STATE_HOME=str(repo / "xdg-state"),
               XDG_CONFIG_HOME=str(repo / "xdg-config"))
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "aimterm", "run", str(plan),
                             "--state-dir", str(state)], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while _merged_steps(state / "aimterm.db") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _merged_steps(state / "aimterm.db") >= 1, proc.stderr.read() if proc.stderr else ""
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and every agent it started
        proc.communicate(timeout=30)
    run_id = json.loads(aimterm(repo, "runs", "list", "--json", "--state-dir",
                                str(state)).stdout)[0]["id"]
    assert aimterm(repo, "runs", "list", "--state-dir", str(state)).stdout.count(
        "cut short") == 1
    resumed = aimterm(repo, "run", str(plan), "--resume", run_id, "--state-dir", str(state),
                      "--json")
    assert resumed.returncode == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["run_id"] == run_id and doc["status"] == "succeeded"
    # Merged steps were not redone: each step merged exactly once into the branch.
    log = git(repo, "log", "--first-parent", "--format=%s", doc["integration"]).splitlines()
    assert sorted(line for line in log if line.startswith("Merge")) == [
        f"Merge aimterm/chain/{s}" for s in "abcd"]
    alone = aimterm(other, "run", str(plan), "--state-dir", str(tmp_path / "state2"), "--json")
    assert alone.returncode == 0, alone.stderr
    tree = git(repo, "rev-parse", f"{doc['integration']}^{{tree}}")
    assert tree == git(other, "rev-parse", f"{json.loads(alone.stdout)['integration']}^{{tree}}")
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout, untouched


def test_with_a_daemon_up_the_daemon_runs_the_plan(tmp_path: Path) -> None:
    from tests.test_jobs_cli import _cluster
    from tests.test_jobs_cli import aimterm as at

    root = Path(tempfile.mkdtemp(prefix="atp-", dir="/tmp"))  # short: the socket lives in it
    try:
        repo = make_repo(root / "repo", {"README": "start\n"})
        config = _cluster(root, repo)
        try:
            plan = chain_plan(root / "chain.json")
            out = at(root, "run", str(plan), "-C", str(repo), "-c", str(config))
            assert out.returncode == 0, out.stdout + out.stderr
            assert "in the daemon, 4 steps" in out.stdout and "d: merged" in out.stdout
            run_id = out.stdout.split()[2].rstrip(":")
            # The daemon's store has it, and its event stream carried the steps' moves.
            shown = json.loads(at(root, "runs", "show", run_id, "--json", "-c",
                                  str(config)).stdout)
            assert [s["state"] for s in shown["steps"]] == ["succeeded"] * 4
            events = at(root, "events", "--json", "--kind", "step_merged", "-c", str(config))
            assert sorted(json.loads(line)["step_id"] for line in events.stdout.splitlines()
                          ) == ["a", "b", "c", "d"]
            for sid in "abcd":
                assert git(repo, "show", f"aimterm/chain/integration:{sid}.txt") == f"{sid} done"
            # A run that cannot start is the reply's error: one line, exit non-zero.
            again = at(root, "run", str(plan), "-C", str(root), "-c", str(config))
            assert again.returncode != 0 and again.stderr.count("\n") == 1
            assert "not inside a git repository" in again.stderr
            # --local runs it here, even with the daemon up.
            local = at(root, "run", str(plan), "-C", str(repo), "--local", "--json", "-c",
                       str(config))
            assert local.returncode == 0 and json.loads(local.stdout)["status"] == "succeeded"
        finally:
            assert at(root, "cluster", "down", "-c", str(config)).returncode == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _status(root: Path, config: Path) -> dict[str, object]:
    from tests.test_jobs_cli import aimterm as at

    out = at(root, "cluster", "status", "--json", "-c", str(config))
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_steps_run_on_the_daemons_instances_in_their_worktrees(tmp_path: Path) -> None:
    """With a daemon up, each step's instance is the daemon's: in its status (in the step's
    worktree, with its own id), its screen readable, and gone once the step is over."""
    from tests.test_jobs_cli import _cluster
    from tests.test_jobs_cli import aimterm as at

    root = Path(tempfile.mkdtemp(prefix="atp-", dir="/tmp"))
    try:
        repo = make_repo(root / "repo", {"README": "start\n"})
        config = _cluster(root, repo)
        try:
            before = {r["id"] for r in _status(root, config)["instances"]}  # type: ignore[attr-defined]
            plan = chain_plan(root / "chain.json", think="1.5")
            env = dict(os.environ, XDG_STATE_HOME=str(root / "xdg-state"),
                       XDG_CONFIG_HOME=str(root / "xdg-config"))
            proc = subprocess.Popen([sys.executable, "-m", "aimterm", "run", str(plan), "-C",
                                     str(repo), "-c", str(config), "--json"], cwd=root,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
            seen: dict[str, dict[str, object]] = {}
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                for row in _status(root, config)["instances"]:  # type: ignore[attr-defined]
                    if row["id"] not in before and row["state"] == "busy":
                        seen.setdefault(row["id"], row)
                        if len(seen) == 1:
                            shown = at(root, "screen", row["id"], "--json", "-c",
                                       str(config))
                            assert shown.returncode == 0, shown.stderr
                            assert json.loads(shown.stdout)["id"] == row["id"]
                time.sleep(0.2)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, out + err
            doc = json.loads(out)
            assert doc["status"] == "succeeded"
            # Each step ran on an instance of the daemon named after it, in its worktree.
            steps = {s["step_id"]: s for s in doc["steps"]}
            assert {s["instance"].rsplit("-", 2)[0] for s in steps.values()} == set("abcd")
            assert {s["mode"] for s in steps.values()} == {"pooled"}
            assert seen and set(seen) <= {s["instance"] for s in steps.values()}
            worktrees = (root / "state" / "worktrees" / doc["run_id"]).resolve()
            for iid, row in seen.items():
                sid = next(k for k, s in steps.items() if s["instance"] == iid)
                assert row["group"] == iid.rsplit("-", 1)[0] and row["adapter"] == "demo"
                assert Path(str(row["cwd"])).resolve() == worktrees / sid
            # Over: the steps' instances are gone, the cluster's own are as they were.
            assert {r["id"] for r in _status(root, config)["instances"]} == before  # type: ignore[attr-defined]
        finally:
            assert at(root, "cluster", "down", "-c", str(config)).returncode == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_daemon_killed_mid_run_resumes_in_the_next_one(tmp_path: Path) -> None:
    """SIGKILL the daemon that runs a plan; the next daemon kills the steps' orphaned tools
    and ``--resume`` goes on: merged steps are not redone, and the tree is the one a run
    left alone makes."""
    from tests.test_jobs_cli import _cluster
    from tests.test_jobs_cli import aimterm as at

    root = Path(tempfile.mkdtemp(prefix="atp-", dir="/tmp"))
    try:
        repo = make_repo(root / "repo", {"README": "start\n"})
        other = root / "other"
        shutil.copytree(repo, other)
        config = _cluster(root, repo)
        daemon_pid = None
        try:
            plan = chain_plan(root / "chain.json", think="0.6")
            env = dict(os.environ, XDG_STATE_HOME=str(root / "xdg-state"),
                       XDG_CONFIG_HOME=str(root / "xdg-config"))
            proc = subprocess.Popen([sys.executable, "-m", "aimterm", "run", str(plan), "-C",
                                     str(repo), "-c", str(config)], cwd=root, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            daemon_pid = int(_status(root, config)["daemon"]["pid"])  # type: ignore[index]
            db = root / "state" / "aimterm.db"
            deadline = time.monotonic() + 60
            while _merged_steps(db) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _merged_steps(db) >= 1
            os.kill(daemon_pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode != 0 and err.count("\n") == 1, out + err  # one line
            run_id = json.loads(at(root, "runs", "list", "--json", "-c",
                                   str(config)).stdout)[0]["id"]
            assert "cut short" in at(root, "runs", "list", "-c", str(config)).stdout
            up = at(root, "cluster", "up", "--detach", "-c", str(config))
            assert up.returncode == 0, up.stderr
            daemon_pid = int(_status(root, config)["daemon"]["pid"])  # type: ignore[index]
            resumed = at(root, "run", str(plan), "-C", str(repo), "--resume", run_id, "--json",
                         "-c", str(config))
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
            doc = json.loads(resumed.stdout)
            assert doc["run_id"] == run_id and doc["status"] == "succeeded"
            log = git(repo, "log", "--first-parent", "--format=%s",
                      doc["integration"]).splitlines()
            assert sorted(line for line in log if line.startswith("Merge")) == [
                f"Merge aimterm/chain/{s}" for s in "abcd"]
        finally:
            down = at(root, "cluster", "down", "-c", str(config))
            assert down.returncode == 0 or daemon_pid is None, down.stderr
        alone = at(other, "run", str(plan), "--local", "--state-dir", str(root / "state2"),
                   "--json")
        assert alone.returncode == 0, alone.stderr
        tree = git(repo, "rev-parse", f"{doc['integration']}^{{tree}}")
        assert tree == git(other, "rev-parse",
                           f"{json.loads(alone.stdout)['integration']}^{{tree}}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
