#!/usr/bin/env python3
"""Plan benchmark for aimterm: independent editing steps of one plan run side by side against
the same plan one step at a time, each step in its own git worktree and branch, merged back
through the gated merge train.

Every step makes the demo agent (one-shot, ``-p``) write a file of its own holding a token of
its own, checked by an acceptance command (``grep -qx TOKEN FILE``) in the step's worktree and
again, as the merge's gate, on the integration branch. A benchmark of failing steps measures
nothing: any step that does not succeed, or an integration branch that lacks a step's file or
token (``git show BRANCH:FILE``), is reported under ``failures`` and the exit status is 1.
Scenarios, each in a fresh temporary git repository:

* ``single``: one step alone (the warm-up, and one step's whole cost);
* ``sequential``: the N steps with ``max_concurrency`` 1;
* ``parallel``: the same N steps with ``max_concurrency`` C.

The model time of a step is measured from the demo agent's trace (``AIMTERM_DEMO_TRACE``, one
file per step): from its ``busy`` line (it starts thinking) to its ``idle`` line (it thought,
wrote the file, thought again), that is two think times and the write.

Run from the repository root::

    python benchmarks/plan.py [--quick] [--think S] [--steps N] [--concurrency C]

One JSON document on stdout, progress on stderr. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from turn import machine  # noqa: E402

AIMS = {"parallel_vs_sequential": 3.6, "overhead_per_step_s": 0.3}
#: The timings each step outcome carries (seconds, summed over its attempts).
TIMINGS = ("worktree_s", "run_s", "commit_s", "merge_s", "gate_s")
#: The part of a step that is git's work rather than the tool's.
GIT_WORK = ("worktree_s", "commit_s", "merge_s", "gate_s")
#: Every scenario's plan has this id: its integration branch is aimterm/<id>/integration.
PLAN_ID = "bench"
#: The think time -p mode sleeps before and after an edit: two per step.
THINKS_PER_STEP = 2

_QUIET = False


def log(message: str) -> None:
    if not _QUIET:
        print(f"[plan-bench] {message}", file=sys.stderr, flush=True)


def rnd(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def mean(values: list[float]) -> float | None:
    return float(statistics.mean(values)) if values else None


# -- the repository and the plan -------------------------------------------------------------------


def git_env() -> dict[str, str]:
    return dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@b",
                GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@b")


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, env=git_env(), check=check, timeout=30,
                          capture_output=True, text=True)


def make_repo(path: Path) -> Path:
    """A fresh repository: a few files, one commit, on ``main``."""
    (path / "src").mkdir(parents=True)
    (path / "README.md").write_text("plan benchmark\n")
    (path / "src" / "app.py").write_text("def main():\n    return 0\n")
    (path / "src" / "util.py").write_text("def helper(x):\n    return x\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", ".")
    git(path, "commit", "-qm", "start")
    return path


def step_file(scenario: str, i: int) -> tuple[str, str]:
    return f"step-{i}.txt", f"token-{scenario}-{i}"


def plan_data(scenario: str, n: int, concurrency: int, think: float,
              traces: Path) -> dict[str, Any]:
    steps = []
    for i in range(n):
        name, token = step_file(scenario, i)
        steps.append({
            "id": f"s{i}", "tool": "demo", "prompt": f"edit {name}: {token}",
            "files_scope": {"writes": [name]},
            "acceptance_tests": [f"grep -qx {token} {name}"],
            "timeout_sec": max(60.0, 10 * THINKS_PER_STEP * think),
            # The trace lives outside the repository: it is no part of the step's work.
            "env": {"AIMTERM_DEMO_THINK": f"{think:g}",
                    "AIMTERM_DEMO_TRACE": str(traces / f"{scenario}-s{i}.jsonl")}})
    return {"plan_id": PLAN_ID, "globals": {"max_concurrency": concurrency}, "steps": steps}


def model_span(trace: Path, t0: float) -> dict[str, float] | None:
    """The step's model time from its trace: first ``busy`` to last ``idle`` (and both,
    relative to the scenario's start)."""
    busy, idle = [], []
    try:
        lines = trace.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            rec = json.loads(line)
            (busy if rec["state"] == "busy" else idle).append(float(rec["t"]))
    if not busy or not idle:
        return None
    start, end = min(busy), max(idle)
    return {"model_s": end - start, "model_start_s": start - t0, "model_end_s": end - t0}


