"""``benchmarks/storm.py`` on a small storm: it runs to the end, prints one JSON document of the
expected shape with sane figures, every instance got busy and came back idle, the profile
option gives its tables, and nothing was left running."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import psutil

from tests.conftest import FAKES, REPO

SIZE = 3


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _storm_agents_since(t0: float) -> list[int]:
    agent = str(FAKES / "storm_agent.py")
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time", "status"]):
        info = proc.info
        if (agent in (info.get("cmdline") or []) and (info.get("create_time") or 0) >= t0 - 1
                and info.get("status") != psutil.STATUS_ZOMBIE):
            found.append(proc.pid)
    return found


def test_storm_benchmark_small() -> None:
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "storm.py"),
                           "--sizes", str(SIZE), "--window", "2", "--busy", "0.8",
                           "--profile", "2", "--hosts", "0,2", "--json-only"],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert proc.stderr == ""  # --json-only: no progress
    doc = json.loads(proc.stdout)  # the whole of stdout is the document
    assert doc["benchmark"] == "storm" and doc["quick"] is False and doc["ok"] is True
    assert doc["config"]["fps"] == 10 and doc["config"]["window_s"] == 2
    assert doc["aims"]["at_instances"] == 100 and doc["aims"]["measured"] is False
    assert doc["met"] == {"lag_p95_under_100ms": False, "frames_behind_max_1": False}
    assert list(doc["sizes"]) == [str(SIZE), f"{SIZE}/hosts=2"]
    assert doc["config"]["hosts"] == [0, 2] and doc["met_by"] == []
    hosted = doc["sizes"][f"{SIZE}/hosts=2"]
    assert hosted["ok"] is True and hosted["hosts"] == 2 and hosted["leftovers"] == []
    assert hosted["turns"]["failed"] == 0 and hosted["turns"]["done"] >= SIZE
    # The terminals are read in the hosts: they take the CPU, the controller's loop idles.
    assert hosted["cpu"]["hosts_pct_of_core"] > hosted["cpu"]["loop_thread_pct_of_core"]
    assert hosted["bytes"]["read_per_s"] > 0 and hosted["frames_behind"]["n"] >= SIZE

    cell = doc["sizes"][str(SIZE)]
    assert cell["ok"] is True and cell["all_busy"] is True and cell["leftovers"] == []
    assert 1.9 <= cell["window_s"] <= 4
    turns = cell["turns"]
    assert turns["instances_busy"] == SIZE == turns["instances_idle_at_end"]
    assert turns["failed"] == 0 and turns["error_count"] == 0 and turns["errors"] == []
    assert turns["per_instance_min"] >= 1 and turns["done"] >= SIZE
    assert turns["end_states"] == {"idle": SIZE}

    b = cell["bytes"]
    assert b["read_per_s"] > 0 and b["written_per_s"] > 0
    # Three agents at 10 frames/s of about 4 KB: taken in about as fast as written.
    assert 0.5 * b["written_per_s"] <= b["read_per_s"] <= 1.5 * b["written_per_s"]
    assert 5 <= b["frames_per_s_per_instance"] <= 13
    assert 1000 <= b["frame_bytes_mean"] <= 4200

    cpu = cell["cpu"]
    for key in ("controller_pct_of_core", "loop_thread_pct_of_core", "sampler_pct_of_core",
                "controller_excl_sampler_pct_of_core", "agents_pct_of_core",
                "controller_us_per_kb_read", "loop_capacity_mb_per_s"):
        assert _number(cpu[key]) and cpu[key] >= 0, (key, cpu)
    assert cpu["controller_pct_of_core"] > 0

    lag = cell["lag_ms"]
    assert lag["unmatched_turns"] == 0 and lag["settle_ms_excluded"] == 150
    assert lag["all"]["n"] == turns["done"] >= lag["in_window"]["n"] >= 1
    for part in ("all", "in_window"):
        for key in ("p50_ms", "p95_ms", "max_ms"):
            assert _number(lag[part][key]), (part, key, lag)
        assert -5 <= lag[part]["p50_ms"] <= lag[part]["p95_ms"] <= lag[part]["max_ms"] < 10_000

    behind = cell["frames_behind"]
    assert behind["n"] >= SIZE and behind["unparsed"] == 0 and behind["rounds"] >= 2
    for key in ("p50", "p95", "max"):
        assert _number(behind[key]) and behind[key] >= 0, (key, behind)
    assert behind["busy_instances"]["max"] <= SIZE
    stale = cell["screen_stale_ms"]
    assert stale["n"] == behind["n"]
    assert 0 <= stale["p50_ms"] <= stale["p95_ms"] <= stale["max_ms"] < 10_000
    assert set(cell["meets_aims"]) == {"lag_p95_under_100ms", "frames_behind_max_1"}
    assert _number(cell["submit_to_busy_ms"]["p50_ms"])

    prof = doc["profile"]
    assert prof["instances"] == 2 and prof["leftovers"] == []
    assert prof["top_by_own"] and prof["top_by_cum"]
    assert prof["loop_own_s_profiled"] > 0
    assert "pyte" in prof["own_pct_by_area"]  # the screens are parsed on the loop thread

    assert _storm_agents_since(t0) == []
