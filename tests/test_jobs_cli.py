"""``aimterm jobs run``, ``list`` and ``show`` as a user runs them: real processes, a real
git repository, and once against a real daemon whose instances take the jobs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import psutil
import pytest

from aimterm.jobs.result import RESULT_SCHEMA
from tests.test_jobs_run import git_repo


@pytest.fixture
def root() -> Iterator[Path]:
    # Short: the daemon's socket lives in it (a socket path has at most 107 bytes).
    path = Path(tempfile.mkdtemp(prefix="atj-", dir="/tmp"))
    try:
        yield path
    finally:
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.environ().get("AIMTERM_CLUSTER", "").startswith(str(path)):
                    os.kill(proc.pid, signal.SIGKILL)
            except (psutil.Error, OSError):
                pass
        shutil.rmtree(path, ignore_errors=True)


def aimterm(root: Path, *args: str, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_STATE_HOME=str(root / "xdg-state"),
               XDG_CONFIG_HOME=str(root / "xdg-config"))
    env.pop("AIMTERM_ADAPTER_PATH", None)
    return subprocess.run([sys.executable, "-m", "aimterm", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, input=input, cwd=root)


def job_file(root: Path, repo: Path, *, bad: bool = False, env: bool = True,
             think: str = "0.05") -> Path:
    lines = ["jobs:"]
    for name in ("a", "b"):
        content = "def nope(x): pass" if bad and name == "b" else "def load(x): return x"
        lines += [f"  - id: {name}", "    tool: demo", f"    cwd: {repo}",
                  f"    files: [{name}.py]", f'    prompt: "edit {name}.py: {content}"',
                  f"    acceptance: [\"grep -q 'def load' {name}.py\"]"]
        if env:
            lines.append(f'    env: {{AIMTERM_DEMO_THINK: "{think}"}}')
    path = root / ("bad.yaml" if bad else "jobs.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_json_list_and_show(root: Path) -> None:
    repo = git_repo(root / "repo", {"a.py": "def fetch(x): pass\n", "b.py": "def fetch(x): pass\n"})
    out = aimterm(root, "jobs", "run", str(job_file(root, repo, bad=True)), "--json",
                  "--state-dir", str(root / "st"))
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "failed"
    for result in doc["results"]:
        jsonschema.validate(result, RESULT_SCHEMA)
    assert [(r["job_id"], r["status"]) for r in doc["results"]] == [("a", "succeeded"),
                                                                    ("b", "failed")]
    listed = aimterm(root, "jobs", "list", "--state-dir", str(root / "st"))
    assert listed.returncode == 0 and doc["run_id"] in listed.stdout
    assert "1 failed, 1 succeeded" in listed.stdout
    shown = aimterm(root, "jobs", "show", "b", "--state-dir", str(root / "st"))
    assert shown.returncode == 0, shown.stderr
    assert "b (demo): failed" in shown.stdout
    assert "acceptance: grep -q 'def load' b.py -> 1" in shown.stdout
    assert "attempt 1: pooled on demo-" in shown.stdout
    as_json = json.loads(aimterm(root, "jobs", "show", f"{doc['run_id']}/a", "--json",
                                 "--state-dir", str(root / "st")).stdout)
    assert [j["id"] for j in as_json["jobs"]] == ["a"]
    assert [e["kind"] for e in as_json["events"]] == ["task_started", "task_completed"]
    missing = aimterm(root, "jobs", "show", "zzz", "--state-dir", str(root / "st"))
    assert missing.returncode == 1
    assert missing.stderr == ("aimterm: no run or job 'zzz' in the store "
                              "(aimterm jobs list shows the runs)\n")


def test_run_from_stdin_prints_progress_and_a_summary(root: Path) -> None:
    repo = git_repo(root / "repo", {"a.py": "def fetch(x): pass\n", "b.py": "def fetch(x): pass\n"})
    text = job_file(root, repo).read_text()
    out = aimterm(root, "jobs", "run", "-", "--state-dir", str(root / "st"), input=text)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "a: attempt 1 on demo-" in out.stdout and "b: succeeded (1 file changed)" in out.stdout
    assert "2 of 2 succeeded" in out.stdout
    assert "aimterm jobs show " in out.stdout


def test_a_bad_job_file_is_one_line_and_exit_2(root: Path) -> None:
    bad = root / "x.yaml"
    bad.write_text("- id: a\n  tool: demo\n  promt: hi\n")
    out = aimterm(root, "jobs", "run", str(bad), "--state-dir", str(root / "st"))
    assert out.returncode == 2
    assert out.stderr.startswith(f"aimterm: {bad}:3: [0].promt: unknown key 'promt'")
    assert len(out.stderr.splitlines()) == 1
    assert not (root / "st").exists()  # nothing ran, nothing was recorded


def _cluster(root: Path, repo: Path, think: str = "0.05") -> Path:
    config = root / "cluster.yaml"
    config.write_text(f"""\