# -- one scenario ----------------------------------------------------------------------------------


def scenario(root: Path, name: str, n: int, concurrency: int, think: float,
             failures: list[dict[str, Any]]) -> dict[str, Any]:
    from aimterm.plans import PlanRun, plan_from_data
    from aimterm.plans.runner import RADAR_INTERVAL_S

    base = root / name
    repo = make_repo(base / "repo")
    traces = base / "traces"
    traces.mkdir()
    plan = plan_from_data(plan_data(name, n, concurrency, think, traces))
    log(f"{name}: {n} steps, {concurrency} at once, think {think:g} s")
    t0 = time.monotonic()
    result = PlanRun(plan, repo=repo, state_dir=base / "state", max_concurrency=concurrency,
                     radar_interval_s=RADAR_INTERVAL_S).run()
    wall = time.monotonic() - t0
    steps = []
    for i, outcome in enumerate(result.steps):
        file, token = step_file(name, i)
        row: dict[str, Any] = {"step_id": outcome.step_id, "state": outcome.state,
                               "attempts": outcome.attempts, "elapsed_s": rnd(outcome.elapsed_s)}
        row.update({k: rnd(float(outcome.timings.get(k, 0.0))) for k in TIMINGS})
        row["git_work_s"] = rnd(sum(float(outcome.timings.get(k, 0.0)) for k in GIT_WORK))
        span = model_span(traces / f"{name}-{outcome.step_id}.jsonl", t0)
        if span is not None:
            row.update({k: rnd(v) for k, v in span.items()})
            # The job's run besides the model: the tool's start and exit, the check in the
            # worktree, the jobs layer.
            row["run_besides_model_s"] = rnd(float(outcome.timings.get("run_s", 0.0))
                                             - span["model_s"])
        if outcome.state != "succeeded":
            failures.append({"scenario": name, "step_id": outcome.step_id,
                             "state": outcome.state, "attempts": outcome.attempts,
                             "error": outcome.error})
        shown = git(repo, "show", f"{result.integration}:{file}", check=False)
        row["on_integration"] = shown.returncode == 0 and shown.stdout.strip() == token
        if not row["on_integration"]:
            failures.append({"scenario": name, "step_id": outcome.step_id,
                             "check": f"git show {result.integration}:{file}",
                             "expected": token, "got": shown.stdout.strip()[:200],
                             "stderr": shown.stderr.strip()[-500:]})
        steps.append(row)
    ok = sum(s["state"] == "succeeded" for s in steps)
    worktrees = git(repo, "worktree", "list", "--porcelain").stdout.count("worktree ")
    log(f"  {wall:.2f} s, {ok}/{n} succeeded, status {result.status}")
    models = [s["model_s"] for s in steps if s.get("model_s") is not None]
    out: dict[str, Any] = {
        "steps_n": n, "max_concurrency": concurrency, "wall_s": rnd(wall),
        "duration_s": rnd(result.duration_s), "status": result.status, "succeeded": ok,
        "integration": result.integration, "kept_worktrees": result.kept_worktrees,
        "worktrees_left": worktrees - 1,  # besides the repository's own checkout
        "model_time_per_step_s": rnd(mean(models)),
        "mean_per_step": {k: rnd(mean([float(s[k]) for s in steps]))
                          for k in ("elapsed_s", *TIMINGS, "git_work_s")},
        "steps": steps,
    }
    return out


# -- the whole ---------------------------------------------------------------------------------


