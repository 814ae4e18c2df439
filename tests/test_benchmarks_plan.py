"""``benchmarks/plan.py --quick``: it runs to the end, prints one JSON document of the expected
shape, every step of every plan succeeded and reached its integration branch, the parallel
plan beat the sequential one, and nothing was left running."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

SCENARIOS = {"single": (1, 1), "sequential": (4, 1), "parallel": (4, 2)}
TIMINGS = ("elapsed_s", "worktree_s", "run_s", "commit_s", "merge_s", "gate_s", "git_work_s",
           "model_s")


def test_plan_benchmark_quick() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plan.py"), "--quick",
                           "--json-only"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert proc.stderr == ""  # --json-only: no progress
    doc = json.loads(proc.stdout)  # the whole of stdout is the document
    assert doc["benchmark"] == "plan" and doc["quick"] is True
    assert doc["think_s"] == 0.3 and doc["steps"] == 4 and doc["concurrency"] == 2
    assert doc["failures"] == [] and doc["errors"] == [] and doc["leftovers"] == []
    assert doc["machine"]["cpus"] >= 1
    assert set(doc["scenarios"]) == set(SCENARIOS)
    for name, (n, conc) in SCENARIOS.items():
        s = doc["scenarios"][name]
        assert s["status"] == "succeeded", name
        assert s["steps_n"] == n == s["succeeded"] == len(s["steps"]), name
        assert s["max_concurrency"] == conc, name
        assert s["kept_worktrees"] == [] and s["worktrees_left"] == 0, name
        assert s["integration"] == "aimterm/bench/integration", name
        assert [r["step_id"] for r in s["steps"]] == [f"s{i}" for i in range(n)], name
        for r in s["steps"]:
            assert r["state"] == "succeeded" and r["attempts"] == 1, (name, r)
            assert r["on_integration"] is True, (name, r)
            for key in TIMINGS:
                assert isinstance(r[key], float) and r[key] >= 0, (name, key, r)
            # Two thinks of 0.3 s each, within the run of the job, within the attempt.
            assert 0.6 <= r["model_s"] <= r["run_s"] <= r["elapsed_s"], (name, r)
            assert r["run_besides_model_s"] >= 0, (name, r)
            assert r["worktree_s"] > 0 and r["merge_s"] > 0 and r["commit_s"] > 0, (name, r)
            assert abs(r["git_work_s"] - (r["worktree_s"] + r["commit_s"] + r["merge_s"]
                                          + r["gate_s"])) < 0.005, (name, r)
            assert 0 <= r["model_start_s"] < r["model_end_s"] <= s["wall_s"], (name, r)
        assert s["wall_s"] >= s["duration_s"] > 0, name
        assert set(s["mean_per_step"]) == {"elapsed_s", "worktree_s", "run_s", "commit_s",
                                           "merge_s", "gate_s", "git_work_s"}, name
    # One step after the other: the model times of the sequential plan do not overlap.
    seq = doc["scenarios"]["sequential"]["steps"]
    for a, b in zip(seq, seq[1:], strict=False):
        assert b["model_start_s"] >= a["model_end_s"]
    # Side by side: two steps' model times overlap in the parallel plan.
    par = doc["scenarios"]["parallel"]["steps"]
    assert par[1]["model_start_s"] < par[0]["model_end_s"]
    fig = doc["figures"]
    assert fig["parallel_vs_sequential"] > 1
    assert fig["parallel_vs_sequential"] == round(
        doc["scenarios"]["sequential"]["wall_s"] / doc["scenarios"]["parallel"]["wall_s"], 3)
    assert fig["model_time_nominal_s"] == 0.6
    assert 0.6 <= fig["model_time_per_step_s"] < 1.0
    overhead = (doc["scenarios"]["sequential"]["wall_s"] - 4 * fig["model_time_per_step_s"]) / 4
    assert fig["overhead_per_step_s"] == round(overhead, 3) and fig["overhead_per_step_s"] > 0
    assert set(fig["git_work_per_step_s"]) == set(SCENARIOS)
    assert all(v > 0 for v in fig["git_work_per_step_s"].values())
    assert set(doc["aims"]) == {"parallel_vs_sequential", "overhead_per_step_s"}
    assert doc["aims"]["parallel_vs_sequential"]["target"] == ">= 3.6"
    assert doc["aims"]["overhead_per_step_s"]["target"] == "<= 0.3"
    assert doc["aims_met"] == {k: v["met"] for k, v in doc["aims"].items()}
    assert doc["aims_met"]["parallel_vs_sequential"] == (fig["parallel_vs_sequential"] >= 3.6)
