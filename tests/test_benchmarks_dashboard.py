"""``benchmarks/dashboard.py --quick``: it runs to the end, prints one JSON document of the
expected shape with real figures (turns counted, keys timed, nothing failed), and leaves no
process of its own behind."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import psutil

from tests.conftest import REPO


def positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_dashboard_benchmark_quick() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dashboard.py"), "--quick",
                           "--json-only"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert proc.stderr == ""  # --json-only: no progress
    doc = json.loads(proc.stdout)  # the whole of stdout is the document
    assert doc["benchmark"] == "dashboard" and doc["quick"] is True
    assert "error" not in doc and "interrupted" not in doc
    assert doc["machine"]["cpus"] >= 1 and len(doc["load_avg_at_start"]) == 3
    assert doc["config"]["instances"] == 20 and doc["config"]["pairs"] == 1
    assert set(doc["how"]) == {"load", "dashboard", "throughput", "repaint"}

    tp = doc["throughput"]
    assert [b["side"] for b in tp["blocks"]] == ["without", "with"]
    for side in ("without", "with"):
        s = tp[side]
        assert s["turns"] > 0 and positive(s["turns_per_s"]), side
        assert s["mismatches"] == 0 and s["errors"] == 0, side
        assert positive(s["daemon_cpu_pct"]) and positive(s["daemon_cpu_ms_per_turn"]), side
        assert 0 < s["machine_busy_pct"] <= 100, side
    with_block = tp["blocks"][1]
    assert with_block["dashboard_alive"] is True
    assert positive(with_block["dashboard_output_kb_per_s"])  # it drew something
    assert positive(with_block["dashboard_cpu_pct"]) and positive(with_block["dashboard_start_s"])
    assert positive(tp["ratio"]) and len(tp["pair_ratios"]) == 1
    stream = doc["stream"]
    assert stream["turns"] > 0 and stream["events_per_turn"] > 1
    assert abs(tp["ratio"] - tp["with"]["turns_per_s"] / tp["without"]["turns_per_s"]) < 0.01

    for name, stream in (("repaint", "busy"), ("repaint_quiet", "quiet")):
        r = doc[name]
        assert r["stream"] == stream and r["dashboard_alive"] is True, name
        assert r["failures"] == [] and r["stopped_early"] is None, (name, r["failures"])
        assert r["timed"] + r["unchanged_at_list_end"] == r["presses"] == 7, name
        assert r["timed"] >= 5, name
        assert positive(r["p50_ms"]) and r["p50_ms"] <= r["p95_ms"] <= r["max_ms"], name
        # Each kind of key was timed (the help and the plan view, opened and closed).
        assert {"p open", "p close", "? open", "? close"} <= set(r["by_key"]), name
        assert all(v["n"] > 0 and positive(v["p50_ms"]) for v in r["by_key"].values()), name

    assert set(doc["aims"]) == {"repaint_p95_ms", "throughput_ratio"}
    assert doc["met"] == {"repaint_p95": doc["repaint"]["p95_ms"] <= 50.0,
                          "throughput_ratio": tp["ratio"] >= 0.95}
    assert doc["leftover_processes_killed"] == 0 and doc["dashboard_start_failures"] == []
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []
    # The daemon is detached (no child of ours): look for anything of its cluster.
    assert [p.pid for p in psutil.process_iter() if of_cluster(p, doc["state_dir"])] == []


def of_cluster(p: psutil.Process, state_dir: str) -> bool:
    try:
        return (p.status() != psutil.STATUS_ZOMBIE
                and (any(state_dir in a for a in p.cmdline())
                     or p.environ().get("AIMTERM_CLUSTER") == state_dir))
    except (psutil.Error, OSError):
        return False