def leftovers() -> list[str]:
    """Child processes still alive (killed here, by pid, after they are listed)."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
                p.kill()
    return found


def _aim(value: float | None, target: float, *, most: bool = False) -> dict[str, Any]:
    met = value is not None and (value <= target if most else value >= target)
    return {"value": value, "target": f"{'<=' if most else '>='} {target}", "met": met}


def main(argv: list[str] | None = None) -> int:
    global _QUIET
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--think", type=float, default=None,
                   help="the demo agent's think time (AIMTERM_DEMO_THINK), in seconds; a step "
                        "thinks twice (default 2, --quick 0.3)")
    p.add_argument("--steps", type=int, default=None, help="steps of the plan (default 8, "
                                                           "--quick 4)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="steps at once in the parallel run (default 4, --quick 2)")
    p.add_argument("--quick", action="store_true", help="fewer, shorter steps: a smoke test")
    p.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)
    _QUIET = args.json_only
    think = args.think if args.think is not None else (0.3 if args.quick else 2.0)
    n = args.steps or (4 if args.quick else 8)
    concurrency = args.concurrency or (2 if args.quick else 4)
    if think <= 0 or n < 1 or concurrency < 1:
        p.error("--think, --steps and --concurrency must be positive")

    started = time.perf_counter()
    failures: list[dict[str, Any]] = []
    errors: list[str] = []
    sc: dict[str, Any] = {}
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="aimterm-bench-plan-") as tmp:
        root = Path(tmp)
        for name, steps, conc in (("single", 1, 1), ("sequential", n, 1),
                                  ("parallel", n, concurrency)):
            try:
                sc[name] = scenario(root, name, steps, conc, think, failures)
            except Exception as exc:  # noqa: BLE001 - report it and go on with the others
                log(f"{name}: failed: {exc!r}")
                sc[name] = {"error": repr(exc)}
                errors.append(name)
    left = leftovers()

    seq, par = sc.get("sequential", {}), sc.get("parallel", {})
    model = seq.get("model_time_per_step_s")
    ratio = (round(seq["wall_s"] / par["wall_s"], 3)
             if seq.get("wall_s") and par.get("wall_s") else None)
    overhead = (rnd((seq["wall_s"] - n * model) / n)
                if seq.get("wall_s") is not None and model is not None else None)
    figures: dict[str, Any] = {
        "parallel_vs_sequential": ratio,
        "overhead_per_step_s": overhead,
        "overhead_how": "(wall of the sequential plan - steps x the measured model time of "
                        "one step) / steps; the model time is the mean, over the sequential "
                        "plan's steps, of the demo agent's trace from busy to idle",
        "model_time_per_step_s": model,
        "model_time_nominal_s": rnd(THINKS_PER_STEP * think),
        "git_work_per_step_s": {k: v.get("mean_per_step", {}).get("git_work_s")
                                for k, v in sc.items() if "mean_per_step" in v},
        "git_work_how": "per-step mean of worktree_s + commit_s + merge_s + gate_s",
        "ideal_ratio": float(min(concurrency, n)),
    }
    aims = {"parallel_vs_sequential": _aim(ratio, AIMS["parallel_vs_sequential"]),
            "overhead_per_step_s": _aim(overhead, AIMS["overhead_per_step_s"], most=True)}
    doc = {
        "benchmark": "plan",
        "quick": args.quick,
        "think_s": think,
        "steps": n,
        "concurrency": concurrency,
        "tool": "demo",
        "machine": machine(),
        "load_avg_at_start": load,
        "scenarios": sc,
        "figures": figures,
        "aims": aims,
        "aims_met": {k: v["met"] for k, v in aims.items()},
        "failures": failures,
        "errors": errors,
        "leftovers": left,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(doc, indent=2))
    log(f"done in {doc['elapsed_s']} s; ratio {ratio}, overhead per step {overhead} s; met: "
        f"{doc['aims_met']}; {len(failures)} failures, {len(left)} leftover processes")
    return 1 if failures or errors or left else 0


if __name__ == "__main__":
    sys.exit(main())
