"""The orchestrator on real processes: demo agents that really edit files in temporary git
repositories, bash and python one-shot, acceptance commands that pass and fail, a retry after
an instance is killed, a timeout, a question nobody answers, cancel, and the records the
store keeps of it all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from aimterm import Orchestrator
from aimterm.errors import AdapterNotFound
from aimterm.events import Event
from aimterm.jobs import JobAdapter, JobResult, JobStatus, jobs_from_data
from aimterm.store import Store

FAST = {"AIMTERM_DEMO_THINK": "0.05"}


def git_repo(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, text in files.items():
        (root / name).write_text(text)
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "start"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, timeout=30)
    return root


def rename_job(name: str, repo: Path, **extra: Any) -> dict[str, Any]:
    """A demo-agent job that renames fetch to load in one file, checked by grep."""
    job = {"id": name, "tool": "demo", "cwd": str(repo), "files": [f"{name}.py"],
           "prompt": f"edit {name}.py: def load(x): return x",
           "acceptance": [f"grep -q 'def load' {name}.py"], "env": dict(FAST)}
    job.update(extra)
    return job


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return git_repo(tmp_path / "repo", {f"{n}.py": "def fetch(x): return x\n"
                                        for n in ("a", "b", "c", "d")})


@pytest.fixture
def orch(tmp_path: Path) -> Any:
    o = Orchestrator(state_dir=tmp_path / "state", fleet=None)
    events: list[Event] = []
    o.bus.subscribe(events.append)
    o.events = events  # type: ignore[attr-defined]
    try:
        yield o
    finally:
        o.shutdown()


def kinds(events: list[Event], task: str) -> list[str]:
    return [e.kind for e in events if getattr(e, "task_id", None) == task]


def test_three_pooled_jobs_edit_their_files_in_parallel(orch: Orchestrator, repo: Path,
                                                        tmp_path: Path) -> None:
    jobs = [rename_job(n, repo) for n in ("a", "b", "c")]
    results = orch.execute_jobs(jobs)
    assert [r.job_id for r in results] == ["a", "b", "c"]
    for r in results:
        assert r.status is JobStatus.SUCCEEDED and r.exit_code == 0, r.error
        # Each job's own file, from git: not the files the other jobs changed meanwhile.
        assert r.files_changed == (str(repo / f"{r.job_id}.py"),)
        assert [a.passed for a in r.acceptance] == [True]
        assert r.attempts == 1 and r.error_report_path is None
        assert r.duration_s.running > 0 and r.duration_s.checking > 0
        assert "def load" in (repo / f"{r.job_id}.py").read_text()
    # Three instances, one job each: they ran side by side.
    assert len({r.instance for r in results}) == 3
    assert kinds(orch.events, "a") == ["task_started", "task_completed"]  # type: ignore[attr-defined]
    # The store has the run, the jobs with their results, the attempts and the events.
    with Store(tmp_path / "state" / "aimterm.db", readonly=True) as store:
        run = store.runs()[0]
        assert run["id"] == orch.last_run_id and run["status"] == "succeeded"
        assert run["by_status"] == {"succeeded": 3}
        rows = store.run_jobs(run["id"])
        assert [j["result"]["job_id"] for j in rows] == ["a", "b", "c"]
        assert JobResult.from_dict(rows[0]["result"]) == results[0]
        assert [a["status"] for a in store.attempts(run["id"])] == ["succeeded"] * 3
        task_events = store.events(kinds=["task_started", "task_completed"])
        assert {(e["kind"], e["task_id"]) for e in task_events} == {
            (k, t) for k in ("task_started", "task_completed") for t in "abc"}
        assert all(e["tool_id"] == "demo" and e["run_id"] == run["id"] for e in task_events)


def test_pools_are_reused_across_calls(orch: Orchestrator, repo: Path) -> None:
    first = orch.execute_jobs([rename_job(n, repo) for n in ("a", "b")])
    pools = orch.pools()
    pids = {r["id"]: r["pid"] for pool in pools.values() for r in pool.status()}
    second = orch.execute_jobs([rename_job(n, repo, prompt=f"edit {n}.py: def load2(x): pass",
                                           acceptance=[f"grep -q load2 {n}.py"])
                                for n in ("a", "b")])
    assert all(r.success for r in first + second), [r.error for r in first + second]
    assert orch.pools().keys() == pools.keys()
    assert {r["id"]: r["pid"] for pool in orch.pools().values() for r in pool.status()} == pids


def test_failing_acceptance_is_retried_then_fails_with_a_report(orch: Orchestrator,
                                                                 repo: Path) -> None:
    bad = rename_job("a", repo, prompt="edit a.py: def nope(x): pass", retries=1,
                     acceptance=["python3 -m py_compile a.py", "grep -q 'def load' a.py"])
    results = orch.execute_jobs([bad, rename_job("b", repo)])
    r = results[0]
    assert r.status is JobStatus.FAILED and not r.success
    assert r.attempts == 2
    assert r.exit_code == 1  # grep's
    assert [a.exit_code for a in r.acceptance] == [0, 1]
    assert r.error == "acceptance: grep -q 'def load' a.py exited 1"
    assert results[1].success
    assert kinds(orch.events, "a") == ["task_started", "task_failed", "task_started",  # type: ignore[attr-defined]
                                        "task_failed"]
    retrying = [e.retrying for e in orch.events  # type: ignore[attr-defined]
                if e.kind == "task_failed"]
    assert retrying == [True, False]
    assert r.error_report_path is not None
    report = json.loads(Path(r.error_report_path).read_text())
    assert report["status"] == "failed" and len(report["attempts"]) == 2
    assert report["attempts"][0]["screen_tail"], "the failure's screen"
    assert report["attempts"][1]["acceptance"][1]["exit_code"] == 1
    assert any(e["kind"] == "task_failed" for e in report["events"])
    assert oct(Path(r.error_report_path).stat().st_mode & 0o777) == "0o600"


def test_a_job_whose_files_did_not_change_fails(orch: Orchestrator, repo: Path) -> None:
    job = rename_job("a", repo, prompt="say hello", acceptance=["true"])
    results = orch.execute_jobs([job, rename_job("b", repo)])
    assert results[0].status is JobStatus.FAILED
    assert results[0].error == "none of the job's files changed (a.py)"


def test_a_job_whose_instance_is_killed_is_retried_on_another(orch: Orchestrator,
                                                              repo: Path) -> None:
    slow = {"AIMTERM_DEMO_THINK": "2"}
    jobs = [rename_job(n, repo, env=slow) for n in ("a", "b")]
    killed: list[int] = []

    def kill_first(event: Event) -> None:
        if event.kind == "task_started" and getattr(event, "task_id", "") == "a" and not killed:
            pool = next(iter(orch.pools().values()))
            pid = next(r["pid"] for r in pool.status() if r["id"] == event.instance)
            killed.append(pid)
            threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()

    orch.bus.subscribe(kill_first)
    results = orch.execute_jobs(jobs)
    a = results[0]
    assert killed and a.success, a.error
    assert a.attempts == 2
    failed = [e for e in orch.events if e.kind == "task_failed"]  # type: ignore[attr-defined]
    assert len(failed) == 1 and failed[0].retrying
    assert "died" in (failed[0].error or "")
    assert a.instance != failed[0].instance  # retried on the other instance
    assert results[1].success


def test_a_timed_out_job_is_interrupted_restarted_and_retried(orch: Orchestrator,
                                                               tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    # The first attempt leaves a mark and hangs; the second finds the mark and finishes.
    job = {"id": "slow", "tool": "bash", "cwd": str(work), "timeout_s": 1.5, "retries": 1,
           "prompt": "if [ -e mark ]; then echo done > out.txt; else touch mark; sleep 60; fi",
           "acceptance": ["test -e out.txt"]}
    pids: list[int] = []

    def note_pid(event: Event) -> None:
        if event.kind == "task_started":
            pool = next(iter(orch.pools().values()))
            pids.extend(r["pid"] for r in pool.status())

    orch.bus.subscribe(note_pid)
    started = time.monotonic()
    [r] = orch.execute_jobs([job], mode="pooled")
    assert r.success, r.error
    assert r.attempts == 2
    assert time.monotonic() - started < 60
    [failed] = [e for e in orch.events if e.kind == "task_failed"]  # type: ignore[attr-defined]
    assert failed.status == "timed_out" and failed.retrying
    # The second attempt ran in a new process: the hung one was restarted, not reused.
    assert len(pids) == 2 and pids[0] != pids[1]
    assert not psutil.pid_exists(pids[0]) or \
        psutil.Process(pids[0]).status() == psutil.STATUS_ZOMBIE


def test_a_timeout_without_retries_ends_timed_out(orch: Orchestrator, tmp_path: Path) -> None:
    job = {"id": "hang", "tool": "bash", "cwd": str(tmp_path), "timeout_s": 1,
           "prompt": "sleep 60"}
    [r] = orch.execute_jobs([job], mode="oneshot")
    assert r.status is JobStatus.TIMED_OUT and r.exit_code == 124
    assert "did not finish within 1 s" in (r.error or "")


def test_a_question_no_rule_answers_fails_the_job(orch: Orchestrator, repo: Path) -> None:
    # The demo adapter only allows edits inside the working tree.
    job = rename_job("a", repo, prompt="edit ../outside.txt: nope", files=[],
                     acceptance=["true"])
    results = orch.execute_jobs([job, rename_job("b", repo)])
    assert results[0].status is JobStatus.FAILED
    assert "question no rule answers" in (results[0].error or "")
    assert "outside.txt" in (results[0].error or "")
    assert not (repo.parent / "outside.txt").exists()
    assert results[1].success


def test_mixed_tools_pooled_and_oneshot_in_one_batch(orch: Orchestrator, repo: Path,
                                                     tmp_path: Path) -> None:
    jobs = [rename_job("a", repo), rename_job("b", repo),
            {"id": "sh", "tool": "bash", "cwd": str(repo), "prompt": "echo hi > sh.txt",
             "files": ["sh.txt"], "acceptance": ["grep -q hi sh.txt"]},
            {"id": "py", "tool": "python", "cwd": str(repo),
             "prompt": "open('py.txt', 'w').write('42')", "files": ["py.txt"],
             "acceptance": ["grep -q 42 py.txt"]},
            rename_job("c", repo, tool="demo", env={**FAST, "X": "1"})]
    results = orch.execute_jobs(jobs)
    assert [r.job_id for r in results] == ["a", "b", "sh", "py", "c"]
    assert all(r.success for r in results), [(r.job_id, r.error) for r in results]
    modes = {e.task_id: e.mode for e in orch.events  # type: ignore[attr-defined]
             if e.kind == "task_started"}
    # a and b share a lane (pooled); c's env puts it in a lane of its own, alone, like the
    # bash and python jobs: one-shot.
    assert modes == {"a": "pooled", "b": "pooled", "c": "oneshot", "sh": "oneshot",
                     "py": "oneshot"}
    # sh and py run at once in one folder: each names its file, so neither is credited with
    # the other's (a job that names none sees every change made in its folder meanwhile).
    assert results[2].files_changed == (str(repo / "sh.txt"),)
    assert results[3].files_changed == (str(repo / "py.txt"),)


def test_a_lone_job_takes_a_warm_instance_but_starts_none(orch: Orchestrator,
                                                          repo: Path) -> None:
    [alone] = orch.execute_jobs([rename_job("a", repo)])
    assert alone.success and alone.instance is None  # one-shot: no instance for one job
    assert not orch.pools()
    orch.execute_jobs([rename_job(n, repo) for n in ("b", "c")])
    [warm] = orch.execute_jobs([rename_job("d", repo)])
    assert warm.success and warm.instance is not None  # the lane's instances are up: used


def test_the_instances_started_in_all_are_bounded(tmp_path: Path) -> None:
    repos = [git_repo(tmp_path / f"r{i}", {"a.py": "def fetch(x): pass\n",
                                           "b.py": "def fetch(x): pass\n"}) for i in range(3)]
    with Orchestrator(state_dir=tmp_path / "state", fleet=None, max_instances=3) as o:
        results = o.execute_jobs([rename_job(n, r, id=f"{n}{i}") for i, r in enumerate(repos)
                                  for n in ("a", "b")])
        assert all(r.success for r in results), [r.error for r in results]
        started = sum(len(pool.status()) for pool in o.pools().values())
        assert started <= 3
        # The lane that found no room ran one-shot.
        assert any(r.instance is None for r in results)


def test_oneshot_demo_jobs(orch: Orchestrator, repo: Path) -> None:
    results = orch.execute_jobs([rename_job(n, repo) for n in ("a", "b", "c")], mode="oneshot")
    assert all(r.success and r.instance is None for r in results), [r.error for r in results]
    assert not orch.pools()


def test_sticky_key_keeps_jobs_on_one_instance(orch: Orchestrator, repo: Path) -> None:
    jobs = [rename_job(n, repo, key="same") for n in ("a", "b", "c")]
    results = orch.execute_jobs(jobs)
    assert all(r.success for r in results)
    assert len({r.instance for r in results}) == 1


def test_unknown_tool_fails_before_anything_runs(orch: Orchestrator, repo: Path) -> None:
    with pytest.raises(AdapterNotFound):
        orch.execute_jobs([rename_job("a", repo), rename_job("b", repo, tool="nope")])
    assert not orch.pools() and orch.last_run_id is None


def test_cancel_stops_the_batch(orch: Orchestrator, tmp_path: Path) -> None:
    jobs = [{"id": f"j{i}", "tool": "bash", "cwd": str(tmp_path), "prompt": "sleep 30"}
            for i in range(3)]
    threading.Timer(1.0, orch.cancel).start()
    started = time.monotonic()
    results = orch.execute_jobs(jobs, mode="oneshot")
    assert time.monotonic() - started < 20
    assert {r.status for r in results} == {JobStatus.CANCELLED}
    assert all(r.exit_code == 130 for r in results)


def test_job_adapter_seed_api(repo: Path) -> None:
    from aimterm import ClusterManager

    adapter = JobAdapter("demo")
    assert adapter.supports_pool_mode() and adapter.supports_oneshot()
    [job] = jobs_from_data(rename_job("a", repo))
    assert adapter.run_job(job).success
    with ClusterManager("demo", 1, cwd=str(repo), env=FAST) as pool:
        pool.start()
        again = rename_job("a", repo, prompt="edit a.py: def load3(x): pass",
                           acceptance=["grep -q load3 a.py"])
        result = adapter.run_job_pooled(again, pool)
        assert result.success and result.instance == "demo-1", result.error
    with pytest.raises(ValueError, match="is for 'demo', not 'bash'"):
        JobAdapter("bash").run_job(job)


def test_async_twin(orch: Orchestrator, repo: Path) -> None:
    import asyncio

    results = asyncio.run(orch.aexecute_jobs([rename_job(n, repo) for n in ("a", "b")]))
    assert [r.success for r in results] == [True, True]


def test_no_process_is_left_after_shutdown(tmp_path: Path, repo: Path) -> None:
    o = Orchestrator(state_dir=tmp_path / "state", fleet=None)
    o.execute_jobs([rename_job(n, repo) for n in ("a", "b")])
    pids = [r["pid"] for pool in o.pools().values() for r in pool.status()]
    assert len(pids) == 2
    o.shutdown()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_one_batch_at_a_time(orch: Orchestrator, tmp_path: Path) -> None:
    job = {"id": "slow", "tool": "bash", "cwd": str(tmp_path), "prompt": "sleep 3"}
    first = threading.Thread(target=orch.execute_jobs, args=([job],))
    first.start()
    try:
        deadline = time.monotonic() + 10
        while orch.last_run_id is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(RuntimeError, match="running a batch already"):
            orch.execute_jobs([job])
    finally:
        first.join(30)


def test_a_job_that_sets_variables_runs_on_a_fleets_instance_started_with_them(
        repo: Path, tmp_path: Path) -> None:
    """A given fleet's instance fits a job with variables when its group set exactly those
    (env_digest); one with other variables does not, and the job gets an instance of its own."""
    from aimterm.cluster import ClusterManager
    from aimterm.instance import GroupSpec

    spec = GroupSpec("demo", count=1, cwd=repo, env=dict(FAST), name="fast")
    other = GroupSpec("demo", count=1, cwd=repo, env={"AIMTERM_DEMO_THINK": "0.06"},
                      name="slow")
    with ClusterManager([spec, other]).start(timeout=30) as fleet, \
            Orchestrator(state_dir=tmp_path / "state", fleet=fleet, record=False) as o:
        [same] = o.execute_jobs(jobs_from_data([rename_job("a", repo)]))
        assert same.success and same.instance == "fast-1", same.error
        [own] = o.execute_jobs(jobs_from_data([rename_job(
            "b", repo, env={"AIMTERM_DEMO_THINK": "0.07"})]), mode="pooled")
        assert own.success and own.instance not in {"fast-1", "slow-1"}, own.instance
        assert [r["turns"] for r in fleet.status()] == [1, 0]


def test_instances_started_for_jobs_get_the_adapters_pooled_args(
        repo: Path, tmp_path: Path, aimterm_adapters: Any) -> None:
    """``jobs.pooled_args`` reach the command of an instance the orchestrator starts (how
    claude and gemini edit without asking), and not the one-shot command."""
    aimterm_adapters.add("posixbash", "extends: bash\nname: posixbash\n"
                                      "jobs: {pooled_args: [-o, posix]}\n")
    probe = 'case ":$SHELLOPTS:" in *:posix:*) echo posix;; *) echo plain;; esac > {out}'

    def job(name: str) -> dict[str, Any]:
        return {"id": name, "tool": "posixbash", "cwd": str(repo),
                "prompt": probe.format(out=f"{name}.txt"),
                "acceptance": [f"test -s {name}.txt"]}

    with Orchestrator(state_dir=tmp_path / "state", fleet=None, record=False) as o:
        [pooled] = o.execute_jobs([job("p")], mode="pooled")
        [oneshot] = o.execute_jobs([job("o")], mode="oneshot")
    assert pooled.success and oneshot.success, (pooled.error, oneshot.error)
    assert (repo / "p.txt").read_text() == "posix\n"
    assert (repo / "o.txt").read_text() == "plain\n"