state_dir: state
instances:
  - adapter: demo
    count: 2
    cwd: {repo}
    env: {{AIMTERM_DEMO_THINK: "{think}"}}
""")
    up = aimterm(root, "cluster", "up", "--detach", "-c", str(config))
    assert up.returncode == 0, up.stderr
    return config


def test_jobs_run_on_a_daemons_instances(root: Path) -> None:
    repo = git_repo(root / "repo", {"a.py": "def fetch(x): pass\n", "b.py": "def fetch(x): pass\n"})
    config = _cluster(root, repo)
    try:
        daemon_pids = {r["id"]: r["pid"] for r in json.loads(aimterm(
            root, "cluster", "status", "--json", "-c", str(config)).stdout)["instances"]}
        out = aimterm(root, "jobs", "run", str(job_file(root, repo, env=False)), "--json",
                      "-c", str(config))
        assert out.returncode == 0, out.stdout + out.stderr
        doc = json.loads(out.stdout)
        # The daemon's instances took the jobs: no instance was started for them here.
        assert {r["instance"] for r in doc["results"]} <= set(daemon_pids)
        status = json.loads(aimterm(root, "cluster", "status", "--json", "-c",
                                    str(config)).stdout)
        assert sum(r["turns"] for r in status["instances"]) == 2
        assert {r["id"]: r["pid"] for r in status["instances"]} == daemon_pids
        # The run is in the daemon's store, beside its own events.
        shown = aimterm(root, "jobs", "show", doc["run_id"], "-c", str(config))
        assert shown.returncode == 0 and "a (demo): succeeded" in shown.stdout
        events = aimterm(root, "events", "--json", "--kind", "task_completed", "-c",
                         str(config))
        assert {json.loads(line)["task_id"] for line in events.stdout.splitlines()} == {"a", "b"}
    finally:
        down = aimterm(root, "cluster", "down", "-c", str(config))
        assert down.returncode == 0, down.stderr


def _wait_run(root: Path, config: Path, run_id: str, timeout: float = 60) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        shown = json.loads(aimterm(root, "jobs", "show", run_id, "--json", "-c",
                                   str(config)).stdout)
        if shown["run"]["finished"] is not None or time.monotonic() > deadline:
            return shown
        time.sleep(0.3)


def test_a_daemon_run_outlives_its_client(root: Path) -> None:
    repo = git_repo(root / "repo", {"a.py": "def fetch(x): pass\n", "b.py": "def fetch(x): pass\n"})
    config = _cluster(root, repo, think="2")
    try:
        # --detach hands the run over and returns at once.
        out = aimterm(root, "jobs", "run", str(job_file(root, repo, env=False)), "--detach",
                      "--json", "-c", str(config))
        assert out.returncode == 0, out.stderr
        run_id = json.loads(out.stdout)["run_id"]
        shown = _wait_run(root, config, run_id)
        assert shown["run"]["status"] == "succeeded", shown
        assert [j["status"] for j in shown["jobs"]] == ["succeeded", "succeeded"]
        # A client killed while it watches: the daemon's run goes on to the end.
        for name in ("a", "b"):
            (repo / f"{name}.py").write_text("def fetch(x): pass\n")
        env = dict(os.environ, XDG_STATE_HOME=str(root / "xdg-state"),
                   XDG_CONFIG_HOME=str(root / "xdg-config"))
        watcher = subprocess.Popen([sys.executable, "-m", "aimterm", "jobs", "run",
                                    str(job_file(root, repo, env=False)), "-c", str(config)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=root)
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        assert first.split(" ", 1)[1].startswith("run "), first
        run_id = first.split()[2].rstrip(":")
        watcher.kill()
        watcher.communicate(timeout=30)
        shown = _wait_run(root, config, run_id)
        assert shown["run"]["status"] == "succeeded", shown
    finally:
        assert aimterm(root, "cluster", "down", "-c", str(config)).returncode == 0


def test_cancel_and_bad_runs_on_the_daemon(root: Path) -> None:
    from aimterm.errors import AdapterNotFound, ProtocolError
    from aimterm.ipc.client import ControlClient

    repo = git_repo(root / "repo", {"a.py": "def fetch(x): pass\n", "b.py": "def fetch(x): pass\n"})
    config = _cluster(root, repo, think="30")
    socket = str(root / "state" / "control.sock")
    try:
        with ControlClient(socket, timeout=30) as client:
            with pytest.raises(AdapterNotFound):
                client.request("jobs_run", {"jobs": [{"id": "x", "tool": "nope", "prompt": "p",
                                                      "cwd": str(repo)}]})
            with pytest.raises(ProtocolError, match="'cwd' must be an absolute path"):
                client.request("jobs_run", {"jobs": [{"id": "x", "tool": "demo",
                                                      "prompt": "p"}]})
            with pytest.raises(ProtocolError, match="unknown key 'promt'"):
                client.request("jobs_run", {"jobs": [{"id": "x", "tool": "demo", "promt": "p",
                                                      "cwd": str(repo)}]})
            with pytest.raises(ProtocolError, match="no run 'zz' is going on"):
                client.request("jobs_cancel", {"run_id": "zz"})
        out = aimterm(root, "jobs", "run", str(job_file(root, repo, env=False)), "--detach",
                      "--json", "-c", str(config))
        run_id = json.loads(out.stdout)["run_id"]
        cancelled = aimterm(root, "jobs", "cancel", run_id, "-c", str(config))
        assert cancelled.returncode == 0, cancelled.stderr
        shown = _wait_run(root, config, run_id)
        assert shown["run"]["status"] == "failed"
        assert {j["status"] for j in shown["jobs"]} == {"cancelled"}
    finally:
        assert aimterm(root, "cluster", "down", "-c", str(config)).returncode == 0


def test_the_daemon_stops_with_a_run_going_on(root: Path) -> None:
    repo = git_repo(root / "repo", {"a.py": "def fetch(x): pass\n", "b.py": "def fetch(x): pass\n"})
    config = _cluster(root, repo, think="30")
    out = aimterm(root, "jobs", "run", str(job_file(root, repo, think="30")), "--detach",
                  "--json", "-c", str(config))  # (with env: instances of the run's own)
    run_id = json.loads(out.stdout)["run_id"]
    down = aimterm(root, "cluster", "down", "-c", str(config), timeout=90)
    assert down.returncode == 0, down.stderr
    shown = json.loads(aimterm(root, "jobs", "show", run_id, "--json", "-c",
                               str(config)).stdout)
    assert {j["status"] for j in shown["jobs"]} == {"cancelled"}
    assert shown["run"]["finished"] is not None


def test_the_python_orchestrator_uses_a_daemons_instances(root: Path) -> None:
    """Orchestrator() (fleet="auto") finds the daemon of its state dir and runs pooled jobs on
    its instances through the socket; none of its own are started."""
    from aimterm import Orchestrator

    repo = git_repo(root / "repo", {"a.py": "def fetch(x): pass\n", "b.py": "def fetch(x): pass\n"})
    config = _cluster(root, repo)
    try:
        jobs = [{"id": n, "tool": "demo", "cwd": str(repo), "files": [f"{n}.py"],
                 "prompt": f"edit {n}.py: def load(x): return x",
                 "acceptance": [f"grep -q 'def load' {n}.py"]} for n in ("a", "b")]
        with Orchestrator(state_dir=root / "state") as orch:
            results = orch.execute_jobs(jobs)
            assert [r.success for r in results] == [True, True], [r.error for r in results]
            assert {r.instance for r in results} <= {"demo-1", "demo-2"}
            assert orch.pools() == {}
        status = json.loads(aimterm(root, "cluster", "status", "--json", "-c",
                                    str(config)).stdout)
        assert sum(r["turns"] for r in status["instances"]) == 2
    finally:
        assert aimterm(root, "cluster", "down", "-c", str(config)).returncode == 0
