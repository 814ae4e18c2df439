"""``benchmarks/jobs.py --quick`` on the demo agent: it runs to the end, prints one JSON
document of the expected shape, every job it ran succeeded and nothing was left running."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

SCENARIOS = ("a_sequential_oneshot", "c_parallel_oneshot", "b_pooled_cold", "b_pooled_warm",
             "pooled_warm_sequential", "scale_sequential_oneshot", "scale_pooled_cold",
             "scale_pooled_warm")


def test_jobs_benchmark_quick_on_the_demo_agent() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "jobs.py"), "--quick",
                           "--cli", "none", "--json-only"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert proc.stderr == ""  # --json-only: no progress
    doc = json.loads(proc.stdout)  # the whole of stdout is the document
    assert doc["benchmark"] == "jobs" and doc["quick"] is True
    assert doc["failures"] == [] and doc["errors"] == [] and doc["leftovers"] == []
    assert doc["machine"]["cpus"] >= 1
    assert list(doc["agents"]) == ["demo"]
    demo = doc["agents"]["demo"]
    assert set(demo["scenarios"]) == set(SCENARIOS)
    for name, s in demo["scenarios"].items():
        assert s["succeeded"] == s["jobs"] == len(s["results"]), name
        assert all(r["status"] == "succeeded" for r in s["results"]), name
        assert s["wall_s"] > s["model_time_per_job_s"] > 0, name
        assert {r["instance"] is None for r in s["results"]} == {s["mode"] == "oneshot"}, name
    # Three jobs on three instances, one each; the scale case shares its instances.
    warm = demo["scenarios"]["b_pooled_warm"]["results"]
    assert len({r["instance"] for r in warm}) == 3
    scale = demo["scenarios"]["scale_pooled_warm"]
    assert len({r["instance"] for r in scale["results"]}) == scale["instances"] == 2
    for key in ("a_over_b", "a_over_b_cold", "a_over_c", "c_over_b", "scale"):
        assert demo["ratios"][key] > 0, key
    # Start-up, per job run one at a time: hand-over to the demo agent's first busy trace line.
    for name in ("a_sequential_oneshot", "pooled_warm_sequential", "scale_sequential_oneshot"):
        startup = demo["scenarios"][name]["startup_s"]
        assert len(startup) == demo["scenarios"][name]["jobs"], name
        assert all(x is not None and 0 < x < demo["scenarios"][name]["wall_s"]
                   for x in startup), name
    pooled = demo["scenarios"]["pooled_warm_sequential"]
    for key in ("prompt_to_work_s", "handover_to_prompt_s"):
        assert all(x is not None and x >= 0 for x in pooled[key]), key
    startup = demo["startup"]
    assert isinstance(startup["saving"], float)
    assert startup["oneshot_startup_s"] > 0 and startup["pooled_startup_s"] > 0
    assert isinstance(startup["per_job_overhead"]["saving"], float)
    # One think time, the same model time either way: AIMTERM_DEMO_THINK is half of it.
    assert demo["think_env"] == {"AIMTERM_DEMO_THINK": doc["think_s"] / 2}
    assert set(demo["aims"]) == {"pooled_vs_sequential_oneshot", "startup_saving",
                                 "scale_vs_sequential_oneshot"}
    assert doc["met"]["demo"] == {k: v["met"] for k, v in demo["aims"].items()}
